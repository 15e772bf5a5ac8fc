#pragma once
// The MLA rotary embedding of a config (spec 2.4): per-pair inverse frequencies, YaRN-corrected
// when rope_scaling is present, and the cos/sin multiplier ("attention factor"). Built into a
// kernels RopeTable once at load.
#include <vector>

#include "engine/model/config.h"

namespace r2::model {

// f'_i for i in [0, qk_rope_head_dim / 2): theta^(-2i/dim), blended with f_i / factor by the YaRN
// ramp between the beta_fast and beta_slow correction dimensions.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

// get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim) when both are set, else
// get_mscale(factor) (transformers' rule); 1 without rope_scaling. Exactly 1 for V3 and tiny.
double RopeAttentionFactor(const ModelConfig& config);

}  // namespace r2::model

#pragma once
// The DeepSeek weights bound by name from a Checkpoint: views into the mapped files (no copies),
// plus what is precomputed at load: the absorbed-attention matrices W_UK^T / W_UV per head from
// kv_b_proj (dequantized to float32) and e_score_correction_bias as float32.
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "kernels/tensor.h"

namespace r2::model {

struct MlpWeights {  // SwiGLU: down(silu(gate x) * up x)
  WeightView gate, up, down;
  int64_t width() const { return gate.out_features(); }
};

struct MlaWeights {
  WeightView q_a, q_b;  // q-LoRA path (q_lora_rank > 0)
  TensorView q_a_norm;
  WeightView q;     // no-q-LoRA path
  WeightView kv_a;  // [kv_lora_rank + rope_dim, hidden]
  TensorView kv_a_norm;
  WeightView kv_b;  // [heads * (nope + v), kv_lora_rank]
  WeightView o;     // [hidden, heads * v]
  // Absorption, float32, owned: per head h, w_uk_t[h] = W_UK[h]^T [kv_lora_rank, nope] and
  // w_uv[h] = W_UV[h] [v, kv_lora_rank], as F32 WeightViews into the vectors below.
  std::vector<float> w_uk_t_data, w_uv_data;
  std::vector<WeightView> w_uk_t, w_uv;
};

struct MoeWeights {
  WeightView router;              // [n_routed_experts, hidden]
  std::vector<float> score_bias;  // e_score_correction_bias as float32 (empty: none)
  std::vector<MlpWeights> experts;
  bool has_shared = false;
  MlpWeights shared;
};

struct LayerWeights {
  TensorView input_norm, post_attention_norm;
  MlaWeights attn;
  bool moe = false;
  MlpWeights dense;    // when !moe
  MoeWeights experts;  // when moe
};

struct MtpWeights {
  TensorView enorm, hnorm, head_norm;
  WeightView eh_proj;  // [hidden, 2 * hidden], input [embedding; hidden]
  TensorView embed;    // the layer's own copy, else the main embedding
  WeightView head;     // the layer's own copy, else the main lm_head
  LayerWeights block;
};

struct ModelWeights {
  TensorView embed;  // [vocab, hidden]
  TensorView final_norm;
  WeightView lm_head;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;
};

// Binds every tensor the config implies; errors name the missing or malformed tensor. The views
// point into `checkpoint`, which must outlive the result.
absl::StatusOr<std::unique_ptr<ModelWeights>> BindModelWeights(const Checkpoint& checkpoint);

// A linear weight as float32 [out, in] (FP8 dequantized with its block scales).
absl::StatusOr<std::vector<float>> DequantizeToFloat(const WeightView& w);

}  // namespace r2::model

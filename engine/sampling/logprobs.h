#pragma once
// Log-probabilities returned to the client (OpenAI "logprobs"/"top_logprobs", vLLM "logprobs").
//
// Which distribution: the raw model output. Values are log_softmax of the logits exactly as the
// model produced them, before logit_bias, min_tokens, penalties, temperature and truncation.
// This is vLLM's default (logprobs mode "raw_logprobs"); OpenAI's reported values come from the
// processed distribution instead. So a token banned by logit_bias still has its model logprob,
// and the sampled token's rank can be > 1 even under greedy decoding when penalties moved it.
//
// Order: tokens are ranked by raw logit descending, ties going to the lower token id; rank is the
// 1-based position of the sampled token in that order, and the top list is its first entries.
#include <array>
#include <cstdint>

#include "absl/types/span.h"
#include "engine/sampling/sampling_params.h"
#include "kernels/cpu/host_sampling.h"

namespace r2::sampling {

// {token, logprob}: the kernels' type, so the shared code fills the top list in place.
using TokenLogprob = SampleTopLogprob;
static_assert(kMaxTopLogprobs == kMaxSampleTopLogprobs);

struct Logprobs {
  float logprob = 0.0f;  // of the sampled token
  int32_t rank = 0;      // of the sampled token, 1-based
  int32_t num_top = 0;   // entries of top in use (the request's top_logprobs)
  std::array<TokenLogprob, kMaxTopLogprobs> top{};

  absl::Span<const TokenLogprob> top_logprobs() const { return {top.data(), size_t(num_top)}; }
};

// Fills `out` for `token` from the raw logits of its row, with the top `num_top` (0..20)
// alternatives: log_softmax(l)[i] = (l[i] - max) - log(sum_j ExpNonPositive(l[j] - max)), the
// sum in double as BlockSums of 8. Runs cpu::ComputeRawLogprobs (kernels/cpu/host_sampling.h),
// the code the SampleRows reference runs too: three vectorized passes over the row (rank and top
// list, max, sum), no allocation.
void ComputeLogprobs(absl::Span<const float> raw_logits, int32_t token, int32_t num_top,
                     Logprobs* out);

}  // namespace r2::sampling

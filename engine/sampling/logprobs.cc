#include "engine/sampling/logprobs.h"

namespace r2::sampling {

void ComputeLogprobs(absl::Span<const float> raw_logits, int32_t token, int32_t num_top,
                     Logprobs* out) {
  const cpu::RawLogprobs raw = cpu::ComputeRawLogprobs(raw_logits, token, num_top, out->top.data());
  out->logprob = raw.logprob;
  out->rank = raw.rank;
  out->num_top = raw.num_top;
}

}  // namespace r2::sampling

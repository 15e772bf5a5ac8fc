#pragma once
// LogitsProcessor: the sparse, in-place edits of one row of logits, in vLLM's order:
//
//   1. logit_bias         row[t] += bias[t]                                   (OpenAI)
//   2. min_tokens         while the output is shorter than min_tokens, row[t] = -inf for every
//                         stop_token_ids entry and, unless ignore_eos, every EOS id    (vLLM)
//   3. penalties          for each distinct token t seen in prompt or output:
//                           repetition: row[t] = row[t] > 0 ? row[t] / r : row[t] * r (HF/vLLM)
//                         then for each t with output count c > 0:
//                           row[t] -= c * frequency_penalty + presence_penalty       (OpenAI)
//
// The dense steps that follow (temperature, top_k, top_p, min_p, the draw) never write the row;
// they are FilteredDistribution's. Every value the processor overwrites is remembered, and
// Restore() puts the row back exactly, so the caller's logits hold the raw model output again and
// the raw log-probabilities can be computed from them afterwards. The edits themselves (the
// penalty formula, the undo list) are cpu::LogitEdits (kernels/cpu/host_sampling.h), which the
// SampleRows reference runs too; this class reads them off a SamplingState. Cost: O(number of
// edits), not O(vocab). One processor serves one thread; its scratch is reused from row to row.
#include <cstdint>

#include "absl/types/span.h"
#include "engine/sampling/sampling_state.h"
#include "kernels/cpu/host_sampling.h"

namespace r2::sampling {

class LogitsProcessor {
 public:
  // Steps 1-3 above for `state`'s next token. `row` has state.vocab_size() entries.
  void Apply(const SamplingState& state, absl::Span<const int32_t> eos_token_ids,
             absl::Span<float> row);

  // The individual steps, for tests and for callers that need only one.
  void ApplyLogitBias(const SamplingParams& params, absl::Span<float> row);
  void ApplyMinTokens(const SamplingState& state, absl::Span<const int32_t> eos_token_ids,
                      absl::Span<float> row);
  void ApplyPenalties(const SamplingState& state, absl::Span<float> row);

  // Undoes every edit since the last Restore(), newest first.
  void Restore(absl::Span<float> row);

  size_t num_pending_edits() const { return edits_.size(); }

 private:
  cpu::LogitEdits edits_;
};

}  // namespace r2::sampling

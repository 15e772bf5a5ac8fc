#include "engine/sampling/logits_processor.h"

#include <cassert>

namespace r2::sampling {

void LogitsProcessor::Apply(const SamplingState& state, absl::Span<const int32_t> eos_token_ids,
                            absl::Span<float> row) {
  assert(row.size() == static_cast<size_t>(state.vocab_size()));
  ApplyLogitBias(state.params(), row);
  ApplyMinTokens(state, eos_token_ids, row);
  ApplyPenalties(state, row);
}

void LogitsProcessor::ApplyLogitBias(const SamplingParams& params, absl::Span<float> row) {
  for (const auto& [token, bias] : params.logit_bias) edits_.AddBias(row, token, bias);
}

void LogitsProcessor::ApplyMinTokens(const SamplingState& state,
                                     absl::Span<const int32_t> eos_token_ids,
                                     absl::Span<float> row) {
  const SamplingParams& params = state.params();
  if (state.num_output_tokens() >= params.min_tokens) return;
  for (int32_t token : params.stop_token_ids) edits_.Ban(row, token);
  if (params.ignore_eos) return;  // EOS does not end the output, so it needs no mask
  for (int32_t token : eos_token_ids) edits_.Ban(row, token);
}

void LogitsProcessor::ApplyPenalties(const SamplingState& state, absl::Span<float> row) {
  const SamplingParams& params = state.params();
  if (!params.has_penalties()) return;
  for (const auto& [token, history] : state.token_history()) {
    edits_.Penalize(row, token, history.output_count, params.repetition_penalty,
                    params.frequency_penalty, params.presence_penalty);
  }
}

void LogitsProcessor::Restore(absl::Span<float> row) { edits_.Restore(row); }

}  // namespace r2::sampling

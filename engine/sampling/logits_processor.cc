#include "engine/sampling/logits_processor.h"

#include <cassert>
#include <limits>

namespace r2::sampling {

void LogitsProcessor::Set(absl::Span<float> row, int32_t token, float value) {
  assert(token >= 0 && static_cast<size_t>(token) < row.size());
  undo_.emplace_back(token, row[token]);
  row[token] = value;
}

void LogitsProcessor::Apply(const SamplingState& state, absl::Span<const int32_t> eos_token_ids,
                            absl::Span<float> row) {
  assert(row.size() == static_cast<size_t>(state.vocab_size()));
  ApplyLogitBias(state.params(), row);
  ApplyMinTokens(state, eos_token_ids, row);
  ApplyPenalties(state, row);
}

void LogitsProcessor::ApplyLogitBias(const SamplingParams& params, absl::Span<float> row) {
  for (const auto& [token, bias] : params.logit_bias) Set(row, token, row[token] + bias);
}

void LogitsProcessor::ApplyMinTokens(const SamplingState& state,
                                     absl::Span<const int32_t> eos_token_ids,
                                     absl::Span<float> row) {
  const SamplingParams& params = state.params();
  if (state.num_output_tokens() >= params.min_tokens) return;
  constexpr float kBanned = -std::numeric_limits<float>::infinity();
  for (int32_t token : params.stop_token_ids) Set(row, token, kBanned);
  if (params.ignore_eos) return;  // EOS does not end the output, so it needs no mask
  for (int32_t token : eos_token_ids) Set(row, token, kBanned);
}

void LogitsProcessor::ApplyPenalties(const SamplingState& state, absl::Span<float> row) {
  const SamplingParams& params = state.params();
  if (!params.has_penalties()) return;
  const float repetition = params.repetition_penalty;
  for (const auto& [token, history] : state.token_history()) {
    float value = row[token];
    if (repetition != 1.0f) value = value > 0.0f ? value / repetition : value * repetition;
    if (history.output_count > 0) {
      value -= static_cast<float>(history.output_count) * params.frequency_penalty +
               params.presence_penalty;
    }
    if (value != row[token]) Set(row, token, value);
  }
}

void LogitsProcessor::Restore(absl::Span<float> row) {
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) row[it->first] = it->second;
  undo_.clear();
}

}  // namespace r2::sampling

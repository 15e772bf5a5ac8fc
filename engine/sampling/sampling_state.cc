#include "engine/sampling/sampling_state.h"

#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"

namespace r2::sampling {

SamplingState::SamplingState(SamplingParams params, int32_t vocab_size, uint32_t choice_index)
    : params_(std::move(params)),
      vocab_size_(vocab_size),
      choice_index_(choice_index),
      track_history_(params_.has_penalties()) {}

absl::StatusOr<SamplingState> SamplingState::Create(SamplingParams params,
                                                    absl::Span<const int32_t> prompt_tokens,
                                                    int32_t vocab_size, uint32_t choice_index) {
  if (absl::Status status = params.Validate(vocab_size); !status.ok()) return status;
  for (int32_t token : prompt_tokens) {
    if (token < 0 || token >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", token, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  SamplingState state(std::move(params), vocab_size, choice_index);
  if (state.track_history_) {
    for (int32_t token : prompt_tokens) state.history_[token].in_prompt = true;
  }
  return state;
}

void SamplingState::AppendOutputToken(int32_t token) {
  assert(token >= 0 && token < vocab_size_);
  ++num_output_tokens_;
  if (track_history_) ++history_[token].output_count;
}

}  // namespace r2::sampling

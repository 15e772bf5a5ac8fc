#pragma once
// SamplingState: what the sampler remembers about one sequence (one choice of one request)
// between decode steps: its validated parameters, its choice index (which, with the seed, names
// its random stream), how many tokens it has generated, and, when a penalty is on, the distinct
// tokens seen in the prompt and output with their output counts.
//
// Owned by the engine beside the sequence; the Sampler reads it and appends each token it
// samples. Not thread-safe; one state belongs to one sequence. Preemption keeps the state, so a
// recomputed sequence continues with the same penalties and the same seeded draws.
#include <cstdint>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/sampling/sampling_params.h"

namespace r2::sampling {

class SamplingState {
 public:
  // What the penalties need to know about one token id.
  struct TokenHistory {
    int32_t output_count = 0;  // occurrences in the output so far
    bool in_prompt = false;
  };

  // Validates `params` against `vocab_size` and the prompt's token ids against the vocabulary.
  // `choice_index` is this sequence's index among the request's n choices.
  static absl::StatusOr<SamplingState> Create(SamplingParams params,
                                              absl::Span<const int32_t> prompt_tokens,
                                              int32_t vocab_size, uint32_t choice_index = 0);

  const SamplingParams& params() const { return params_; }
  int32_t vocab_size() const { return vocab_size_; }
  uint32_t choice_index() const { return choice_index_; }
  int64_t num_output_tokens() const { return num_output_tokens_; }

  // Distinct tokens of prompt and output; filled only when params().has_penalties().
  const std::unordered_map<int32_t, TokenHistory>& token_history() const { return history_; }

  // Records one generated token, in [0, vocab_size). Sampler::SampleBatch calls this for every
  // token it samples; call it directly only for tokens that did not come from the sampler.
  void AppendOutputToken(int32_t token);

 private:
  SamplingState(SamplingParams params, int32_t vocab_size, uint32_t choice_index);

  SamplingParams params_;
  int32_t vocab_size_;
  uint32_t choice_index_;
  bool track_history_;
  int64_t num_output_tokens_ = 0;
  std::unordered_map<int32_t, TokenHistory> history_;
};

}  // namespace r2::sampling

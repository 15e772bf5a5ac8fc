#pragma once
// Sampler: turns one row of float32 logits per sequence into that sequence's next token, by the
// sequence's own SamplingParams, and appends the token to its SamplingState.
//
// Per row, in vLLM's order (see logits_processor.h and filtered_distribution.h for each rule):
//   logit_bias -> min_tokens -> penalties (repetition, frequency, presence)
//   -> temperature == 0: greedy, the largest processed logit, ties to the lowest id
//   -> else temperature -> top_k -> top_p -> min_p -> inverse-CDF draw with one uniform u:
//        seeded:   u = SeededUniform(seed, choice index, number of tokens generated so far)
//        unseeded: u = EngineUniform(engine seed, n), n counting the engine's draws, taken in
//                  row order within a batch (philox.h)
//   -> logprobs (when asked) of the raw model output (see logprobs.h).
// A seeded sequence's tokens therefore depend only on its seed, choice index and logits: not on
// the batch's other rows nor their order. Unseeded sequences are reproducible for a given engine
// seed and sequence of batches.
//
// Usage, once per engine step on the engine thread:
//   std::vector<SampleResult> results(batch);  // reused across steps
//   absl::Status status = sampler.SampleBatch(logits, states, absl::MakeSpan(results));
//   for each row i: results[i].token, and results[i].logprobs when results[i].has_logprobs
// then StopChecker::Append for each sequence.
//
// Cost: O(V) per row in vectorized passes (greedy: two; see sampling_bench.cc for numbers), no
// allocation per row once the scratch has grown to the vocabulary size (a penalized sequence's
// token history grows by one entry per new distinct token). Rows are processed in order on the
// calling thread; to use more threads give each its own Sampler and a slice of the batch (seeded
// results do not change; unseeded draws then follow each Sampler's own engine seed). Not
// thread-safe.
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/sampling/filtered_distribution.h"
#include "engine/sampling/logits_processor.h"
#include "engine/sampling/logprobs.h"
#include "engine/sampling/sampling_state.h"

namespace r2::sampling {

struct SamplerOptions {
  int32_t vocab_size = 0;              // V, the logits row length
  std::vector<int32_t> eos_token_ids;  // the model's EOS ids (masked while under min_tokens)
  uint64_t seed = 0;                   // the engine generator's seed, for unseeded requests
};

struct SampleResult {
  int32_t token = -1;
  bool has_logprobs = false;  // the request asked for logprobs
  Logprobs logprobs;          // valid when has_logprobs
};

class Sampler {
 public:
  // Checks vocab_size > 0 and that the EOS ids are in the vocabulary.
  static absl::StatusOr<Sampler> Create(SamplerOptions options);

  // Samples one token for each state from its row of `logits` ([states.size(), V], row-major)
  // into `results` (same length), and appends it to the state. The rows are edited during the
  // call and hold their input values again when it returns. Errors (InvalidArgument) only for
  // mismatched sizes, null states or states of another vocabulary size; nothing is sampled then.
  absl::Status SampleBatch(absl::Span<float> logits, absl::Span<SamplingState* const> states,
                           absl::Span<SampleResult> results);

  // One row, one state.
  absl::StatusOr<SampleResult> Sample(absl::Span<float> row, SamplingState& state);

  int32_t vocab_size() const { return options_.vocab_size; }
  uint64_t engine_draws() const { return engine_draws_; }

 private:
  explicit Sampler(SamplerOptions options) : options_(std::move(options)) {}
  void SampleRow(absl::Span<float> row, SamplingState& state, SampleResult& result);
  int32_t Draw(absl::Span<const float> row, const SamplingState& state);

  SamplerOptions options_;
  uint64_t engine_draws_ = 0;
  LogitsProcessor processor_;
  FilteredDistribution distribution_;
};

// The greedy choice: the index of the largest value, the lowest index among equal ones (NaN is
// never chosen over a number; an all-NaN or empty row gives 0).
int32_t ArgMax(absl::Span<const float> row);

}  // namespace r2::sampling

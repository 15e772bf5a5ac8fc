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
//   absl::Status status = sampler.SampleRows(rows, states, absl::MakeSpan(results));
//   for each row i: results[i].token, and results[i].logprobs when results[i].has_logprobs
// then StopChecker::Append for each sequence.
//
// Threads: the rows of one batch are sampled in parallel (OpenMP, options.num_threads; the
// calling thread takes part), each thread with its own scratch. Before the parallel loop every
// unseeded non-greedy row is given its engine draw number, in row order, so the tokens are the
// same as when the rows are sampled one by one in order, whatever the number of threads and
// whichever thread takes a row. A batch must not name one state twice (a sequence samples one
// token per step) nor two overlapping rows: both are rejected.
//
// Cost per row: greedy without logprobs is one vectorized pass (ArgMax) over the row, plus the
// sparse logit edits; sampling is O(V) in vectorized passes (filtered_distribution.h); logprobs
// add three passes (logprobs.h). The per-row arithmetic is kernels/cpu/host_sampling.h, shared
// with the SampleRows reference (kernels/sample_rows.h); this class adds requests, seeds and
// threads. No allocation per row once the scratch has grown to the
// vocabulary size (a penalized sequence's token history grows by one entry per new distinct
// token). A batch of few or small rows (under options.min_parallel_values values) stays on the
// calling thread. Not thread-safe: one Sampler per engine thread.
#include <cstdint>
#include <memory>
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
  // Threads that sample the rows of one batch: 0 = OpenMP's default (omp_get_max_threads(): the
  // cores, or OMP_NUM_THREADS), 1 = the calling thread only.
  int32_t num_threads = 0;
  // A batch with fewer values (rows x V) than this is sampled on the calling thread alone: a
  // parallel region costs microseconds on an idle machine and much more on a busy one.
  int64_t min_parallel_values = int64_t{1} << 20;
};

struct SampleResult {
  int32_t token = -1;
  bool has_logprobs = false;  // the request asked for logprobs
  Logprobs logprobs;          // valid when has_logprobs
};

class Sampler {
 public:
  // Checks vocab_size > 0, num_threads >= 0 and that the EOS ids are in the vocabulary.
  static absl::StatusOr<Sampler> Create(SamplerOptions options);

  // Samples one token for each state from its own row (rows[i] for states[i], each V values,
  // anywhere in memory) into `results` (same length), and appends it to the state. The rows are
  // edited during the call and hold their input values again when it returns. Errors
  // (InvalidArgument) for mismatched sizes, null states, states of another vocabulary size, a
  // state named twice or overlapping rows; nothing is sampled then.
  absl::Status SampleRows(absl::Span<const absl::Span<float>> rows,
                          absl::Span<SamplingState* const> states,
                          absl::Span<SampleResult> results);

  // SampleRows over the rows of `logits` ([states.size(), V], row-major).
  absl::Status SampleBatch(absl::Span<float> logits, absl::Span<SamplingState* const> states,
                           absl::Span<SampleResult> results);

  // One row, one state.
  absl::StatusOr<SampleResult> Sample(absl::Span<float> row, SamplingState& state);

  int32_t vocab_size() const { return options_.vocab_size; }
  // Engine draws taken so far (one per unseeded non-greedy row sampled).
  uint64_t engine_draws() const { return engine_draws_; }
  // The threads a large batch is sampled with.
  int32_t num_threads() const { return num_threads_; }

 private:
  // One thread's scratch.
  struct RowScratch {
    LogitsProcessor processor;
    FilteredDistribution distribution;
  };

  Sampler(SamplerOptions options, int32_t num_threads)
      : options_(std::move(options)), num_threads_(num_threads) {}
  absl::Status CheckBatch(absl::Span<const absl::Span<float>> rows,
                          absl::Span<SamplingState* const> states,
                          absl::Span<SampleResult> results);
  void SampleRow(RowScratch& scratch, absl::Span<float> row, SamplingState& state, uint64_t draw,
                 SampleResult& result) const;
  int32_t Draw(RowScratch& scratch, absl::Span<const float> row, const SamplingState& state,
               uint64_t draw) const;

  SamplerOptions options_;
  int32_t num_threads_;
  uint64_t engine_draws_ = 0;
  std::vector<std::unique_ptr<RowScratch>> scratch_;  // one per thread, grown on demand
  std::vector<uint64_t> draws_;                       // per row: its engine draw number
  std::vector<absl::Span<float>> batch_rows_;         // SampleBatch's row views
  std::vector<const void*> sorted_;                   // CheckBatch's scratch
};

// The greedy choice: the index of the largest value, the lowest index among equal ones (NaN is
// never chosen over a number; an all-NaN or empty row gives 0). cpu::GreedyToken
// (kernels/cpu/host_sampling.h), which the SampleRows reference runs too.
int32_t ArgMax(absl::Span<const float> row);

}  // namespace r2::sampling

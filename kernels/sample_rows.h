#pragma once
// SampleRows: the Backend op that turns rows of logits, in the backend's memory, into one token
// per row, so that on a device only token ids and the requested log-probabilities cross to the
// host (Backend::SampleRows in backend.h). The parameters of each row are host values the caller
// computed; the op knows nothing of requests or sequences.
//
// Per row, in this order (the engine sampler's order, engine/sampling/sampler.h):
//   1. logit_bias     l[t] += bias, entry by entry in the given order
//   2. banned         l[t] = -inf for every listed id (min_tokens: stop ids and EOS ids)
//   3. penalties      for each history entry (t, c): if repetition != 1,
//                       l[t] = l[t] > 0 ? l[t] / repetition : l[t] * repetition;
//                     then if c > 0, l[t] -= float(c) * frequency + presence
//   4. temperature 0: greedy, the first id of the largest edited logit (NaN never wins; no value
//                     above -inf: the first -inf, else 0)
//      else           temperature -> top_k -> top_p -> min_p -> inverse-CDF draw with `uniform`,
//                     exactly as kernels/cpu/host_sampling.h defines them: weights
//                     w = ExpNonPositive((l - max) / T) (the polynomial of
//                     kernels/cpu/sampling_simd.h), sums in double over blocks of 8 in id
//                     order, top_p by the sort order (w descending, id ascending)
//   5. logprobs       when asked: log_softmax of the RAW row (before 1-3) for the sampled token,
//                     its 1-based rank (logit descending, ties to the lower id) and the top
//                     top_logprobs (0..20) entries in that order.
// The rows hold their input values when the op returns (edits are made on the side or undone).
//
// The reference (SampleRowsOnHost, kernels/cpu/reference_sampling.cc) runs the one host
// implementation of sampling (kernels/cpu/host_sampling.h), which the engine Sampler runs too, so
// it gives exactly the Sampler's tokens and logprobs for the same inputs
// (tests/unit/kernels/sample_rows_test.cc). A device implementation sums in another order: its
// tokens equal the reference's except where a CDF or top_p boundary lies within float rounding of
// the uniform's target.
#include <array>
#include <cstdint>

#include "absl/status/status.h"

namespace r2 {

inline constexpr int32_t kMaxSampleTopLogprobs = 20;

struct SampleLogitBias {
  int32_t token = 0;
  float bias = 0.0f;
};

// A distinct token of the sequence's prompt or output with its count in the output so far.
struct SampleTokenCount {
  int32_t token = 0;
  int32_t output_count = 0;
};

// One row to sample. Arrays are host memory, valid for the call.
struct SampleRowSpec {
  int64_t row = 0;           // the logits row, in [0, SampleRowsParams::num_rows)
  float temperature = 1.0f;  // 0: greedy; else > 0
  int32_t top_k = 0;         // <= 0 or >= vocab: off
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  double uniform = 0.0;      // [0, 1): the draw's u (ignored when greedy)
  // Each token at most once in logit_bias and at most once in history (banned may repeat). Not
  // checked (it would cost a sort per row per step): with a repeated token the reference applies
  // the entries in order and the CUDA kernel's result for that token is unspecified (the row is
  // still restored exactly).
  const SampleLogitBias* logit_bias = nullptr;
  int32_t num_logit_bias = 0;
  const int32_t* banned = nullptr;
  int32_t num_banned = 0;
  float repetition_penalty = 1.0f;  // > 0
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  const SampleTokenCount* history = nullptr;  // distinct tokens
  int32_t num_history = 0;
  bool logprobs = false;     // fill logprob, rank and top
  int32_t top_logprobs = 0;  // 0..kMaxSampleTopLogprobs (needs logprobs)
};

struct SampleTopLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampleRowResult {
  int32_t token = -1;
  float logprob = 0.0f;  // of `token` in the raw distribution (when logprobs)
  int32_t rank = 0;      // of `token`, 1-based (when logprobs)
  int32_t num_top = 0;
  std::array<SampleTopLogprob, kMaxSampleTopLogprobs> top{};
};

struct SampleRowsParams {
  float* logits = nullptr;  // backend memory, [num_rows, row_stride]
  int64_t num_rows = 0;
  int64_t vocab_size = 0;
  int64_t row_stride = 0;                // 0: vocab_size
  const SampleRowSpec* specs = nullptr;  // host, [num_specs]; no row named twice
  int64_t num_specs = 0;
  SampleRowResult* results = nullptr;  // host, [num_specs]
};

// The host-side checks every implementation makes first: shapes, null pointers, parameter
// ranges, token ids in [0, vocab_size), a row named twice. InvalidArgument naming the spec and
// field.
absl::Status CheckSampleRows(const SampleRowsParams& p);

// The reference on host memory (p.logits is host memory). Runs CheckSampleRows first.
absl::Status SampleRowsOnHost(const SampleRowsParams& p);

}  // namespace r2

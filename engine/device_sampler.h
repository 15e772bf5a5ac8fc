#pragma once
// DeviceSampler: the engine Sampler's job (sampling/sampler.h) for logits that stay in a
// backend's memory. It turns each sequence's SamplingState into a host-side SampleRowSpec (the
// temperature and filters, the uniform u computed exactly as the Sampler computes it, the sparse
// edits: logit_bias, the min_tokens bans, the penalty history), runs Backend::SampleRows, and
// turns the results back into SampleResults, appending each token to its state. Only the specs
// go to the backend and only token ids and the requested logprobs come back.
//
// Same tokens as the Sampler: the backend's reference (kernels/sample_rows.h) runs the Sampler's
// own code (kernels/cpu/host_sampling.h), and the engine draws of unseeded rows are numbered in
// row order from the same engine seed, so a run on a device-like backend gives the host path's
// tokens (tests/unit/engine/engine_device_sampling_test.cc). Not thread-safe: one per engine
// thread.
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_state.h"
#include "kernels/backend.h"

namespace r2::engine {

class DeviceSampler {
 public:
  // options: vocab_size, eos_token_ids and seed as for the Sampler (num_threads is unused).
  explicit DeviceSampler(sampling::SamplerOptions options) : options_(std::move(options)) {}

  // Samples states[i]'s token from row rows[i] of `logits` (backend memory, [num_rows,
  // vocab_size], row-major) into results[i] and appends it to the state. InvalidArgument for
  // mismatched sizes, null states, states of another vocabulary, a row named twice; the
  // backend's error otherwise (nothing is appended then).
  absl::Status SampleRows(Backend& backend, float* logits, int64_t num_rows,
                          absl::Span<const int64_t> rows,
                          absl::Span<sampling::SamplingState* const> states,
                          absl::Span<sampling::SampleResult> results);

  uint64_t engine_draws() const { return engine_draws_; }

 private:
  // Fills spec i (edits into the shared arrays; pointers are set once they stop growing).
  void BuildSpec(const sampling::SamplingState& state, int64_t row, uint64_t draw, size_t i);

  sampling::SamplerOptions options_;
  uint64_t engine_draws_ = 0;
  // Per-step buffers, reused.
  std::vector<SampleRowSpec> specs_;
  std::vector<SampleRowResult> results_;
  std::vector<SampleLogitBias> bias_;
  std::vector<int32_t> banned_;
  std::vector<SampleTokenCount> history_;
  struct Offsets {
    size_t bias = 0, banned = 0, history = 0;
  };
  std::vector<Offsets> offsets_;
};

}  // namespace r2::engine

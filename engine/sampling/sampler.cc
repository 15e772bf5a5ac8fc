#include "engine/sampling/sampler.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/sampling/philox.h"
#include "kernels/cpu/host_sampling.h"

namespace r2::sampling {

int32_t ArgMax(absl::Span<const float> row) { return cpu::GreedyToken(row); }

absl::StatusOr<Sampler> Sampler::Create(SamplerOptions options) {
  if (options.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be positive, got ", options.vocab_size));
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads must be >= 0 (0: OpenMP's default), got ", options.num_threads));
  }
  for (int32_t eos : options.eos_token_ids) {
    if (eos < 0 || eos >= options.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "EOS token id ", eos, " is outside the vocabulary [0, ", options.vocab_size, ")"));
    }
  }
  const int32_t threads =
      options.num_threads > 0 ? options.num_threads : std::max(1, omp_get_max_threads());
  return Sampler(std::move(options), threads);
}

absl::Status Sampler::SampleBatch(absl::Span<float> logits, absl::Span<SamplingState* const> states,
                                  absl::Span<SampleResult> results) {
  const size_t vocab = static_cast<size_t>(options_.vocab_size);
  if (logits.size() != states.size() * vocab) {
    return absl::InvalidArgumentError(absl::StrCat("SampleBatch: ", states.size(), " states need ",
                                                   states.size() * vocab, " logits, got ",
                                                   logits.size()));
  }
  batch_rows_.clear();
  for (size_t i = 0; i < states.size(); ++i)
    batch_rows_.push_back(logits.subspan(i * vocab, vocab));
  return SampleRows(batch_rows_, states, results);
}

absl::Status Sampler::CheckBatch(absl::Span<const absl::Span<float>> rows,
                                 absl::Span<SamplingState* const> states,
                                 absl::Span<SampleResult> results) {
  const size_t vocab = static_cast<size_t>(options_.vocab_size);
  if (rows.size() != states.size() || results.size() != states.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: ", states.size(), " states need as many rows and results, got ",
                     rows.size(), " rows and ", results.size(), " results"));
  }
  for (size_t i = 0; i < states.size(); ++i) {
    if (states[i] == nullptr || states[i]->vocab_size() != options_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SampleRows: state ", i, " is null or has another vocabulary size than ", vocab));
    }
    if (rows[i].size() != vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("SampleRows: row ", i, " has ", rows[i].size(), " logits, not ", vocab));
    }
  }
  if (states.size() < 2) return absl::OkStatus();
  sorted_.assign(states.begin(), states.end());
  std::sort(sorted_.begin(), sorted_.end(), std::less<const void*>());
  if (std::adjacent_find(sorted_.begin(), sorted_.end()) != sorted_.end()) {
    return absl::InvalidArgumentError(
        "SampleRows: a state appears twice in one batch (one token per sequence per step)");
  }
  sorted_.clear();
  for (const absl::Span<float>& row : rows) sorted_.push_back(row.data());
  std::sort(sorted_.begin(), sorted_.end(), std::less<const void*>());
  for (size_t i = 1; i < sorted_.size(); ++i) {
    const auto gap =
        reinterpret_cast<uintptr_t>(sorted_[i]) - reinterpret_cast<uintptr_t>(sorted_[i - 1]);
    if (gap < vocab * sizeof(float)) {
      return absl::InvalidArgumentError("SampleRows: two rows of the batch overlap");
    }
  }
  return absl::OkStatus();
}

absl::Status Sampler::SampleRows(absl::Span<const absl::Span<float>> rows,
                                 absl::Span<SamplingState* const> states,
                                 absl::Span<SampleResult> results) {
  if (absl::Status status = CheckBatch(rows, states, results); !status.ok()) return status;
  const auto n = static_cast<int64_t>(states.size());
  // The engine draws, numbered in row order before any row is sampled.
  draws_.resize(states.size());
  for (int64_t i = 0; i < n; ++i) {
    const SamplingParams& params = states[i]->params();
    draws_[i] = !params.greedy() && !params.seed.has_value() ? engine_draws_++ : 0;
  }
  const bool parallel =
      num_threads_ > 1 && n > 1 && n * int64_t{options_.vocab_size} >= options_.min_parallel_values;
  const int32_t threads = parallel ? static_cast<int32_t>(std::min<int64_t>(num_threads_, n)) : 1;
  while (scratch_.size() < static_cast<size_t>(threads)) {
    scratch_.push_back(std::make_unique<RowScratch>());
  }
  if (!parallel) {
    for (int64_t i = 0; i < n; ++i) {
      SampleRow(*scratch_[0], rows[i], *states[i], draws_[i], results[i]);
    }
    return absl::OkStatus();
  }
#pragma omp parallel num_threads(threads)
  {
    RowScratch& scratch = *scratch_[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      SampleRow(scratch, rows[i], *states[i], draws_[i], results[i]);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SampleResult> Sampler::Sample(absl::Span<float> row, SamplingState& state) {
  SampleResult result;
  SamplingState* states[] = {&state};
  const absl::Span<float> rows[] = {row};
  if (absl::Status status = SampleRows(rows, states, absl::MakeSpan(&result, 1)); !status.ok()) {
    return status;
  }
  return result;
}

// Touches only `scratch`, `row`, `state` and `result`, so rows run on any thread.
void Sampler::SampleRow(RowScratch& scratch, absl::Span<float> row, SamplingState& state,
                        uint64_t draw, SampleResult& result) const {
  scratch.processor.Apply(state, options_.eos_token_ids, row);
  result.token = Draw(scratch, row, state, draw);
  scratch.processor.Restore(row);
  const SamplingParams& params = state.params();
  result.has_logprobs = params.logprobs;
  if (params.logprobs) {
    ComputeLogprobs(row, result.token, params.top_logprobs, &result.logprobs);
  }
  state.AppendOutputToken(result.token);
}

int32_t Sampler::Draw(RowScratch& scratch, absl::Span<const float> row, const SamplingState& state,
                      uint64_t draw) const {
  const SamplingParams& params = state.params();
  if (params.greedy()) return ArgMax(row);  // one pass, no distribution
  scratch.distribution.Build(row, FilterParams{.temperature = params.temperature,
                                               .top_k = params.top_k,
                                               .top_p = params.top_p,
                                               .min_p = params.min_p});
  const double u = params.seed.has_value()
                       ? SeededUniform(*params.seed, state.choice_index(),
                                       static_cast<uint64_t>(state.num_output_tokens()))
                       : EngineUniform(options_.seed, draw);
  return scratch.distribution.Sample(u);
}

}  // namespace r2::sampling

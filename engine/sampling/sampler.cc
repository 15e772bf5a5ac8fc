#include "engine/sampling/sampler.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/sampling/philox.h"
#include "engine/sampling/simd_math.h"

namespace r2::sampling {

int32_t ArgMax(absl::Span<const float> row) {
  const float best = simd::Max(row.data(), row.size());
  const size_t index = simd::FirstIndexOf(row.data(), row.size(), best);
  return index < row.size() ? static_cast<int32_t>(index) : 0;
}

absl::StatusOr<Sampler> Sampler::Create(SamplerOptions options) {
  if (options.vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be positive, got ", options.vocab_size));
  }
  for (int32_t eos : options.eos_token_ids) {
    if (eos < 0 || eos >= options.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "EOS token id ", eos, " is outside the vocabulary [0, ", options.vocab_size, ")"));
    }
  }
  return Sampler(std::move(options));
}

absl::Status Sampler::SampleBatch(absl::Span<float> logits, absl::Span<SamplingState* const> states,
                                  absl::Span<SampleResult> results) {
  const size_t vocab = static_cast<size_t>(options_.vocab_size);
  if (logits.size() != states.size() * vocab || results.size() != states.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleBatch: ", states.size(), " states need ", states.size() * vocab,
                     " logits and as many results, got ", logits.size(), " logits and ",
                     results.size(), " results"));
  }
  for (size_t i = 0; i < states.size(); ++i) {
    if (states[i] == nullptr || states[i]->vocab_size() != options_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SampleBatch: state ", i, " is null or has another vocabulary size than ", vocab));
    }
  }
  for (size_t i = 0; i < states.size(); ++i) {
    SampleRow(logits.subspan(i * vocab, vocab), *states[i], results[i]);
  }
  return absl::OkStatus();
}

absl::StatusOr<SampleResult> Sampler::Sample(absl::Span<float> row, SamplingState& state) {
  SampleResult result;
  SamplingState* states[] = {&state};
  if (absl::Status status = SampleBatch(row, states, absl::MakeSpan(&result, 1)); !status.ok()) {
    return status;
  }
  return result;
}

void Sampler::SampleRow(absl::Span<float> row, SamplingState& state, SampleResult& result) {
  processor_.Apply(state, options_.eos_token_ids, row);
  result.token = Draw(row, state);
  processor_.Restore(row);
  const SamplingParams& params = state.params();
  result.has_logprobs = params.logprobs;
  if (params.logprobs) {
    ComputeLogprobs(row, result.token, params.top_logprobs, &result.logprobs);
  }
  state.AppendOutputToken(result.token);
}

int32_t Sampler::Draw(absl::Span<const float> row, const SamplingState& state) {
  const SamplingParams& params = state.params();
  if (params.greedy()) return ArgMax(row);
  distribution_.Build(row, FilterParams{.temperature = params.temperature,
                                        .top_k = params.top_k,
                                        .top_p = params.top_p,
                                        .min_p = params.min_p});
  const double u = params.seed.has_value()
                       ? SeededUniform(*params.seed, state.choice_index(),
                                       static_cast<uint64_t>(state.num_output_tokens()))
                       : EngineUniform(options_.seed, engine_draws_++);
  return distribution_.Sample(u);
}

}  // namespace r2::sampling

#include "engine/device_sampler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/sampling/philox.h"

namespace r2::engine {

void DeviceSampler::BuildSpec(const sampling::SamplingState& state, int64_t row, uint64_t draw,
                              size_t i) {
  const sampling::SamplingParams& params = state.params();
  SampleRowSpec& spec = specs_[i];
  spec = SampleRowSpec{};
  spec.row = row;
  spec.temperature = params.temperature;
  spec.top_k = params.top_k;
  spec.top_p = params.top_p;
  spec.min_p = params.min_p;
  if (!params.greedy()) {
    spec.uniform = params.seed.has_value()
                       ? sampling::SeededUniform(*params.seed, state.choice_index(),
                                                 static_cast<uint64_t>(state.num_output_tokens()))
                       : sampling::EngineUniform(options_.seed, draw);
  }
  offsets_[i] = {bias_.size(), banned_.size(), history_.size()};
  for (const auto& [token, bias] : params.logit_bias) bias_.push_back({token, bias});
  if (state.num_output_tokens() < params.min_tokens) {
    banned_.insert(banned_.end(), params.stop_token_ids.begin(), params.stop_token_ids.end());
    if (!params.ignore_eos) {
      banned_.insert(banned_.end(), options_.eos_token_ids.begin(), options_.eos_token_ids.end());
    }
  }
  if (params.has_penalties()) {
    spec.repetition_penalty = params.repetition_penalty;
    spec.frequency_penalty = params.frequency_penalty;
    spec.presence_penalty = params.presence_penalty;
    for (const auto& [token, history] : state.token_history()) {
      history_.push_back({token, history.output_count});
    }
  }
  spec.num_logit_bias = static_cast<int32_t>(bias_.size() - offsets_[i].bias);
  spec.num_banned = static_cast<int32_t>(banned_.size() - offsets_[i].banned);
  spec.num_history = static_cast<int32_t>(history_.size() - offsets_[i].history);
  spec.logprobs = params.logprobs;
  spec.top_logprobs = params.logprobs ? params.top_logprobs : 0;
}

absl::Status DeviceSampler::SampleRows(Backend& backend, float* logits, int64_t num_rows,
                                       absl::Span<const int64_t> rows,
                                       absl::Span<sampling::SamplingState* const> states,
                                       absl::Span<sampling::SampleResult> results) {
  const size_t n = states.size();
  if (rows.size() != n || results.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("DeviceSampler: ", n, " states need as many rows and results, got ",
                     rows.size(), " rows and ", results.size(), " results"));
  }
  for (size_t i = 0; i < n; ++i) {
    if (states[i] == nullptr || states[i]->vocab_size() != options_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("DeviceSampler: state ", i, " is null or has another vocabulary size than ",
                       options_.vocab_size));
    }
  }
  specs_.resize(n);
  results_.resize(n);
  offsets_.resize(n);
  bias_.clear();
  banned_.clear();
  history_.clear();
  // Engine draws in row order, as the Sampler numbers them; committed only on success.
  uint64_t draws = engine_draws_;
  for (size_t i = 0; i < n; ++i) {
    const sampling::SamplingParams& params = states[i]->params();
    const uint64_t draw = !params.greedy() && !params.seed.has_value() ? draws++ : 0;
    BuildSpec(*states[i], rows[i], draw, i);
  }
  for (size_t i = 0; i < n; ++i) {
    specs_[i].logit_bias = bias_.data() + offsets_[i].bias;
    specs_[i].banned = banned_.data() + offsets_[i].banned;
    specs_[i].history = history_.data() + offsets_[i].history;
  }
  if (n == 0) return absl::OkStatus();
  const absl::Status status = backend.SampleRows(SampleRowsParams{
      .logits = logits,
      .num_rows = num_rows,
      .vocab_size = options_.vocab_size,
      .specs = specs_.data(),
      .num_specs = static_cast<int64_t>(n),
      .results = results_.data(),
  });
  if (!status.ok()) return status;
  engine_draws_ = draws;
  for (size_t i = 0; i < n; ++i) {
    const SampleRowResult& in = results_[i];
    sampling::SampleResult& out = results[i];
    out.token = in.token;
    out.has_logprobs = specs_[i].logprobs;
    if (out.has_logprobs) {
      out.logprobs.logprob = in.logprob;
      out.logprobs.rank = in.rank;
      out.logprobs.num_top = in.num_top;
      for (int32_t k = 0; k < in.num_top; ++k) {
        out.logprobs.top[k] = {in.top[k].token, in.top[k].logprob};
      }
    }
    states[i]->AppendOutputToken(in.token);
  }
  return absl::OkStatus();
}

}  // namespace r2::engine

// SampleRowsOnHost: the reference of the SampleRows op (kernels/sample_rows.h) on host memory.
// This file is the glue: the argument checks (CheckSampleRows), reading each SampleRowSpec, and
// calls into kernels/cpu/host_sampling.h, the one implementation of host sampling, which the
// engine Sampler (engine/sampling/) runs too. So the reference's tokens and logprobs are the
// Sampler's bit for bit by construction (tests/unit/kernels/sample_rows_test.cc checks it end to
// end, through the engine's SamplingState -> spec conversion).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/cpu/host_sampling.h"
#include "kernels/sample_rows.h"

namespace r2 {
namespace {

// Steps 1-3 of kernels/sample_rows.h on `row`, remembered in `edits` for undoing.
void ApplyEdits(const SampleRowSpec& s, absl::Span<float> row, cpu::LogitEdits* edits) {
  for (int32_t i = 0; i < s.num_logit_bias; ++i) {
    edits->AddBias(row, s.logit_bias[i].token, s.logit_bias[i].bias);
  }
  for (int32_t i = 0; i < s.num_banned; ++i) edits->Ban(row, s.banned[i]);
  for (int32_t i = 0; i < s.num_history; ++i) {
    const SampleTokenCount& h = s.history[i];
    edits->Penalize(row, h.token, h.output_count, s.repetition_penalty, s.frequency_penalty,
                    s.presence_penalty);
  }
}

absl::Status CheckTokens(int64_t spec, const char* field, int64_t vocab, int32_t n,
                         auto&& token_at) {
  if (n < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: spec ", spec, " ", field, " count ", n, " is negative"));
  for (int32_t i = 0; i < n; ++i) {
    const int32_t t = token_at(i);
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("SampleRows: spec ", spec, " ", field,
                                                     " token ", t, " is outside [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSpec(const SampleRowsParams& p, int64_t i) {
  const SampleRowSpec& s = p.specs[i];
  auto bad = [&](const char* field, auto value, const char* want) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: spec ", i, " ", field, " is ", value, ", must be ", want));
  };
  if (s.row < 0 || s.row >= p.num_rows) return bad("row", s.row, "in [0, num_rows)");
  if (!(s.temperature >= 0.0f) || !std::isfinite(s.temperature)) {
    return bad("temperature", s.temperature, "finite and >= 0");
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) return bad("top_p", s.top_p, "in (0, 1]");
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) return bad("min_p", s.min_p, "in [0, 1]");
  if (!(s.uniform >= 0.0 && s.uniform < 1.0)) return bad("uniform", s.uniform, "in [0, 1)");
  if (!(s.repetition_penalty > 0.0f) || !std::isfinite(s.repetition_penalty)) {
    return bad("repetition_penalty", s.repetition_penalty, "finite and > 0");
  }
  if (s.top_logprobs < 0 || s.top_logprobs > kMaxSampleTopLogprobs) {
    return bad("top_logprobs", s.top_logprobs, "in [0, 20]");
  }
  if (s.top_logprobs > 0 && !s.logprobs)
    return bad("top_logprobs", s.top_logprobs, "0 without logprobs");
  if ((s.num_logit_bias > 0 && s.logit_bias == nullptr) ||
      (s.num_banned > 0 && s.banned == nullptr) || (s.num_history > 0 && s.history == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: spec ", i, " has a null edit list with entries"));
  }
  const int64_t v = p.vocab_size;
  if (absl::Status st = CheckTokens(i, "logit_bias", v, s.num_logit_bias,
                                    [&](int32_t k) { return s.logit_bias[k].token; });
      !st.ok()) {
    return st;
  }
  if (absl::Status st =
          CheckTokens(i, "banned", v, s.num_banned, [&](int32_t k) { return s.banned[k]; });
      !st.ok()) {
    return st;
  }
  return CheckTokens(i, "history", v, s.num_history, [&](int32_t k) { return s.history[k].token; });
}

}  // namespace

absl::Status CheckSampleRows(const SampleRowsParams& p) {
  if (p.vocab_size <= 0 || p.num_rows < 0 || p.num_specs < 0) {
    return absl::InvalidArgumentError(absl::StrCat("SampleRows: vocab_size ", p.vocab_size,
                                                   ", num_rows ", p.num_rows, ", num_specs ",
                                                   p.num_specs, " (need vocab > 0, counts >= 0)"));
  }
  if (p.row_stride != 0 && p.row_stride < p.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("SampleRows: row_stride ", p.row_stride,
                                                   " is below vocab_size ", p.vocab_size));
  }
  if (p.num_specs == 0) return absl::OkStatus();
  if (p.logits == nullptr || p.specs == nullptr || p.results == nullptr) {
    return absl::InvalidArgumentError("SampleRows: null logits, specs or results");
  }
  std::vector<int64_t> rows;
  rows.reserve(p.num_specs);
  for (int64_t i = 0; i < p.num_specs; ++i) {
    if (absl::Status s = CheckSpec(p, i); !s.ok()) return s;
    rows.push_back(p.specs[i].row);
  }
  std::sort(rows.begin(), rows.end());
  if (std::adjacent_find(rows.begin(), rows.end()) != rows.end()) {
    return absl::InvalidArgumentError("SampleRows: a logits row is named by two specs");
  }
  return absl::OkStatus();
}

absl::Status SampleRowsOnHost(const SampleRowsParams& p) {
  if (absl::Status s = CheckSampleRows(p); !s.ok()) return s;
  const int64_t stride = p.row_stride == 0 ? p.vocab_size : p.row_stride;
  const auto vocab = static_cast<size_t>(p.vocab_size);
  cpu::LogitEdits edits;
  cpu::FilteredDistribution distribution;
  for (int64_t i = 0; i < p.num_specs; ++i) {
    const SampleRowSpec& spec = p.specs[i];
    const absl::Span<float> row(p.logits + spec.row * stride, vocab);
    SampleRowResult& result = p.results[i];
    ApplyEdits(spec, row, &edits);
    if (spec.temperature == 0.0f) {
      result.token = cpu::GreedyToken(row);
    } else {
      distribution.Build(row, cpu::FilterParams{.temperature = spec.temperature,
                                                .top_k = spec.top_k,
                                                .top_p = spec.top_p,
                                                .min_p = spec.min_p});
      result.token = distribution.Sample(spec.uniform);
    }
    edits.Restore(row);
    result.num_top = 0;
    result.rank = 0;
    result.logprob = 0.0f;
    if (spec.logprobs) {
      const cpu::RawLogprobs raw =
          cpu::ComputeRawLogprobs(row, result.token, spec.top_logprobs, result.top.data());
      result.logprob = raw.logprob;
      result.rank = raw.rank;
      result.num_top = raw.num_top;
    }
  }
  return absl::OkStatus();
}

}  // namespace r2

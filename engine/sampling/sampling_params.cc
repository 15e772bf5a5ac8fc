#include "engine/sampling/sampling_params.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "engine/sampling/utf8.h"

namespace r2::sampling {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view rule) {
  absl::Status status = absl::InvalidArgumentError(absl::StrCat(field, " ", rule));
  status.SetPayload(kParamPayloadUrl, absl::Cord(field));
  return status;
}

// NaN fails every range check because each test is written as "inside".
bool InClosed(float value, float lo, float hi) { return value >= lo && value <= hi; }

absl::Status CheckDistribution(const SamplingParams& p) {
  if (!InClosed(p.temperature, 0.0f, 2.0f)) {
    return Invalid("temperature", absl::StrCat("must be in [0, 2], got ", p.temperature));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return Invalid("top_p", absl::StrCat("must be in (0, 1], got ", p.top_p));
  }
  if (p.top_k < -1) {
    return Invalid("top_k", absl::StrCat("must be -1 or 0 (off) or at least 1, got ", p.top_k));
  }
  if (!InClosed(p.min_p, 0.0f, 1.0f)) {
    return Invalid("min_p", absl::StrCat("must be in [0, 1], got ", p.min_p));
  }
  return absl::OkStatus();
}

absl::Status CheckPenalties(const SamplingParams& p, int32_t vocab_size) {
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 2.0f)) {
    return Invalid("repetition_penalty",
                   absl::StrCat("must be in (0, 2], got ", p.repetition_penalty));
  }
  if (!InClosed(p.presence_penalty, -2.0f, 2.0f)) {
    return Invalid("presence_penalty",
                   absl::StrCat("must be in [-2, 2], got ", p.presence_penalty));
  }
  if (!InClosed(p.frequency_penalty, -2.0f, 2.0f)) {
    return Invalid("frequency_penalty",
                   absl::StrCat("must be in [-2, 2], got ", p.frequency_penalty));
  }
  if (p.logit_bias.size() > static_cast<size_t>(kMaxLogitBiasEntries)) {
    return Invalid("logit_bias", absl::StrCat("may have at most ", kMaxLogitBiasEntries,
                                              " entries, got ", p.logit_bias.size()));
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return Invalid(
          "logit_bias",
          absl::StrCat("token id ", token, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
    if (!InClosed(bias, -kMaxLogitBias, kMaxLogitBias)) {
      return Invalid("logit_bias",
                     absl::StrCat("bias for token ", token, " must be in [-100, 100], got ", bias));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLengths(const SamplingParams& p) {
  if (p.n < 1 || p.n > kMaxChoices) {
    return Invalid("n", absl::StrCat("must be in [1, ", kMaxChoices, "], got ", p.n));
  }
  if (p.best_of.has_value() && *p.best_of != p.n) {
    return Invalid("best_of",
                   absl::StrCat("is not supported: it must equal n (", p.n, "), got ", *p.best_of));
  }
  if (p.max_tokens.has_value() && *p.max_tokens < 1) {
    return Invalid("max_tokens", absl::StrCat("must be at least 1, got ", *p.max_tokens));
  }
  if (p.min_tokens < 0) {
    return Invalid("min_tokens", absl::StrCat("must be at least 0, got ", p.min_tokens));
  }
  if (p.max_tokens.has_value() && p.min_tokens > *p.max_tokens) {
    return Invalid("min_tokens", absl::StrCat("must be at most max_tokens (", *p.max_tokens,
                                              "), got ", p.min_tokens));
  }
  return absl::OkStatus();
}

absl::Status CheckStops(const SamplingParams& p, int32_t vocab_size) {
  if (p.stop_token_ids.size() > static_cast<size_t>(kMaxStopTokenIds)) {
    return Invalid("stop_token_ids", absl::StrCat("may have at most ", kMaxStopTokenIds,
                                                  " entries, got ", p.stop_token_ids.size()));
  }
  for (int32_t token : p.stop_token_ids) {
    if (token < 0 || token >= vocab_size) {
      return Invalid(
          "stop_token_ids",
          absl::StrCat("token id ", token, " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  if (p.stop.size() > static_cast<size_t>(kMaxStopStrings)) {
    return Invalid("stop", absl::StrCat("may have at most ", kMaxStopStrings, " strings, got ",
                                        p.stop.size()));
  }
  size_t total = 0;
  for (const std::string& s : p.stop) {
    if (s.empty()) return Invalid("stop", "strings must not be empty");
    if (!IsValidUtf8(s)) return Invalid("stop", "strings must be valid UTF-8");
    total += s.size();
  }
  if (total > static_cast<size_t>(kMaxStopStringsTotalBytes)) {
    return Invalid("stop", absl::StrCat("strings may total at most ", kMaxStopStringsTotalBytes,
                                        " bytes, got ", total));
  }
  return absl::OkStatus();
}

absl::Status CheckOutputs(const SamplingParams& p) {
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs) {
    return Invalid("top_logprobs",
                   absl::StrCat("must be in [0, ", kMaxTopLogprobs, "], got ", p.top_logprobs));
  }
  if (p.top_logprobs > 0 && !p.logprobs) {
    return Invalid("top_logprobs", "requires logprobs to be true");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SamplingParams::Validate(int32_t vocab_size) const {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be positive, got ", vocab_size));
  }
  for (const absl::Status& status :
       {CheckDistribution(*this), CheckPenalties(*this, vocab_size), CheckLengths(*this),
        CheckStops(*this, vocab_size), CheckOutputs(*this)}) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

std::string InvalidParamName(const absl::Status& status) {
  absl::optional<absl::Cord> field = status.GetPayload(kParamPayloadUrl);
  return field.has_value() ? std::string(*field) : std::string();
}

}  // namespace r2::sampling

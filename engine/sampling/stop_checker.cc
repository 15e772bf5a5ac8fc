#include "engine/sampling/stop_checker.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "engine/sampling/utf8.h"

namespace r2::sampling {
namespace {

// failure[i]: the length of the longest proper prefix of s[0, i] that is also its suffix.
std::vector<uint32_t> FailureFunction(std::string_view s) {
  std::vector<uint32_t> failure(s.size(), 0);
  uint32_t q = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    while (q > 0 && s[i] != s[q]) q = failure[q - 1];
    if (s[i] == s[q]) ++q;
    failure[i] = q;
  }
  return failure;
}

}  // namespace

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kNone:
      break;
  }
  return "";
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops, bool include_stop_in_output)
    : stops_(std::move(stops)), include_stop_(include_stop_in_output), state_(stops_.size(), 0) {
  failure_.reserve(stops_.size());
  for (const std::string& stop : stops_) {
    assert(!stop.empty());
    failure_.push_back(FailureFunction(stop));
  }
}

StopStringMatcher::Result StopStringMatcher::Feed(std::string_view text) {
  Result result;
  if (done_) return result;
  const size_t first_new = held_.size();
  held_.append(text);
  for (size_t i = first_new; i < held_.size(); ++i) {
    const char byte = held_[i];
    std::optional<size_t> best;  // the longest stop string completed by this byte
    for (size_t k = 0; k < stops_.size(); ++k) {
      const std::string& stop = stops_[k];
      uint32_t q = state_[k];
      while (q > 0 && stop[q] != byte) q = failure_[k][q - 1];
      if (stop[q] == byte) ++q;
      if (q == stop.size()) {
        if (!best.has_value() || stop.size() > stops_[*best].size()) best = k;
        q = failure_[k][q - 1];
      }
      state_[k] = q;
    }
    if (best.has_value()) {
      const size_t end = i + 1;
      // The held text holds at least the longest partial match, so the match starts in it.
      assert(end >= stops_[*best].size());
      result.emit = held_.substr(0, include_stop_ ? end : end - stops_[*best].size());
      result.matched = best;
      done_ = true;
      held_.clear();
      return result;
    }
  }
  const uint32_t partial = stops_.empty() ? 0 : *std::max_element(state_.begin(), state_.end());
  assert(partial <= held_.size());
  const size_t emit =
      CompleteUtf8PrefixLength(std::string_view(held_).substr(0, held_.size() - partial));
  result.emit = held_.substr(0, emit);
  held_.erase(0, emit);
  return result;
}

std::string StopStringMatcher::FeedUnsearched(std::string_view text) {
  if (done_) return {};
  held_.append(text);
  std::fill(state_.begin(), state_.end(), 0);
  const size_t emit = CompleteUtf8PrefixLength(held_);
  std::string out = held_.substr(0, emit);
  held_.erase(0, emit);
  return out;
}

std::string StopStringMatcher::Flush() {
  std::fill(state_.begin(), state_.end(), 0);
  return std::exchange(held_, std::string());
}

StopChecker::StopChecker(const SamplingParams& params, absl::Span<const int32_t> eos_token_ids)
    : min_tokens_(params.min_tokens),
      max_tokens_(params.max_tokens),
      ignore_eos_(params.ignore_eos),
      eos_token_ids_(eos_token_ids.begin(), eos_token_ids.end()),
      stop_token_ids_(params.stop_token_ids),
      matcher_(params.stop, params.include_stop_str_in_output) {}

bool StopChecker::IsEos(int32_t token) const {
  return std::find(eos_token_ids_.begin(), eos_token_ids_.end(), token) != eos_token_ids_.end();
}

bool StopChecker::IsStopToken(int32_t token) const {
  return std::find(stop_token_ids_.begin(), stop_token_ids_.end(), token) != stop_token_ids_.end();
}

StopResult StopChecker::Append(int32_t token, std::string_view text) {
  ++num_output_tokens_;
  StopResult result;
  if (num_output_tokens_ < min_tokens_) {
    result.text = matcher_.FeedUnsearched(text);
  } else if (!ignore_eos_ && IsEos(token)) {
    result.finish = FinishReason::kStop;
    result.text = matcher_.Flush();
    return result;
  } else if (IsStopToken(token)) {
    result.finish = FinishReason::kStop;
    result.stop_token = token;
    result.text = matcher_.Flush();
    return result;
  } else {
    StopStringMatcher::Result match = matcher_.Feed(text);
    result.text = std::move(match.emit);
    if (match.matched.has_value()) {
      result.finish = FinishReason::kStop;
      result.stop_string = matcher_.stops()[*match.matched];
      return result;
    }
  }
  if (max_tokens_.has_value() && num_output_tokens_ >= *max_tokens_) {
    result.finish = FinishReason::kLength;
    result.text += matcher_.Flush();
  }
  return result;
}

}  // namespace r2::sampling

#include "engine/chat/reasoning_parser.h"

#include <algorithm>
#include <utility>

namespace r2::chat {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

size_t PartialTagSuffix(std::string_view text, std::string_view tag) {
  size_t max = std::min(text.size(), tag.size() - 1);
  for (size_t len = max; len > 0; --len) {
    if (text.substr(text.size() - len) == tag.substr(0, len)) return len;
  }
  return 0;
}

bool PromptOpensReasoning(std::string_view prompt, const ReasoningOptions& options) {
  size_t start = prompt.rfind(options.start_tag);
  if (start == std::string_view::npos) return false;
  size_t end = prompt.rfind(options.end_tag);
  return end == std::string_view::npos || end < start;
}

ReasoningParser::ReasoningParser(ReasoningOptions options) : options_(std::move(options)) {}

ReasoningDelta ReasoningParser::Push(std::string_view text) {
  buffer_.append(text);
  ReasoningDelta out;
  Process(false, &out);
  return out;
}

ReasoningDelta ReasoningParser::Finish() {
  ReasoningDelta out;
  Process(true, &out);
  return out;
}

ReasoningDelta ReasoningParser::Parse(std::string_view text, const ReasoningOptions& options) {
  ReasoningParser parser(options);
  ReasoningDelta out = parser.Push(text);
  out.Append(parser.Finish());
  return out;
}

void ReasoningParser::Process(bool final, ReasoningDelta* out) {
  if (state_ == State::kStart && !ProcessStart(final, out)) return;
  if (state_ == State::kReasoning) ProcessReasoning(final, out);
  if (state_ == State::kContent) {
    out->content += buffer_;
    buffer_.clear();
  }
}

// Decides whether the output opens with an explicit start tag. Returns false while undecided.
bool ReasoningParser::ProcessStart(bool final, ReasoningDelta* out) {
  size_t ws = 0;
  while (ws < buffer_.size() && IsSpace(buffer_[ws])) ++ws;
  std::string_view rest = std::string_view(buffer_).substr(ws);
  const std::string& tag = options_.start_tag;
  if (rest.size() >= tag.size() && rest.substr(0, tag.size()) == tag) {
    buffer_.erase(0, ws + tag.size());  // whitespace before the tag belongs to neither part
    state_ = State::kReasoning;
    return true;
  }
  bool may_become_tag = rest.empty() || tag.substr(0, rest.size()) == rest;
  if (may_become_tag && !final) return false;
  state_ = options_.starts_in_reasoning ? State::kReasoning : State::kContent;
  return true;
}

void ReasoningParser::ProcessReasoning(bool final, ReasoningDelta* out) {
  const std::string& tag = options_.end_tag;
  size_t end = buffer_.find(tag);
  if (end != std::string::npos) {
    out->reasoning += buffer_.substr(0, end);
    buffer_.erase(0, end + tag.size());
    state_ = State::kContent;
    return;
  }
  size_t hold = final ? 0 : PartialTagSuffix(buffer_, tag);
  out->reasoning += buffer_.substr(0, buffer_.size() - hold);
  buffer_.erase(0, buffer_.size() - hold);
}

}  // namespace r2::chat

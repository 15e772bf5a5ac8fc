#include "engine/chat/tool_call_parser.h"

#include <utility>

#include "engine/chat/reasoning_parser.h"
#include "nlohmann/json.hpp"

namespace r2::chat {
namespace {

constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kSep = "<｜tool▁sep｜>";

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.substr(0, prefix.size()) == prefix;
}

bool IsJsonObject(std::string_view text) {
  if (text.empty() || text.front() != '{') return false;
  return nlohmann::json::accept(text.begin(), text.end());
}

// Strips a Markdown code fence ("```json\n...\n```") around V3 arguments, if present.
std::string_view StripFence(std::string_view s) {
  s = Trim(s);
  if (StartsWith(s, "```")) {
    size_t nl = s.find('\n');
    s = nl == std::string_view::npos ? std::string_view() : s.substr(nl + 1);
    s = Trim(s);
    if (s.size() >= 3 && s.substr(s.size() - 3) == "```") s.remove_suffix(3);
  }
  return Trim(s);
}

}  // namespace

void ToolCallDelta::Append(ToolCallDelta other) {
  content += other.content;
  for (auto& c : other.calls) calls.push_back(std::move(c));
}

ToolCallParser::ToolCallParser(ToolCallFormat format, std::function<std::string(int)> id_suffix)
    : format_(format), id_suffix_(std::move(id_suffix)) {
  if (!id_suffix_) id_suffix_ = [](int index) { return std::to_string(index); };
}

ToolCallDelta ToolCallParser::Push(std::string_view text) {
  buffer_.append(text);
  ToolCallDelta out;
  Process(false, &out);
  return out;
}

ToolCallDelta ToolCallParser::Finish() {
  ToolCallDelta out;
  Process(true, &out);
  if (state_ == State::kBetweenCalls || state_ == State::kInCall) {
    // The stream ended inside the block. Completed calls stand; an unfinished call is text.
    if (!Trim(pending_ + buffer_).empty()) Fail(&out);
    state_ = State::kContent;
  }
  out.content += buffer_;
  buffer_.clear();
  return out;
}

ToolCallDelta ToolCallParser::Parse(std::string_view text, ToolCallFormat format,
                                    std::function<std::string(int)> id_suffix) {
  ToolCallParser parser(format, std::move(id_suffix));
  ToolCallDelta out = parser.Push(text);
  out.Append(parser.Finish());
  return out;
}

void ToolCallParser::Process(bool final, ToolCallDelta* out) {
  bool progress = true;
  while (progress && !buffer_.empty()) {
    switch (state_) {
      case State::kContent:
        progress = ProcessContent(final, out);
        break;
      case State::kBetweenCalls:
        progress = ProcessBetween(final, out);
        break;
      case State::kInCall:
        progress = ProcessCall(final, out);
        break;
      case State::kFallback:
        out->content += buffer_;
        buffer_.clear();
        progress = false;
        break;
    }
  }
}

// Content until the block opens; holds back a possible partial "<｜tool▁calls▁begin｜>".
bool ToolCallParser::ProcessContent(bool final, ToolCallDelta* out) {
  size_t begin = buffer_.find(kCallsBegin);
  if (begin != std::string::npos) {
    out->content += buffer_.substr(0, begin);
    pending_ = std::string(kCallsBegin);
    buffer_.erase(0, begin + kCallsBegin.size());
    state_ = State::kBetweenCalls;
    return true;
  }
  size_t hold = final ? 0 : PartialTagSuffix(buffer_, kCallsBegin);
  out->content += buffer_.substr(0, buffer_.size() - hold);
  buffer_.erase(0, buffer_.size() - hold);
  return false;
}

// Between calls: whitespace, then a call, or the end of the block.
bool ToolCallParser::ProcessBetween(bool final, ToolCallDelta* out) {
  size_t ws = 0;
  while (ws < buffer_.size() && IsSpace(buffer_[ws])) ++ws;
  std::string_view rest = std::string_view(buffer_).substr(ws);
  if (StartsWith(rest, kCallBegin)) {
    pending_ += buffer_.substr(0, ws + kCallBegin.size());
    buffer_.erase(0, ws + kCallBegin.size());
    state_ = State::kInCall;
    return true;
  }
  if (StartsWith(rest, kCallsEnd)) {
    buffer_.erase(0, ws + kCallsEnd.size());
    pending_.clear();
    state_ = State::kContent;
    return true;
  }
  bool may_match = StartsWith(kCallBegin, rest) || StartsWith(kCallsEnd, rest);
  if (may_match && !final) return false;
  if (rest.empty()) return false;  // only whitespace so far (Finish decides)
  Fail(out);
  return true;
}

// Inside a call: wait for <｜tool▁call▁end｜>, then validate and emit.
bool ToolCallParser::ProcessCall(bool final, ToolCallDelta* out) {
  size_t end = buffer_.find(kCallEnd);
  std::string_view body = std::string_view(buffer_).substr(0, end);
  bool stray = body.find(kCallBegin) != std::string_view::npos ||
               body.find(kCallsEnd) != std::string_view::npos ||
               body.find(kCallsBegin) != std::string_view::npos;
  if (stray) {
    Fail(out);
    return true;
  }
  if (end == std::string::npos) return false;  // wait (Finish handles an unfinished call)
  ToolCall call;
  if (!ParseCallBody(body, &call)) {
    Fail(out);
    return true;
  }
  call.index = next_index_++;
  call.id = "call_" + id_suffix_(call.index);
  out->calls.push_back(std::move(call));
  buffer_.erase(0, end + kCallEnd.size());
  pending_.clear();
  state_ = State::kBetweenCalls;
  return true;
}

bool ToolCallParser::ParseCallBody(std::string_view body, ToolCall* call) const {
  size_t sep = body.find(kSep);
  if (sep == std::string_view::npos) return false;
  std::string_view head = Trim(body.substr(0, sep));
  std::string_view tail = body.substr(sep + kSep.size());
  std::string_view name;
  std::string_view args;
  if (format_ == ToolCallFormat::kDeepSeekV3) {
    if (head != "function") return false;
    size_t nl = tail.find('\n');
    if (nl == std::string_view::npos) return false;
    name = Trim(tail.substr(0, nl));
    args = StripFence(tail.substr(nl + 1));
  } else {
    name = head;
    args = Trim(tail);
  }
  if (name.empty() || name.find_first_of(" \t\n\r") != std::string_view::npos) return false;
  if (!IsJsonObject(args)) return false;
  call->name = std::string(name);
  call->arguments = std::string(args);
  return true;
}

// The block (from its start, or from the last completed call) is not a valid tool call: it and
// everything after it are content.
void ToolCallParser::Fail(ToolCallDelta* out) {
  out->content += pending_;
  out->content += buffer_;
  pending_.clear();
  buffer_.clear();
  state_ = State::kFallback;
}

}  // namespace r2::chat

#include "engine/chat/tool_call_parser.h"

#include <algorithm>
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

ToolCallParser::ToolCallParser(ToolCallFormat format, std::function<std::string(int)> id_suffix,
                               bool stream_arguments)
    : format_(format), id_suffix_(std::move(id_suffix)), stream_arguments_(stream_arguments) {
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
  if (state_ == State::kInCall && announced_) {
    // The stream ended inside announced arguments: the call stands with what it has.
    StreamArguments(buffer_.size(), &out);
    EndStreamedCall();
    buffer_.clear();
    state_ = State::kContent;
  }
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
        progress = stream_arguments_ ? StreamCall(final, out) : ProcessCall(final, out);
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

int ToolCallParser::ParseHeader(std::string_view body, bool complete, std::string* name,
                                size_t* args_at, bool* fenced) const {
  const int more = complete ? -1 : 0;  // what "incomplete" means once the call has ended
  const size_t sep = body.find(kSep);
  if (sep == std::string_view::npos) return more;
  const std::string_view head = Trim(body.substr(0, sep));
  const size_t tail_at = sep + kSep.size();
  std::string_view found_name;
  *fenced = false;
  if (format_ == ToolCallFormat::kDeepSeekV3) {
    if (head != "function") return -1;
    const size_t nl = body.find('\n', tail_at);
    if (nl == std::string_view::npos) return more;
    found_name = Trim(body.substr(tail_at, nl - tail_at));
    size_t i = nl + 1;
    while (i < body.size() && IsSpace(body[i])) ++i;
    const std::string_view rest = body.substr(i);
    if (StartsWith(rest, "```")) {
      const size_t fence_nl = body.find('\n', i);
      if (fence_nl == std::string_view::npos) {
        if (!complete) return 0;
        i = body.size();  // "```json" and nothing else: empty arguments
      } else {
        i = fence_nl + 1;
      }
      *fenced = true;
    } else if (!complete && (rest.empty() || StartsWith("```", rest))) {
      return 0;  // a fence may still open here
    }
    *args_at = i;
  } else {
    found_name = head;
    *args_at = tail_at;
  }
  if (found_name.empty() || found_name.find_first_of(" \t\n\r") != std::string_view::npos) {
    return -1;
  }
  *name = std::string(found_name);
  return 1;
}

// stream_arguments: a call's header is held until complete, then announced; its arguments then
// stream until <｜tool▁call▁end｜>.
bool ToolCallParser::StreamCall(bool final, ToolCallDelta* out) {
  size_t end = buffer_.find(kCallEnd);
  const std::string_view body = std::string_view(buffer_).substr(0, end);
  size_t stray = std::string_view::npos;
  for (std::string_view tag : {kCallBegin, kCallsEnd, kCallsBegin}) {
    stray = std::min(stray, body.find(tag));
  }
  if (!announced_) {
    if (stray != std::string_view::npos) {
      Fail(out);
      return true;
    }
    std::string name;
    size_t args_at = 0;
    const int header = ParseHeader(body, end != std::string::npos, &name, &args_at, &fenced_);
    if (header < 0) {
      Fail(out);
      return true;
    }
    if (header == 0) return false;  // wait (Finish handles an unfinished call)
    ToolCall call;
    call.index = next_index_++;
    call.id = "call_" + id_suffix_(call.index);
    call.name = std::move(name);
    out->calls.push_back(std::move(call));
    buffer_.erase(0, args_at);
    pending_.clear();
    announced_ = true;
    args_started_ = false;
    return true;
  }
  if (stray != std::string_view::npos) {
    // A tag that cannot be inside arguments: the call ends here, the rest is content.
    StreamArguments(stray, out);  // buffer_ then starts at the stray tag
    EndStreamedCall();
    Fail(out);
    return true;
  }
  if (end == std::string::npos) {
    StreamArguments(std::string::npos, out);
    return false;
  }
  StreamArguments(end, out);
  EndStreamedCall();
  buffer_.erase(0, kCallEnd.size());
  state_ = State::kBetweenCalls;
  return true;
}

// Emits the arguments in buffer_ before `end` and erases buffer_ up to `end`; with npos (the
// call's end is not in sight) emits and erases only what cannot be trailing whitespace, the
// closing fence or the start of a tag.
void ToolCallParser::StreamArguments(size_t end, ToolCallDelta* out) {
  const size_t limit = std::min(end, buffer_.size());
  size_t start = 0;
  if (!args_started_) {  // leading whitespace is not part of the arguments
    while (start < limit && IsSpace(buffer_[start])) ++start;
    args_started_ = start < limit;
  }
  size_t stop = limit;
  if (end == std::string::npos) {
    size_t hold = 0;
    for (std::string_view tag : {kCallEnd, kCallBegin, kCallsEnd, kCallsBegin}) {
      hold = std::max(hold, PartialTagSuffix(buffer_, tag));
    }
    stop = buffer_.size() - hold;
    while (stop > start && (IsSpace(buffer_[stop - 1]) || buffer_[stop - 1] == '`')) --stop;
  } else {
    std::string_view args = std::string_view(buffer_).substr(start, limit - start);
    while (!args.empty() && IsSpace(args.back())) args.remove_suffix(1);
    if (fenced_ && args.size() >= 3 && args.substr(args.size() - 3) == "```") {
      args.remove_suffix(3);
      while (!args.empty() && IsSpace(args.back())) args.remove_suffix(1);
    }
    stop = start + args.size();
  }
  if (stop > start) {
    ToolCall piece;
    piece.index = next_index_ - 1;
    piece.arguments = buffer_.substr(start, stop - start);
    out->calls.push_back(std::move(piece));
  }
  buffer_.erase(0, end == std::string::npos ? std::max(start, stop) : limit);
}

void ToolCallParser::EndStreamedCall() {
  announced_ = false;
  args_started_ = false;
  fenced_ = false;
  pending_.clear();
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

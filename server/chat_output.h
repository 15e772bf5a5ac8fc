#pragma once
// Protocol-neutral reading of a chat request's output, shared by the OpenAI encoder (HTTP) and
// the gRPC Chat service: per choice, the engine's detokenized text is split into reasoning and
// content (<think>, when the plan says so), tool calls are parsed out of the content (when the
// plan says so), and a choice's end is checked against tool_choice.
//
// One parser per request, used from one thread. Feed it every engine::ChoiceDelta in order; each
// gives a ChatPiece for the front end to put on the wire. finish is set on the choice's terminal
// delta: "stop", "length", "tool_calls" (a stop after at least one parsed call), "abort" or
// "error". error() holds the request's first failure: Internal for an engine error, or
// FailedPrecondition with code "tool_call_missing" when tool_choice required / a named function
// was not honoured (this server does not constrain decoding, so it reports the miss).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/chat/reasoning_parser.h"
#include "engine/chat/tool_call_parser.h"
#include "engine/engine.h"
#include "server/openai_prompt.h"

namespace r2::server {

struct ChatPiece {
  std::string reasoning;
  std::string content;
  std::vector<chat::ToolCall> calls;  // completed calls (or, streaming arguments, call pieces)
  std::string finish;                 // set on the choice's terminal delta
};

class ChatOutputParser {
 public:
  // stream_tool_arguments: tool calls come as an announcing ToolCall (index, id, name) followed
  // by argument pieces (chat::ToolCallParser's stream_arguments), for streamed responses.
  ChatOutputParser(OutputPlan plan, int32_t n, bool stream_tool_arguments = false);

  // The piece for `delta`; nullopt when its index is outside [0, n) or its choice has ended.
  std::optional<ChatPiece> Push(const engine::ChoiceDelta& delta);

  const absl::Status& error() const { return error_; }
  const OutputPlan& plan() const { return plan_; }
  int32_t n() const { return static_cast<int32_t>(choices_.size()); }

 private:
  struct Choice {
    std::unique_ptr<chat::ReasoningParser> reasoning;
    std::unique_ptr<chat::ToolCallParser> tools;
    bool named_call_seen = false;  // a call of plan_.tool_choice_name was parsed
    bool ended = false;
  };

  ChatPiece Parse(Choice& c, const std::string& text, bool final);
  std::string Finish(Choice& c, const engine::ChoiceDelta& d);

  OutputPlan plan_;
  std::vector<Choice> choices_;
  absl::Status error_;
};

}  // namespace r2::server

#include "server/chat_output.h"

#include "absl/strings/str_cat.h"
#include "server/openai_error.h"
#include "server/openai_response.h"

namespace r2::server {

ChatOutputParser::ChatOutputParser(OutputPlan plan, int32_t n, bool stream_tool_arguments)
    : plan_(std::move(plan)), choices_(static_cast<size_t>(std::max(n, 0))) {
  for (Choice& c : choices_) {
    if (plan_.reasoning) {
      chat::ReasoningOptions options;
      options.starts_in_reasoning = plan_.starts_in_reasoning;
      c.reasoning = std::make_unique<chat::ReasoningParser>(options);
    }
    if (plan_.parse_tools) {
      c.tools = std::make_unique<chat::ToolCallParser>(
          plan_.tool_call_format, [](int) { return NewResponseId(""); }, stream_tool_arguments);
    }
  }
}

std::optional<ChatPiece> ChatOutputParser::Push(const engine::ChoiceDelta& d) {
  if (d.index < 0 || d.index >= n() || choices_[d.index].ended) return std::nullopt;
  Choice& c = choices_[d.index];
  const bool final = d.finish_reason != engine::FinishReason::kNone;
  ChatPiece piece = Parse(c, d.text, final);
  for (const chat::ToolCall& call : piece.calls) {
    c.named_call_seen |= call.name == plan_.tool_choice_name;
  }
  if (final) {
    c.ended = true;
    piece.finish = Finish(c, d);
  }
  return piece;
}

ChatPiece ChatOutputParser::Parse(Choice& c, const std::string& text, bool final) {
  chat::ReasoningDelta rd;
  if (c.reasoning) {
    rd = c.reasoning->Push(text);
    if (final) rd.Append(c.reasoning->Finish());
  } else {
    rd.content = text;
  }
  ChatPiece piece;
  piece.reasoning = std::move(rd.reasoning);
  if (!c.tools) {
    piece.content = std::move(rd.content);
    return piece;
  }
  chat::ToolCallDelta td = c.tools->Push(rd.content);
  if (final) td.Append(c.tools->Finish());
  piece.content = std::move(td.content);
  piece.calls = std::move(td.calls);
  return piece;
}

std::string ChatOutputParser::Finish(Choice& c, const engine::ChoiceDelta& d) {
  const int calls = c.tools ? c.tools->call_count() : 0;
  if (d.finish_reason == engine::FinishReason::kError) {
    if (error_.ok()) error_ = absl::InternalError(absl::StrCat("generation failed: ", d.error));
    return "error";
  }
  const bool completed = d.finish_reason == engine::FinishReason::kStop ||
                         d.finish_reason == engine::FinishReason::kLength;
  const bool demanded =
      plan_.tool_choice == ToolChoice::kRequired || plan_.tool_choice == ToolChoice::kNamed;
  if (completed && demanded && error_.ok()) {
    const bool matched = plan_.tool_choice == ToolChoice::kRequired ? calls > 0 : c.named_call_seen;
    if (!matched) {
      const std::string want = plan_.tool_choice == ToolChoice::kRequired
                                   ? std::string("a tool call (tool_choice \"required\")")
                                   : absl::StrCat("a call of \"", plan_.tool_choice_name, "\"");
      error_ = WithCode(absl::FailedPreconditionError(absl::StrCat(
                            "the model ended without ", want,
                            "; this server does not constrain decoding to force tool calls")),
                        "tool_call_missing");
    }
  }
  return FinishReasonText(d.finish_reason, calls > 0);
}

}  // namespace r2::server

// The chat.completion / chat.completion.chunk encoder (see openai_response.h).
#include <optional>

#include "absl/strings/str_cat.h"
#include "engine/chat/reasoning_parser.h"
#include "engine/chat/tool_call_parser.h"
#include "server/openai_error.h"
#include "server/openai_response.h"

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;

Json BytesJson(std::string_view bytes) {
  Json out = Json::array();
  for (unsigned char b : bytes) out.push_back(static_cast<int>(b));
  return out;
}

// What one engine delta of one choice turns into after the reasoning and tool-call parsers.
struct ChatPiece {
  std::string reasoning;
  std::string content;
  std::vector<chat::ToolCall> calls;
};

struct ChatChoice {
  std::unique_ptr<chat::ReasoningParser> reasoning_parser;
  std::unique_ptr<chat::ToolCallParser> tool_parser;
  std::string content;
  std::string reasoning;
  std::vector<chat::ToolCall> calls;
  Json logprobs = Json::array();
  std::string finish;
  bool ended = false;
};

class ChatEncoder : public ResponseEncoder {
 public:
  ChatEncoder(ResponseMeta meta, OutputPlan plan, const tokenizer::Tokenizer* tokenizer)
      : meta_(std::move(meta)), plan_(std::move(plan)), tokenizer_(tokenizer), choices_(meta_.n) {
    for (ChatChoice& c : choices_) {
      if (plan_.reasoning) {
        chat::ReasoningOptions options;
        options.starts_in_reasoning = plan_.starts_in_reasoning;
        c.reasoning_parser = std::make_unique<chat::ReasoningParser>(options);
      }
      if (plan_.parse_tools) {
        c.tool_parser = std::make_unique<chat::ToolCallParser>(
            plan_.tool_call_format, [](int) { return NewResponseId(""); });
      }
    }
  }

  void Begin(std::vector<Json>* events) override {
    for (int32_t i = 0; i < meta_.n; ++i) {
      Json delta{{"role", "assistant"}, {"content", ""}};
      events->push_back(Chunk(i, std::move(delta), Json(), ""));
    }
  }

  void Add(const engine::RequestOutput& output, std::vector<Json>* events) override {
    for (const engine::ChoiceDelta& d : output.choices) {
      if (d.index < 0 || d.index >= meta_.n || choices_[d.index].ended) continue;
      AddChoice(d, events);
    }
    if (!output.usage) return;
    usage_ = *output.usage;
    if (events != nullptr && meta_.include_usage && error_.ok()) {
      Json chunk = Header("chat.completion.chunk");
      chunk["choices"] = Json::array();
      chunk["usage"] = UsageJson(usage_);
      events->push_back(std::move(chunk));
    }
  }

  absl::StatusOr<Json> Response() override {
    if (!error_.ok()) return error_;
    Json body = Header("chat.completion");
    body["choices"] = Json::array();
    for (size_t i = 0; i < choices_.size(); ++i) body["choices"].push_back(ChoiceJson(i));
    body["usage"] = UsageJson(usage_);
    return body;
  }

 private:
  void AddChoice(const engine::ChoiceDelta& d, std::vector<Json>* events) {
    ChatChoice& c = choices_[d.index];
    const bool final = d.finish_reason != engine::FinishReason::kNone;
    ChatPiece piece = Parse(c, d.text, final);
    Json logprobs = LogprobsContent(d);
    std::string finish;
    if (final) {
      c.ended = true;
      finish = Finish(c, d, piece);
    }
    if (events == nullptr) {
      c.content += piece.content;
      c.reasoning += piece.reasoning;
      for (chat::ToolCall& call : piece.calls) c.calls.push_back(std::move(call));
      for (Json& lp : logprobs) c.logprobs.push_back(std::move(lp));
      c.finish = finish;
      return;
    }
    if (d.finish_reason == engine::FinishReason::kError || !error_.ok()) return;
    StreamPiece(d.index, std::move(piece), std::move(logprobs), finish, events);
  }

  ChatPiece Parse(ChatChoice& c, const std::string& text, bool final) {
    chat::ReasoningDelta rd;
    if (c.reasoning_parser) {
      rd = c.reasoning_parser->Push(text);
      if (final) rd.Append(c.reasoning_parser->Finish());
    } else {
      rd.content = text;
    }
    ChatPiece piece;
    piece.reasoning = std::move(rd.reasoning);
    if (!c.tool_parser) {
      piece.content = std::move(rd.content);
      return piece;
    }
    chat::ToolCallDelta td = c.tool_parser->Push(rd.content);
    if (final) td.Append(c.tool_parser->Finish());
    piece.content = std::move(td.content);
    piece.calls = std::move(td.calls);
    return piece;
  }

  // The finish reason text; records an error when the choice failed.
  std::string Finish(ChatChoice& c, const engine::ChoiceDelta& d, const ChatPiece& piece) {
    const int calls = c.tool_parser ? c.tool_parser->call_count() : 0;
    if (d.finish_reason == engine::FinishReason::kError) {
      error_ = absl::InternalError(absl::StrCat("generation failed: ", d.error));
      return "error";
    }
    if (d.finish_reason == engine::FinishReason::kStop ||
        d.finish_reason == engine::FinishReason::kLength) {
      CheckToolChoice(c, piece, calls);
    }
    return FinishReasonText(d.finish_reason, calls > 0);
  }

  void CheckToolChoice(const ChatChoice& c, const ChatPiece& piece, int calls) {
    if (plan_.tool_choice != ToolChoice::kRequired && plan_.tool_choice != ToolChoice::kNamed) {
      return;
    }
    bool matched = plan_.tool_choice == ToolChoice::kRequired && calls > 0;
    if (plan_.tool_choice == ToolChoice::kNamed) {
      for (const auto* list : {&c.calls, &piece.calls}) {
        for (const chat::ToolCall& call : *list) matched |= call.name == plan_.tool_choice_name;
      }
    }
    if (matched) return;
    const std::string want = plan_.tool_choice == ToolChoice::kRequired
                                 ? std::string("a tool call (tool_choice \"required\")")
                                 : absl::StrCat("a call of \"", plan_.tool_choice_name, "\"");
    error_ = WithCode(absl::FailedPreconditionError(absl::StrCat(
                          "the model ended without ", want,
                          "; this server does not constrain decoding to force tool calls")),
                      "tool_call_missing");
  }

  void StreamPiece(int32_t index, ChatPiece piece, Json logprobs, const std::string& finish,
                   std::vector<Json>* events) {
    Json delta = Json::object();
    if (!piece.reasoning.empty()) {
      delta["reasoning_content"] = piece.reasoning;
      delta["reasoning"] = piece.reasoning;
    }
    if (!piece.content.empty()) delta["content"] = piece.content;
    const bool has_logprobs = meta_.logprobs && !logprobs.empty();
    if (!delta.empty() || has_logprobs || (piece.calls.empty() && !finish.empty())) {
      events->push_back(Chunk(index, std::move(delta), LogprobsObject(std::move(logprobs)),
                              piece.calls.empty() ? finish : ""));
    }
    for (size_t k = 0; k < piece.calls.size(); ++k) {
      const chat::ToolCall& call = piece.calls[k];
      Json head{{"index", call.index},
                {"id", call.id},
                {"type", "function"},
                {"function", {{"name", call.name}, {"arguments", ""}}}};
      events->push_back(Chunk(index, Json{{"tool_calls", Json::array({head})}}, Json(), ""));
      Json args{{"index", call.index}, {"function", {{"arguments", call.arguments}}}};
      const bool last = k + 1 == piece.calls.size();
      events->push_back(
          Chunk(index, Json{{"tool_calls", Json::array({args})}}, Json(), last ? finish : ""));
    }
  }

  Json LogprobsContent(const engine::ChoiceDelta& d) const {
    Json content = Json::array();
    if (!meta_.logprobs) return content;
    for (size_t k = 0; k < d.token_ids.size() && k < d.logprobs.size(); ++k) {
      const std::string token = LogprobTokenText(tokenizer_, d.token_ids[k]);
      Json entry{{"token", token},
                 {"logprob", d.logprobs[k].logprob},
                 {"bytes", BytesJson(token)},
                 {"top_logprobs", Json::array()}};
      for (const sampling::TokenLogprob& t : d.logprobs[k].top_logprobs()) {
        const std::string alt = LogprobTokenText(tokenizer_, t.token);
        entry["top_logprobs"].push_back(
            Json{{"token", alt}, {"logprob", t.logprob}, {"bytes", BytesJson(alt)}});
      }
      content.push_back(std::move(entry));
    }
    return content;
  }

  Json LogprobsObject(Json content) const {
    if (!meta_.logprobs) return Json();
    return Json{{"content", std::move(content)}};
  }

  Json ChoiceJson(size_t i) const {
    const ChatChoice& c = choices_[i];
    Json message{{"role", "assistant"}};
    message["content"] = c.content.empty() && !c.calls.empty() ? Json() : Json(c.content);
    if (plan_.reasoning) {
      message["reasoning_content"] = c.reasoning.empty() ? Json() : Json(c.reasoning);
      message["reasoning"] = message["reasoning_content"];
    }
    if (!c.calls.empty()) {
      message["tool_calls"] = Json::array();
      for (const chat::ToolCall& call : c.calls) {
        message["tool_calls"].push_back(
            Json{{"id", call.id},
                 {"type", "function"},
                 {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
      }
    }
    Json choice{{"index", i}, {"message", std::move(message)}};
    choice["logprobs"] = LogprobsObject(c.logprobs);
    choice["finish_reason"] = c.finish.empty() ? Json() : Json(c.finish);
    return choice;
  }

  Json Header(const char* object) const {
    Json j;
    j["id"] = meta_.id;
    j["object"] = object;
    j["created"] = meta_.created;
    j["model"] = meta_.model;
    return j;
  }

  Json Chunk(int32_t index, Json delta, Json logprobs, const std::string& finish) const {
    Json chunk = Header("chat.completion.chunk");
    Json choice{{"index", index}, {"delta", std::move(delta)}, {"logprobs", std::move(logprobs)}};
    choice["finish_reason"] = finish.empty() ? Json() : Json(finish);
    chunk["choices"] = Json::array({std::move(choice)});
    if (meta_.include_usage) chunk["usage"] = Json();
    return chunk;
  }

  ResponseMeta meta_;
  OutputPlan plan_;
  const tokenizer::Tokenizer* tokenizer_;
  std::vector<ChatChoice> choices_;
  engine::Usage usage_;
};

}  // namespace

std::unique_ptr<ResponseEncoder> MakeChatEncoder(ResponseMeta meta, OutputPlan plan,
                                                 const tokenizer::Tokenizer* tokenizer) {
  return std::make_unique<ChatEncoder>(std::move(meta), std::move(plan), tokenizer);
}

}  // namespace r2::server

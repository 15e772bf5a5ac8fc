// The chat.completion / chat.completion.chunk encoder (see openai_response.h).
#include <optional>

#include "absl/strings/str_cat.h"
#include "server/chat_output.h"
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

// What the encoder accumulates for one choice (non-streaming responses).
struct ChatChoice {
  std::string content;
  std::string reasoning;
  std::vector<chat::ToolCall> calls;
  Json logprobs = Json::array();
  std::string finish;
};

class ChatEncoder : public ResponseEncoder {
 public:
  ChatEncoder(ResponseMeta meta, OutputPlan plan, const tokenizer::Tokenizer* tokenizer)
      : meta_(std::move(meta)),
        plan_(plan),
        tokenizer_(tokenizer),
        parser_(std::move(plan), meta_.n, /*stream_tool_arguments=*/meta_.stream),
        choices_(meta_.n) {}

  void Begin(std::vector<Json>* events) override {
    for (int32_t i = 0; i < meta_.n; ++i) {
      Json delta{{"role", "assistant"}, {"content", ""}};
      events->push_back(Chunk(i, std::move(delta), Json(), ""));
    }
  }

  void Add(const engine::RequestOutput& output, std::vector<Json>* events) override {
    for (const engine::ChoiceDelta& d : output.choices) {
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
    std::optional<ChatPiece> piece = parser_.Push(d);
    if (!piece) return;
    if (!parser_.error().ok()) error_ = parser_.error();
    Json logprobs = LogprobsContent(d);
    if (events == nullptr) {
      ChatChoice& c = choices_[d.index];
      c.content += piece->content;
      c.reasoning += piece->reasoning;
      for (chat::ToolCall& call : piece->calls) c.calls.push_back(std::move(call));
      for (Json& lp : logprobs) c.logprobs.push_back(std::move(lp));
      c.finish = piece->finish;
      return;
    }
    if (d.finish_reason == engine::FinishReason::kError || !error_.ok()) return;
    const std::string finish = piece->finish;
    StreamPiece(d.index, *std::move(piece), std::move(logprobs), finish, events);
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
    // Tool calls as OpenAI streams them: a call's first delta carries index, id, type and the
    // name (arguments ""), later deltas pieces of function.arguments (consecutive pieces of one
    // call in this engine delta go out as one).
    std::vector<Json> tool_deltas;
    for (const chat::ToolCall& call : piece.calls) {
      if (!call.id.empty()) {
        tool_deltas.push_back(Json{{"index", call.index},
                                   {"id", call.id},
                                   {"type", "function"},
                                   {"function", {{"name", call.name}, {"arguments", ""}}}});
        if (call.arguments.empty()) continue;
      } else if (!tool_deltas.empty() && !tool_deltas.back().contains("id") &&
                 tool_deltas.back()["index"] == call.index) {
        tool_deltas.back()["function"]["arguments"] =
            tool_deltas.back()["function"]["arguments"].get<std::string>() + call.arguments;
        continue;
      }
      tool_deltas.push_back(
          Json{{"index", call.index}, {"function", {{"arguments", call.arguments}}}});
    }
    for (size_t k = 0; k < tool_deltas.size(); ++k) {
      const bool last = k + 1 == tool_deltas.size();
      events->push_back(Chunk(index, Json{{"tool_calls", Json::array({std::move(tool_deltas[k])})}},
                              Json(), last ? finish : ""));
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
  ChatOutputParser parser_;
  std::vector<ChatChoice> choices_;
  engine::Usage usage_;
};

}  // namespace

std::unique_ptr<ResponseEncoder> MakeChatEncoder(ResponseMeta meta, OutputPlan plan,
                                                 const tokenizer::Tokenizer* tokenizer) {
  return std::make_unique<ChatEncoder>(std::move(meta), std::move(plan), tokenizer);
}

}  // namespace r2::server

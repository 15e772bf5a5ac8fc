#include "server/openai_response.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/openai_error.h"

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;

// text_completion: choices of {index, text, logprobs, finish_reason}.
class CompletionEncoder : public ResponseEncoder {
 public:
  CompletionEncoder(ResponseMeta meta, const tokenizer::Tokenizer* tokenizer)
      : meta_(std::move(meta)), tokenizer_(tokenizer), choices_(meta_.n) {}

  void Add(const engine::RequestOutput& output, std::vector<Json>* events) override {
    for (const engine::ChoiceDelta& d : output.choices) {
      if (d.index < 0 || d.index >= meta_.n) continue;
      Choice& c = choices_[d.index];
      Json logprobs = LogprobsPiece(d, &c.text_offset);
      if (d.finish_reason == engine::FinishReason::kError) {
        error_ = absl::InternalError(absl::StrCat("generation failed: ", d.error));
      }
      const std::string finish = FinishReasonText(d.finish_reason, false);
      if (events != nullptr) {
        if (d.text.empty() && d.token_ids.empty() && finish.empty()) continue;
        if (d.finish_reason == engine::FinishReason::kError) continue;
        events->push_back(Chunk(d.index, d.text, std::move(logprobs), finish));
        continue;
      }
      c.text += d.text;
      Append(std::move(logprobs), &c.logprobs);
      if (!finish.empty()) c.finish = finish;
    }
    if (!output.usage) return;
    usage_ = *output.usage;
    if (events != nullptr && meta_.include_usage && error_.ok()) {
      Json chunk = Header();
      chunk["choices"] = Json::array();
      chunk["usage"] = UsageJson(usage_);
      events->push_back(std::move(chunk));
    }
  }

  absl::StatusOr<Json> Response() override {
    if (!error_.ok()) return error_;
    Json body = Header();
    body["choices"] = Json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
      const Choice& c = choices_[i];
      Json choice;
      choice["index"] = i;
      choice["text"] = c.text;
      choice["logprobs"] = meta_.logprobs ? c.logprobs : Json();
      choice["finish_reason"] = c.finish.empty() ? Json() : Json(c.finish);
      body["choices"].push_back(std::move(choice));
    }
    body["usage"] = UsageJson(usage_);
    return body;
  }

 private:
  struct Choice {
    std::string text;
    Json logprobs = Json{{"tokens", Json::array()},
                         {"token_logprobs", Json::array()},
                         {"top_logprobs", Json::array()},
                         {"text_offset", Json::array()}};
    std::string finish;
    int64_t text_offset = 0;
  };

  Json Header() const {
    Json j;
    j["id"] = meta_.id;
    j["object"] = "text_completion";
    j["created"] = meta_.created;
    j["model"] = meta_.model;
    return j;
  }

  Json Chunk(int32_t index, const std::string& text, Json logprobs,
             const std::string& finish) const {
    Json chunk = Header();
    Json choice;
    choice["index"] = index;
    choice["text"] = text;
    choice["logprobs"] = meta_.logprobs ? std::move(logprobs) : Json();
    choice["finish_reason"] = finish.empty() ? Json() : Json(finish);
    chunk["choices"] = Json::array({std::move(choice)});
    if (meta_.include_usage) chunk["usage"] = Json();
    return chunk;
  }

  Json LogprobsPiece(const engine::ChoiceDelta& d, int64_t* offset) const {
    Json piece{{"tokens", Json::array()},
               {"token_logprobs", Json::array()},
               {"top_logprobs", Json::array()},
               {"text_offset", Json::array()}};
    if (!meta_.logprobs) return piece;
    for (size_t k = 0; k < d.token_ids.size() && k < d.logprobs.size(); ++k) {
      const std::string token = LogprobTokenText(tokenizer_, d.token_ids[k]);
      piece["tokens"].push_back(token);
      piece["token_logprobs"].push_back(d.logprobs[k].logprob);
      Json top = Json::object();
      for (const sampling::TokenLogprob& t : d.logprobs[k].top_logprobs()) {
        top[LogprobTokenText(tokenizer_, t.token)] = t.logprob;
      }
      if (meta_.top_logprobs > 0) top[token] = d.logprobs[k].logprob;
      piece["top_logprobs"].push_back(std::move(top));
      piece["text_offset"].push_back(*offset);
      *offset += static_cast<int64_t>(token.size());
    }
    return piece;
  }

  static void Append(Json piece, Json* into) {
    for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
      for (Json& v : piece[key]) (*into)[key].push_back(std::move(v));
    }
  }

  ResponseMeta meta_;
  const tokenizer::Tokenizer* tokenizer_;
  std::vector<Choice> choices_;
  engine::Usage usage_;
};

}  // namespace

std::string NewResponseId(absl::string_view prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrCat(prefix, absl::StrFormat("%016x%08x", rng(), rng() & 0xffffffffu));
}

Json UsageJson(const engine::Usage& usage) {
  Json j;
  j["prompt_tokens"] = usage.prompt_tokens;
  j["completion_tokens"] = usage.completion_tokens;
  j["total_tokens"] = usage.prompt_tokens + usage.completion_tokens;
  j["prompt_tokens_details"] = Json{{"cached_tokens", usage.cached_tokens}};
  return j;
}

std::string LogprobTokenText(const tokenizer::Tokenizer* tokenizer, int32_t token) {
  if (tokenizer == nullptr) return absl::StrCat("token_id:", token);
  return std::string(tokenizer->TokenBytes(token));
}

std::string FinishReasonText(engine::FinishReason reason, bool made_tool_calls) {
  switch (reason) {
    case engine::FinishReason::kStop:
      return made_tool_calls ? "tool_calls" : "stop";
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kAbort:
      return "abort";
    case engine::FinishReason::kError:
      return "error";
    default:
      return "";
  }
}

std::unique_ptr<ResponseEncoder> MakeCompletionEncoder(ResponseMeta meta,
                                                       const tokenizer::Tokenizer* tokenizer) {
  return std::make_unique<CompletionEncoder>(std::move(meta), tokenizer);
}

}  // namespace r2::server

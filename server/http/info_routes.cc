// GET /health, /v1/models, /metrics, /version; POST /tokenize, /detokenize (vLLM shapes).
#include "absl/strings/str_cat.h"
#include "server/http/router.h"
#include "server/openai_fields.h"
#include "server/openai_request.h"

namespace r2::server::http {
namespace {

using Json = nlohmann::ordered_json;

void HandleHealth(const std::shared_ptr<HttpSession>& session) {
  ServerContext& context = session->context();
  if (context.ready()) return session->ReplyText(200, "");
  const char* why = context.draining()            ? "shutting down"
                    : context.engine() == nullptr ? "loading"
                                                  : "engine unhealthy";
  session->ReplyError(ApiErrorFromStatus(absl::UnavailableError(why)));
}

void HandleModels(const std::shared_ptr<HttpSession>& session) {
  ServerContext& context = session->context();
  const ServedModel* m = context.model();
  // `root` is the checkpoint directory once loaded, as in vLLM: `vllm bench serve` without
  // --model/--tokenizer loads its tokenizer from it.
  const std::string& root =
      m != nullptr && !m->model_dir().empty() ? m->model_dir() : context.model_name();
  Json model{{"id", context.model_name()}, {"object", "model"}, {"created", context.started_unix()},
             {"owned_by", "r2serve"},      {"root", root},      {"parent", nullptr}};
  if (m != nullptr) model["max_model_len"] = m->max_model_len();
  session->ReplyJson(200, Json{{"object", "list"}, {"data", Json::array({model})}});
}

void HandleMetrics(const std::shared_ptr<HttpSession>& session) {
  ServerContext& context = session->context();
  engine::Engine* engine = context.engine();
  std::optional<engine::EngineStats> stats;
  if (engine != nullptr) {
    stats = engine->stats();
    context.metrics().SampleIteration(*stats);
  }
  session->ReplyText(200, context.metrics().Render(stats ? &*stats : nullptr, context.ready()),
                     "text/plain; version=0.0.4; charset=utf-8");
}

void HandleVersion(const std::shared_ptr<HttpSession>& session) {
  session->ReplyJson(200, Json{{"version", "0.1.0"}});
}

// The served model with a tokenizer, else answers (503 / 400) and returns null.
const ServedModel* TokenizerModel(const std::shared_ptr<HttpSession>& session) {
  const ServedModel* model = session->context().model();
  if (model == nullptr) {
    session->ReplyError(ApiErrorFromStatus(absl::UnavailableError("the model is loading")));
    return nullptr;
  }
  if (model->tokenizer() == nullptr) {
    session->ReplyError(ApiErrorFromStatus(InvalidParam(
        "model", "this model has no tokenizer (tokenizer.json)", "tokenizer_unavailable")));
    return nullptr;
  }
  return model;
}

absl::StatusOr<std::string> TokenizeText(const ServedModel& model, const Json& body,
                                         bool* add_special) {
  const FieldReader f(body);
  if (f.Get("messages") != nullptr) {
    absl::StatusOr<ChatCompletionRequest> chat = DecodeChatCompletionRequest(body);
    if (!chat.ok()) return chat.status();
    *add_special = false;
    return RenderChatPrompt(model, *chat);
  }
  std::string prompt;
  absl::StatusOr<bool> got = f.String("prompt", &prompt);
  if (!got.ok()) return got.status();
  if (!*got)
    return InvalidParam("prompt", "prompt or messages is required", "missing_required_parameter");
  return prompt;
}

void HandleTokenize(const std::shared_ptr<HttpSession>& session) {
  const ServedModel* model = TokenizerModel(session);
  if (model == nullptr) return;
  absl::StatusOr<Json> body = ParseJsonBody(session->request().body());
  if (!body.ok()) return session->ReplyError(ApiErrorFromStatus(body.status()));
  std::string requested;
  absl::StatusOr<bool> got = FieldReader(*body).String("model", &requested);
  absl::Status status = got.ok() ? CheckModelName(*model, requested) : got.status();
  bool add_special = true;
  absl::StatusOr<std::string> text = TokenizeText(*model, *body, &add_special);
  if (status.ok()) status = text.status();
  if (status.ok()) {
    absl::StatusOr<bool> flag = FieldReader(*body).Bool("add_special_tokens", &add_special);
    status = flag.status();
  }
  if (!status.ok()) return session->ReplyError(ApiErrorFromStatus(status));
  absl::StatusOr<std::vector<int32_t>> ids = model->tokenizer()->Encode(*text, add_special);
  if (!ids.ok())
    return session->ReplyError(ApiErrorFromStatus(InvalidParam("prompt", ids.status().message())));
  Json out{{"count", ids->size()},
           {"max_model_len", model->max_model_len()},
           {"tokens", *ids},
           {"token_strs", nullptr}};
  bool want_strs = false;
  (void)FieldReader(*body).Bool("return_token_strs", &want_strs);
  if (want_strs) {
    out["token_strs"] = Json::array();
    for (int32_t id : *ids) out["token_strs"].push_back(model->tokenizer()->IdToToken(id));
  }
  session->ReplyJson(200, out);
}

void HandleDetokenize(const std::shared_ptr<HttpSession>& session) {
  const ServedModel* model = TokenizerModel(session);
  if (model == nullptr) return;
  absl::StatusOr<Json> body = ParseJsonBody(session->request().body());
  if (!body.ok()) return session->ReplyError(ApiErrorFromStatus(body.status()));
  const Json* tokens = FieldReader(*body).Get("tokens");
  if (tokens == nullptr || !tokens->is_array()) {
    return session->ReplyError(ApiErrorFromStatus(
        InvalidParam("tokens", "tokens must be an array of token ids", "invalid_type")));
  }
  std::vector<int32_t> ids;
  for (const Json& t : *tokens) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
        t.get<int64_t>() >= model->tokenizer()->vocab_size()) {
      return session->ReplyError(ApiErrorFromStatus(InvalidParam(
          "tokens",
          absl::StrCat("tokens must be ids in [0, ", model->tokenizer()->vocab_size(), ")"))));
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  session->ReplyJson(200, Json{{"prompt", model->tokenizer()->Decode(ids)}});
}

}  // namespace

void AddInfoRoutes(Router* router) {
  router->Add({"/health", bhttp::verb::get, true, false, HandleHealth});
  router->Add({"/v1/models", bhttp::verb::get, false, false, HandleModels});
  router->Add({"/metrics", bhttp::verb::get, false, false, HandleMetrics});
  router->Add({"/version", bhttp::verb::get, false, false, HandleVersion});
  router->Add({"/tokenize", bhttp::verb::post, false, true, HandleTokenize});
  router->Add({"/detokenize", bhttp::verb::post, false, true, HandleDetokenize});
}

}  // namespace r2::server::http

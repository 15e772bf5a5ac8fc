// POST /v1/chat/completions and POST /v1/completions.
#include <chrono>

#include "server/http/generation.h"
#include "server/http/router.h"
#include "server/openai_request.h"

namespace r2::server::http {
namespace {

using Json = nlohmann::ordered_json;

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ResponseMeta MetaFor(const CommonRequest& r, const ServedModel& model, absl::string_view prefix) {
  ResponseMeta meta;
  meta.id = NewResponseId(prefix);
  meta.created = UnixNow();
  meta.model = model.name();
  meta.stream = r.stream;
  meta.include_usage = r.include_usage;
  meta.n = r.params.n;
  meta.logprobs = r.params.logprobs;
  meta.top_logprobs = r.params.top_logprobs;
  return meta;
}

// The served model when ready, else answers 503 and returns null.
const ServedModel* ReadyModel(const std::shared_ptr<HttpSession>& session) {
  ServerContext& context = session->context();
  if (context.ready()) return context.model();
  const char* why = context.draining()            ? "the server is shutting down"
                    : context.engine() == nullptr ? "the model is still loading"
                                                  : "the engine failed; see the server log";
  session->ReplyError(ApiErrorFromStatus(absl::UnavailableError(why)));
  return nullptr;
}

void HandleChat(const std::shared_ptr<HttpSession>& session) {
  const ServedModel* model = ReadyModel(session);
  if (model == nullptr) return;
  absl::StatusOr<Json> body = ParseJsonBody(session->request().body());
  if (!body.ok()) return session->ReplyError(ApiErrorFromStatus(body.status()));
  absl::StatusOr<ChatCompletionRequest> request = DecodeChatCompletionRequest(*body);
  if (!request.ok()) return session->ReplyError(ApiErrorFromStatus(request.status()));
  absl::StatusOr<PreparedRequest> prepared = PrepareChat(*model, *request);
  if (!prepared.ok()) return session->ReplyError(ApiErrorFromStatus(prepared.status()));
  std::unique_ptr<ResponseEncoder> encoder =
      MakeChatEncoder(MetaFor(*request, *model, "chatcmpl-"), prepared->plan,
                      request->return_tokens_as_token_ids ? nullptr : model->tokenizer());
  StartGeneration(session, std::move(prepared->request), std::move(encoder), request->stream);
}

void HandleCompletion(const std::shared_ptr<HttpSession>& session) {
  const ServedModel* model = ReadyModel(session);
  if (model == nullptr) return;
  absl::StatusOr<Json> body = ParseJsonBody(session->request().body());
  if (!body.ok()) return session->ReplyError(ApiErrorFromStatus(body.status()));
  absl::StatusOr<CompletionRequest> request = DecodeCompletionRequest(*body);
  if (!request.ok()) return session->ReplyError(ApiErrorFromStatus(request.status()));
  absl::StatusOr<PreparedRequest> prepared = PrepareCompletion(*model, *request);
  if (!prepared.ok()) return session->ReplyError(ApiErrorFromStatus(prepared.status()));
  std::unique_ptr<ResponseEncoder> encoder =
      MakeCompletionEncoder(MetaFor(*request, *model, "cmpl-"),
                            request->return_tokens_as_token_ids ? nullptr : model->tokenizer());
  StartGeneration(session, std::move(prepared->request), std::move(encoder), request->stream);
}

}  // namespace

void AddGenerationRoutes(Router* router) {
  router->Add({"/v1/chat/completions", bhttp::verb::post, false, true, HandleChat});
  router->Add({"/v1/completions", bhttp::verb::post, false, true, HandleCompletion});
}

}  // namespace r2::server::http

#include "server/grpc/inference_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/chat_output.h"
#include "server/openai_error.h"
#include "server/openai_prompt.h"
#include "server/openai_response.h"

#ifndef R2_VERSION
#define R2_VERSION "unknown"
#endif

namespace r2::server::grpc_api {
namespace {

std::string_view Metadata(const ::grpc::CallbackServerContext& call, std::string_view key) {
  const auto& md = call.client_metadata();
  auto it = md.find(::grpc::string_ref(key.data(), key.size()));
  if (it == md.end()) return {};
  return std::string_view(it->second.data(), it->second.size());
}

// An engine error ends the call with UNAVAILABLE (the engine is faulted); other failures keep
// their code (FAILED_PRECONDITION for a tool call tool_choice demanded).
absl::Status StreamEndStatus(const absl::Status& error) {
  if (error.code() == absl::StatusCode::kInternal) {
    return absl::UnavailableError(absl::StrCat("engine fault: ", error.message()));
  }
  return error;
}

class GenerateStream final : public GenerationStream<v1::GenerateResponse> {
 public:
  GenerateStream(StreamEnv env, StreamSlot slot, std::shared_ptr<engine::RequestHandle> handle,
                 const tokenizer::Tokenizer* tokenizer, bool logprobs)
      : GenerationStream(env, std::move(slot), std::move(handle)),
        id_(NewResponseId("cmpl-")),
        tokenizer_(tokenizer),
        logprobs_(logprobs) {}

 protected:
  bool Encode(const engine::RequestOutput& output, v1::GenerateResponse* message) override {
    message->set_id(id_);
    for (const engine::ChoiceDelta& d : output.choices) {
      if (d.token_ids.empty() && d.text.empty() && d.finish_reason == engine::FinishReason::kNone)
        continue;
      if (d.finish_reason == engine::FinishReason::kError && error_.ok()) {
        error_ = absl::InternalError(absl::StrCat("generation failed: ", d.error));
      }
      v1::GenerateChoice* c = message->add_choices();
      c->set_index(d.index);
      c->mutable_token_ids()->Add(d.token_ids.begin(), d.token_ids.end());
      c->set_text(d.text);
      if (logprobs_) AddLogprobs(d, tokenizer_, c->mutable_logprobs());
      c->set_finish_reason(ToFinishReason(d.finish_reason, false));
      c->set_stop_reason(d.stop_reason);
    }
    if (output.usage) SetUsage(*output.usage, message->mutable_usage());
    return message->choices_size() > 0 || output.usage.has_value();
  }

  absl::Status EndStatus() const override { return StreamEndStatus(error_); }

 private:
  const std::string id_;
  const tokenizer::Tokenizer* tokenizer_;
  const bool logprobs_;
  absl::Status error_;
};

v1::FinishReason FinishFromText(const std::string& finish) {
  if (finish == "stop") return v1::FINISH_REASON_STOP;
  if (finish == "length") return v1::FINISH_REASON_LENGTH;
  if (finish == "tool_calls") return v1::FINISH_REASON_TOOL_CALLS;
  if (finish == "abort") return v1::FINISH_REASON_ABORT;
  if (finish == "error") return v1::FINISH_REASON_ERROR;
  return v1::FINISH_REASON_UNSPECIFIED;
}

class ChatStream final : public GenerationStream<v1::ChatResponse> {
 public:
  ChatStream(StreamEnv env, StreamSlot slot, std::shared_ptr<engine::RequestHandle> handle,
             const tokenizer::Tokenizer* tokenizer, bool logprobs, OutputPlan plan, int32_t n)
      : GenerationStream(env, std::move(slot), std::move(handle)),
        id_(NewResponseId("chatcmpl-")),
        tokenizer_(tokenizer),
        logprobs_(logprobs),
        parser_(std::move(plan), n, /*stream_tool_arguments=*/true) {}

 protected:
  bool Encode(const engine::RequestOutput& output, v1::ChatResponse* message) override {
    message->set_id(id_);
    for (const engine::ChoiceDelta& d : output.choices) {
      std::optional<ChatPiece> piece = parser_.Push(d);
      if (!piece) continue;
      if (d.token_ids.empty() && piece->content.empty() && piece->reasoning.empty() &&
          piece->calls.empty() && piece->finish.empty()) {
        continue;
      }
      v1::ChatChoice* c = message->add_choices();
      c->set_index(d.index);
      c->mutable_token_ids()->Add(d.token_ids.begin(), d.token_ids.end());
      c->set_content(piece->content);
      c->set_reasoning(piece->reasoning);
      for (const chat::ToolCall& call : piece->calls) {
        v1::ToolCall* t = c->add_tool_calls();
        t->set_index(call.index);
        t->set_id(call.id);
        t->set_name(call.name);
        t->set_arguments(call.arguments);
      }
      if (logprobs_) AddLogprobs(d, tokenizer_, c->mutable_logprobs());
      c->set_finish_reason(FinishFromText(piece->finish));
      c->set_stop_reason(d.stop_reason);
    }
    if (output.usage) SetUsage(*output.usage, message->mutable_usage());
    return message->choices_size() > 0 || output.usage.has_value();
  }

  absl::Status EndStatus() const override { return StreamEndStatus(parser_.error()); }

 private:
  const std::string id_;
  const tokenizer::Tokenizer* tokenizer_;
  const bool logprobs_;
  ChatOutputParser parser_;
};

// The served model once loaded (for the calls that need no engine), else UNAVAILABLE.
absl::StatusOr<const ServedModel*> LoadedModel(const http::ServerContext& context) {
  const ServedModel* model = context.model();
  if (model == nullptr) return absl::UnavailableError("the model is still loading");
  return model;
}

absl::StatusOr<const ServedModel*> TokenizerModel(const http::ServerContext& context,
                                                  const std::string& requested) {
  absl::StatusOr<const ServedModel*> model = LoadedModel(context);
  if (!model.ok()) return model;
  if (absl::Status s = CheckModelName(**model, requested); !s.ok()) return s;
  if ((*model)->tokenizer() == nullptr) {
    return InvalidParam("model", "this model has no tokenizer (tokenizer.json)",
                        "tokenizer_unavailable");
  }
  return model;
}

}  // namespace

InferenceService::InferenceService(http::ServerContext& context, std::shared_ptr<StreamHub> hub,
                                   int64_t max_streams)
    : context_(context), hub_(std::move(hub)), max_streams_(max_streams) {}

absl::Status InferenceService::Authenticate(const ::grpc::CallbackServerContext& call) const {
  if (!context_.keys().enabled()) return absl::OkStatus();
  if (context_.keys().Allows(Metadata(call, "authorization"), Metadata(call, "x-api-key"))) {
    return absl::OkStatus();
  }
  return absl::UnauthenticatedError(
      "a valid API key is required: send the metadata 'authorization: Bearer <key>'");
}

absl::Status InferenceService::AdmitStream(const ::grpc::CallbackServerContext& call) const {
  if (absl::Status s = Authenticate(call); !s.ok()) return s;
  if (!context_.ready()) {
    const char* why = context_.draining()            ? "the server is shutting down"
                      : context_.engine() == nullptr ? "the model is still loading"
                                                     : "the engine failed; see the server log";
    return absl::UnavailableError(why);
  }
  return absl::OkStatus();
}

absl::StatusOr<StreamSlot> InferenceService::ReserveStream() {
  std::optional<StreamSlot> slot = StreamSlot::Acquire(hub_, max_streams_);
  if (!slot) {
    return absl::ResourceExhaustedError(absl::StrCat("too many concurrent streams (", max_streams_,
                                                     ", --grpc-max-concurrent-streams)"));
  }
  return *std::move(slot);
}

::grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceService::Generate(
    ::grpc::CallbackServerContext* call, const v1::GenerateRequest* request) {
  using Failed = FailedStream<v1::GenerateResponse>;
  if (absl::Status s = AdmitStream(*call); !s.ok()) return new Failed(call, s);
  absl::StatusOr<StreamSlot> slot = ReserveStream();
  if (!slot.ok()) return new Failed(call, slot.status());
  const ServedModel* model = context_.model();
  absl::StatusOr<CompletionRequest> decoded = ToCompletionRequest(*request);
  if (!decoded.ok()) return new Failed(call, decoded.status());
  absl::StatusOr<PreparedRequest> prepared = PrepareCompletion(*model, *decoded);
  if (!prepared.ok()) return new Failed(call, prepared.status());
  const bool logprobs = prepared->request.params.logprobs;
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> handle =
      context_.engine()->Submit(std::move(prepared->request));
  if (!handle.ok()) return new Failed(call, handle.status());
  auto stream = std::make_shared<GenerateStream>(StreamEnv{&context_, hub_}, *std::move(slot),
                                                 *std::move(handle), model->tokenizer(), logprobs);
  return stream->Start();
}

::grpc::ServerWriteReactor<v1::ChatResponse>* InferenceService::Chat(
    ::grpc::CallbackServerContext* call, const v1::ChatRequest* request) {
  using Failed = FailedStream<v1::ChatResponse>;
  if (absl::Status s = AdmitStream(*call); !s.ok()) return new Failed(call, s);
  absl::StatusOr<StreamSlot> slot = ReserveStream();
  if (!slot.ok()) return new Failed(call, slot.status());
  const ServedModel* model = context_.model();
  absl::StatusOr<ChatCompletionRequest> decoded = ToChatRequest(*request);
  if (!decoded.ok()) return new Failed(call, decoded.status());
  absl::StatusOr<PreparedRequest> prepared = PrepareChat(*model, *decoded);
  if (!prepared.ok()) return new Failed(call, prepared.status());
  const bool logprobs = prepared->request.params.logprobs;
  const int32_t n = prepared->request.params.n;
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> handle =
      context_.engine()->Submit(std::move(prepared->request));
  if (!handle.ok()) return new Failed(call, handle.status());
  auto stream =
      std::make_shared<ChatStream>(StreamEnv{&context_, hub_}, *std::move(slot), *std::move(handle),
                                   model->tokenizer(), logprobs, std::move(prepared->plan), n);
  return stream->Start();
}

::grpc::ServerUnaryReactor* InferenceService::Reply(::grpc::CallbackServerContext* call,
                                                    const absl::Status& status) {
  std::string field;
  ::grpc::Status grpc_status = ToGrpcStatus(status, &field);
  if (!field.empty()) call->AddTrailingMetadata(kFieldMetadataKey, field);
  ::grpc::ServerUnaryReactor* reactor = call->DefaultReactor();
  reactor->Finish(grpc_status);
  return reactor;
}

::grpc::ServerUnaryReactor* InferenceService::Tokenize(::grpc::CallbackServerContext* call,
                                                       const v1::TokenizeRequest* request,
                                                       v1::TokenizeResponse* response) {
  if (absl::Status s = Authenticate(*call); !s.ok()) return Reply(call, s);
  absl::StatusOr<const ServedModel*> model = TokenizerModel(context_, request->model());
  if (!model.ok()) return Reply(call, model.status());
  std::string text;
  bool add_special = true;
  if (request->input_case() == v1::TokenizeRequest::kText) {
    text = request->text();
  } else if (request->input_case() == v1::TokenizeRequest::kChat) {
    absl::StatusOr<ChatCompletionRequest> chat = ToChatRequest(request->chat());
    if (!chat.ok()) return Reply(call, chat.status());
    absl::StatusOr<std::string> rendered = RenderChatPrompt(**model, *chat);
    if (!rendered.ok()) return Reply(call, rendered.status());
    text = *std::move(rendered);
    add_special = false;
  } else {
    return Reply(call,
                 InvalidParam("prompt", "text or chat is required", "missing_required_parameter"));
  }
  if (request->has_add_special_tokens()) add_special = request->add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = (*model)->tokenizer()->Encode(text, add_special);
  if (!ids.ok()) return Reply(call, InvalidParam("text", ids.status().message()));
  response->mutable_token_ids()->Add(ids->begin(), ids->end());
  response->set_max_model_len((*model)->max_model_len());
  return Reply(call, absl::OkStatus());
}

::grpc::ServerUnaryReactor* InferenceService::Detokenize(::grpc::CallbackServerContext* call,
                                                         const v1::DetokenizeRequest* request,
                                                         v1::DetokenizeResponse* response) {
  if (absl::Status s = Authenticate(*call); !s.ok()) return Reply(call, s);
  absl::StatusOr<const ServedModel*> model = TokenizerModel(context_, request->model());
  if (!model.ok()) return Reply(call, model.status());
  const int32_t vocab = (*model)->tokenizer()->vocab_size();
  std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      return Reply(call, InvalidParam("token_ids",
                                      absl::StrCat("token id ", id,
                                                   " is outside the vocabulary [0, ", vocab, ")")));
    }
  }
  response->set_text((*model)->tokenizer()->Decode(ids));
  return Reply(call, absl::OkStatus());
}

::grpc::ServerUnaryReactor* InferenceService::ListModels(::grpc::CallbackServerContext* call,
                                                         const v1::ListModelsRequest* request,
                                                         v1::ListModelsResponse* response) {
  if (absl::Status s = Authenticate(*call); !s.ok()) return Reply(call, s);
  v1::Model* m = response->add_models();
  m->set_id(context_.model_name());
  m->set_created(context_.started_unix());
  m->set_owned_by("r2serve");
  if (const ServedModel* model = context_.model()) m->set_max_model_len(model->max_model_len());
  return Reply(call, absl::OkStatus());
}

::grpc::ServerUnaryReactor* InferenceService::GetServerInfo(::grpc::CallbackServerContext* call,
                                                            const v1::GetServerInfoRequest* request,
                                                            v1::GetServerInfoResponse* response) {
  if (absl::Status s = Authenticate(*call); !s.ok()) return Reply(call, s);
  response->set_version(R2_VERSION);
  response->set_model(context_.model_name());
  response->set_ready(context_.ready());
  if (const ServedModel* model = context_.model()) {
    response->set_max_model_len(model->max_model_len());
    response->set_vocab_size(model->vocab_size());
    response->set_has_tokenizer(model->tokenizer() != nullptr);
    response->set_has_chat_template(model->chat_template() != nullptr);
    response->set_reasoning(model->reasoning());
  }
  if (engine::Engine* engine = context_.engine()) {
    const engine::EngineStats stats = engine->stats();
    response->set_num_running(stats.num_running);
    response->set_num_waiting(stats.num_waiting);
    response->set_kv_blocks_total(stats.kv_blocks_total);
    response->set_kv_blocks_used(stats.kv_blocks_used);
  }
  response->set_active_grpc_streams(static_cast<int32_t>(active_streams()));
  return Reply(call, absl::OkStatus());
}

}  // namespace r2::server::grpc_api

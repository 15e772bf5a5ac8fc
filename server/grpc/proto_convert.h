#pragma once
// Conversions between the r2serve.v1 protos and the structs every front end shares
// (server/openai_request.h, openai_prompt.h, engine/engine.h), and absl::Status -> grpc::Status.
//
// Requests: a GenerateRequest becomes a CompletionRequest and a ChatRequest a
// ChatCompletionRequest, so the gRPC front end runs exactly the validation, templating and
// context-length checks of the HTTP one (PrepareCompletion / CheckChatRequest + PrepareChat).
// Only what protobuf's types cannot express is checked here (a JSON text field that does not
// parse, an absent prompt).
//
// Errors: InvalidArgument becomes INVALID_ARGUMENT whose message starts with the proto field path
// ("sampling.temperature: temperature must be in [0, 2], got 3"); the path also goes into the
// trailing metadata key kFieldMetadataKey. Other codes map one to one (absl and gRPC share
// them); an Internal error from a client-visible path never happens for bad input.
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "grpcpp/support/status.h"
#include "r2serve/v1/inference.pb.h"
#include "server/grpc/field_metadata.h"
#include "server/openai_request.h"

namespace r2::server::grpc_api {

namespace v1 = ::r2serve::v1;

// Proto field path of an HTTP parameter name ("temperature" -> "sampling.temperature").
std::string FieldPath(const std::string& param);

// The gRPC status for `status`; `*field` (when not null) gets the field path of an
// INVALID_ARGUMENT ("" otherwise).
::grpc::Status ToGrpcStatus(const absl::Status& status, std::string* field = nullptr);

// Sampling parameters: unset proto fields keep the engine defaults (`params` as given).
void ApplySampling(const v1::SamplingParams& sampling, sampling::SamplingParams* params);

absl::StatusOr<CompletionRequest> ToCompletionRequest(const v1::GenerateRequest& request);
absl::StatusOr<ChatCompletionRequest> ToChatRequest(const v1::ChatRequest& request);

// Engine output -> response messages. `tokenizer` gives logprob token bytes (null: "token_id:N").
void AddLogprobs(const engine::ChoiceDelta& delta, const tokenizer::Tokenizer* tokenizer,
                 google::protobuf::RepeatedPtrField<v1::Logprob>* out);
v1::FinishReason ToFinishReason(engine::FinishReason reason, bool made_tool_calls);
void SetUsage(const engine::Usage& usage, v1::Usage* out);

}  // namespace r2::server::grpc_api

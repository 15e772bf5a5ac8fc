// libFuzzer target for the gRPC request conversions (server/grpc/proto_convert.*): the first byte
// picks the message, the rest is parsed as its protobuf wire format and then goes the way the
// Inference service takes it:
//   0 GenerateRequest -> ToCompletionRequest -> PrepareCompletion -> engine::ValidateRequest
//   1 ChatRequest     -> ToChatRequest (CheckChatRequest) -> PrepareChat -> engine::ValidateRequest
//   2 TokenizeRequest -> text, or ToChatRequest + RenderChatPrompt, -> Tokenizer::Encode
// Served model: the tiny tokenizer with DeepSeek-V3's chat template (fuzz_model.h), no weights.
//
// Checked for every input, besides sanitizer findings: an error becomes a gRPC status that is
// neither INTERNAL nor UNKNOWN, an INVALID_ARGUMENT's message starts with its field path, and a
// prepared request has prompt ids inside the vocabulary and fits max_model_len.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/threaded_engine.h"
#include "fuzz_model.h"
#include "google/protobuf/stubs/logging.h"
#include "server/grpc/proto_convert.h"
#include "server/openai_prompt.h"

namespace {

namespace v1 = ::r2serve::v1;
using r2::fuzz::FuzzModel;

const FuzzModel& Model() {
  static auto* model = new FuzzModel(r2::fuzz::MakeFuzzModel(r2::tokenizer::TinyChatTemplate::kV3));
  return *model;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "grpc_request_fuzz: %s\n", what);
    std::abort();
  }
}

void CheckError(const absl::Status& status) {
  Check(!status.ok(), "error expected");
  std::string field;
  const ::grpc::Status grpc = r2::server::grpc_api::ToGrpcStatus(status, &field);
  if (grpc.error_code() == ::grpc::StatusCode::INTERNAL ||
      grpc.error_code() == ::grpc::StatusCode::UNKNOWN) {
    std::fprintf(stderr, "status: %s\n", status.ToString().c_str());
    Check(false, "bad input answered with INTERNAL or UNKNOWN");
  }
  Check(!grpc.error_message().empty(), "error without a message");
  if (!field.empty()) {
    Check(grpc.error_message().rfind(field + ": ", 0) == 0,
          "INVALID_ARGUMENT message does not start with its field path");
  }
}

void CheckPrepared(const r2::server::PreparedRequest& prepared) {
  const FuzzModel& model = Model();
  for (int32_t id : prepared.request.prompt) {
    Check(id >= 0 && id < model.served->vocab_size(), "prompt token outside the vocabulary");
  }
  Check(static_cast<int64_t>(prepared.request.prompt.size()) < model.served->max_model_len() ||
            prepared.request.prompt.empty(),
        "prepared prompt does not fit max_model_len");
  r2::engine::RequestLimits limits;
  limits.vocab_size = model.served->vocab_size();
  limits.max_model_len = model.served->max_model_len();
  limits.max_num_seqs = 256;
  limits.num_blocks = 64;
  limits.block_size = 64;
  limits.has_tokenizer = true;
  r2::engine::Request copy = prepared.request;
  const absl::Status submit = r2::engine::ValidateRequest(limits, copy);
  if (!submit.ok()) {
    Check(submit.code() == absl::StatusCode::kInvalidArgument, "engine refusal is not a 400");
    CheckError(submit);
  }
}

void FuzzGenerate(const v1::GenerateRequest& request) {
  absl::StatusOr<r2::server::CompletionRequest> decoded =
      r2::server::grpc_api::ToCompletionRequest(request);
  if (!decoded.ok()) return CheckError(decoded.status());
  absl::StatusOr<r2::server::PreparedRequest> prepared =
      r2::server::PrepareCompletion(*Model().served, *decoded);
  if (!prepared.ok()) return CheckError(prepared.status());
  CheckPrepared(*prepared);
}

void FuzzChat(const v1::ChatRequest& request) {
  absl::StatusOr<r2::server::ChatCompletionRequest> decoded =
      r2::server::grpc_api::ToChatRequest(request);
  if (!decoded.ok()) return CheckError(decoded.status());
  absl::StatusOr<r2::server::PreparedRequest> prepared =
      r2::server::PrepareChat(*Model().served, *decoded);
  if (!prepared.ok()) return CheckError(prepared.status());
  CheckPrepared(*prepared);
}

void FuzzTokenize(const v1::TokenizeRequest& request) {
  const FuzzModel& model = Model();
  std::string text;
  bool add_special = true;
  if (request.input_case() == v1::TokenizeRequest::kChat) {
    absl::StatusOr<r2::server::ChatCompletionRequest> chat =
        r2::server::grpc_api::ToChatRequest(request.chat());
    if (!chat.ok()) return CheckError(chat.status());
    absl::StatusOr<std::string> rendered = r2::server::RenderChatPrompt(*model.served, *chat);
    if (!rendered.ok()) return CheckError(rendered.status());
    text = *std::move(rendered);
    add_special = false;
  } else {
    text = request.text();
  }
  if (request.has_add_special_tokens()) add_special = request.add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(text, add_special);
  Check(ids.ok(), "Encode failed");
  for (int32_t id : *ids) Check(id >= 0 && id < model.served->vocab_size(), "id out of range");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field with invalid UTF-8 that it refuses to parse; quiet, so the
  // fuzzer's own output stays readable (a refused parse is simply not converted).
  google::protobuf::SetLogHandler(nullptr);
  Model();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const void* payload = data + 1;
  const int length = static_cast<int>(size - 1);
  switch (data[0] % 3) {
    case 0: {
      v1::GenerateRequest request;
      if (request.ParseFromArray(payload, length)) FuzzGenerate(request);
      break;
    }
    case 1: {
      v1::ChatRequest request;
      if (request.ParseFromArray(payload, length)) FuzzChat(request);
      break;
    }
    default: {
      v1::TokenizeRequest request;
      if (request.ParseFromArray(payload, length)) FuzzTokenize(request);
      break;
    }
  }
  return 0;
}

// libFuzzer target for the OpenAI request decoders (server/openai_request.*, openai_fields.*,
// openai_prompt.*): arbitrary bytes as a request body go through ParseJsonBody, then both
// DecodeChatCompletionRequest + PrepareChat and DecodeCompletionRequest + PrepareCompletion
// (messages, tools and tool_choice, logit_bias, stop, sampling parameters, chat template
// rendering, tokenization, context-length checks), then the engine's own Submit checks
// (engine::ValidateRequest). Served model: the tiny tokenizer with one of DeepSeek's three chat
// templates (V3, R1, V3.1; picked by the input's length), no weights.
//
// Checked for every input, besides sanitizer findings:
//   - every error maps to a 4xx API error (never 500), and its JSON body serializes;
//   - a prepared request has prompt ids inside the vocabulary and fits max_model_len, and what
//     the engine refuses is refused as InvalidArgument (400);
//   - a named tool_choice names a tool the request declares.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "engine/threaded_engine.h"
#include "fuzz_model.h"
#include "server/openai_error.h"
#include "server/openai_prompt.h"
#include "server/openai_request.h"

namespace {

using r2::fuzz::FuzzModel;
using r2::server::ApiError;
using r2::server::ApiErrorFromStatus;

std::vector<FuzzModel>& Models() {
  static auto* models = [] {
    auto* out = new std::vector<FuzzModel>();
    for (auto t : {r2::tokenizer::TinyChatTemplate::kV3, r2::tokenizer::TinyChatTemplate::kR1,
                   r2::tokenizer::TinyChatTemplate::kV31}) {
      out->push_back(r2::fuzz::MakeFuzzModel(t));
    }
    return out;
  }();
  return *models;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "openai_request_fuzz: %s\n", what);
    std::abort();
  }
}

void CheckError(const absl::Status& status) {
  Check(!status.ok(), "error expected");
  const ApiError error = ApiErrorFromStatus(status);
  if (error.http_status >= 500) {
    std::fprintf(stderr, "status: %s\n", status.ToString().c_str());
  }
  Check(error.http_status >= 400 && error.http_status < 500, "bad input answered with a 5xx");
  Check(!error.message.empty(), "error without a message");
  const std::string body = r2::server::DumpJson(r2::server::ApiErrorJson(error));
  Check(!body.empty() && body.front() == '{', "error body is not a JSON object");
}

void CheckPrepared(const FuzzModel& model, r2::server::PreparedRequest& prepared) {
  const r2::engine::Request& request = prepared.request;
  for (int32_t id : request.prompt) {
    Check(id >= 0 && id < model.served->vocab_size(), "prompt token outside the vocabulary");
  }
  Check(static_cast<int64_t>(request.prompt.size()) < model.served->max_model_len() ||
            request.prompt.empty(),
        "prepared prompt does not fit max_model_len");
  r2::engine::RequestLimits limits;
  limits.vocab_size = model.served->vocab_size();
  limits.max_model_len = model.served->max_model_len();
  limits.max_num_seqs = 256;
  limits.num_blocks = 64;
  limits.block_size = 64;
  limits.has_tokenizer = true;
  r2::engine::Request copy = request;
  const absl::Status submit = r2::engine::ValidateRequest(limits, copy);
  if (!submit.ok()) {
    Check(submit.code() == absl::StatusCode::kInvalidArgument, "engine refusal is not a 400");
    CheckError(submit);
  } else {
    Check(copy.params.max_tokens.has_value() && *copy.params.max_tokens >= 0,
          "max_tokens not resolved");
    Check(
        static_cast<int64_t>(copy.prompt.size()) + *copy.params.max_tokens <= limits.max_model_len,
        "accepted request exceeds max_model_len");
  }
}

void FuzzChat(const FuzzModel& model, const nlohmann::ordered_json& body) {
  absl::StatusOr<r2::server::ChatCompletionRequest> chat =
      r2::server::DecodeChatCompletionRequest(body);
  if (!chat.ok()) return CheckError(chat.status());
  Check(r2::server::CheckChatRequest(*chat).ok(), "decoded chat request fails CheckChatRequest");
  if (chat->tool_choice == r2::server::ToolChoice::kNamed) {
    bool declared = false;
    for (const auto& tool : chat->tools) {
      const auto function = tool.find("function");
      if (function == tool.end() || !function->is_object()) continue;
      const auto name = function->find("name");
      declared |= name != function->end() && *name == chat->tool_choice_name;
    }
    Check(declared, "named tool_choice names no declared tool");
  }
  absl::StatusOr<r2::server::PreparedRequest> prepared = PrepareChat(*model.served, *chat);
  if (!prepared.ok()) return CheckError(prepared.status());
  CheckPrepared(model, *prepared);
}

void FuzzCompletion(const FuzzModel& model, const nlohmann::ordered_json& body) {
  absl::StatusOr<r2::server::CompletionRequest> completion =
      r2::server::DecodeCompletionRequest(body);
  if (!completion.ok()) return CheckError(completion.status());
  absl::StatusOr<r2::server::PreparedRequest> prepared =
      PrepareCompletion(*model.served, *completion);
  if (!prepared.ok()) return CheckError(prepared.status());
  CheckPrepared(model, *prepared);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Models();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<nlohmann::ordered_json> body = r2::server::ParseJsonBody(input);
  if (!body.ok()) {
    CheckError(body.status());
    return 0;
  }
  Check(body->is_object(), "ParseJsonBody accepted a non-object");
  const FuzzModel& model = Models()[size % Models().size()];
  FuzzChat(model, *body);
  FuzzCompletion(model, *body);
  return 0;
}

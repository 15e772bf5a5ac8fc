#pragma once
// Decoding of OpenAI request bodies (POST /v1/chat/completions, POST /v1/completions) into plain
// structs with validated sampling parameters. Shared by every front end (HTTP now, gRPC later);
// knows nothing of sockets. Prompt rendering and tokenization are in openai_prompt.h.
//
// Policy (documented in docs/http.md):
//   - Types are strict: a number where a string is expected (or 5.0 for an integer) is a 400
//     naming the field. JSON null means "not given" for every optional field.
//   - Unknown fields are ignored (OpenAI clients send vendor extensions). Only the fields below
//     are read, so no request field can reach engine internals.
//   - Not supported, rejected with 400 "not supported" naming the field rather than silently
//     ignored: response_format other than {"type": "text"}, completions echo=true and suffix,
//     non-text content parts (images, audio), and completions prompts that list more than one
//     prompt.
//   - JSON nesting deeper than kMaxJsonDepth is refused before parsing.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/sampling/sampling_params.h"
#include "nlohmann/json.hpp"

namespace r2::server {

inline constexpr int kMaxJsonDepth = 64;
inline constexpr int kMaxMessages = 4096;
inline constexpr int kMaxTools = 128;

enum class ToolChoice { kNone, kAuto, kRequired, kNamed };

// Fields both APIs share.
struct CommonRequest {
  std::string model;  // empty when the client sent none (the served model is used)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  sampling::SamplingParams params;
  int32_t priority = 0;
  std::string cache_salt;
  bool return_tokens_as_token_ids = false;  // vLLM: logprob tokens as "token_id:N"
};

struct ChatCompletionRequest : CommonRequest {
  nlohmann::ordered_json messages;  // an array of message objects (checked shape)
  nlohmann::ordered_json tools;     // null or an array of {"type":"function","function":{...}}
  ToolChoice tool_choice = ToolChoice::kNone;
  std::string tool_choice_name;  // for kNamed
  bool add_generation_prompt = true;
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
};

struct CompletionRequest : CommonRequest {
  bool prompt_is_token_ids = false;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
};

// Parses a request body. Errors: 400 invalid_json (with the parser's position), 400 for nesting
// deeper than kMaxJsonDepth, 400 when the top level is not an object.
absl::StatusOr<nlohmann::ordered_json> ParseJsonBody(std::string_view body);

absl::StatusOr<ChatCompletionRequest> DecodeChatCompletionRequest(
    const nlohmann::ordered_json& body);
absl::StatusOr<CompletionRequest> DecodeCompletionRequest(const nlohmann::ordered_json& body);

// The protocol-neutral rules of a chat request whose fields are filled (decoded from JSON, or
// built by the gRPC front end): message and tool shapes and counts, tool_choice against tools,
// top_logprobs requires logprobs. Errors name the field as above.
absl::Status CheckChatRequest(const ChatCompletionRequest& request);

// Validates the decoded sampling parameters against the model's vocabulary (field-named errors).
absl::Status ValidateSamplingParams(const sampling::SamplingParams& params, int32_t vocab_size);

}  // namespace r2::server

#pragma once
// Encoding of engine output as OpenAI responses: chat.completion / chat.completion.chunk and
// text_completion (streamed or not), with usage, logprobs, reasoning and tool calls.
//
// One encoder per request, used from one thread. Feed it every engine::RequestOutput in order:
//   streaming:      Begin(&events) once, then Add(out, &events) per output; each event is one
//                   SSE `data:` payload. After the final output, error() tells whether the
//                   stream must end with an error event instead of success.
//   non-streaming:  Add(out, nullptr) per output, then Response() for the body (or an error).
//
// Choices end with finish_reason stop | length | tool_calls (a stop after at least one parsed
// tool call) | abort (the request was aborted: client gone or shutdown; SGLang's name). An
// engine error ends the request with an error (500 server_error, or an error event).
// tool_choice required / named function: a choice that ends without a (matching) call turns the
// whole response into a 422 tool_call_missing error (an error event when streaming): this
// server does not constrain decoding, so it reports the miss rather than pretending.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/openai_prompt.h"

namespace r2::server {

struct ResponseMeta {
  std::string id;       // "chatcmpl-..." or "cmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;    // the served model name
  bool stream = false;
  bool include_usage = false;
  int32_t n = 1;
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

// A random id with the given prefix ("chatcmpl-" + 24 hex digits).
std::string NewResponseId(absl::string_view prefix);

class ResponseEncoder {
 public:
  virtual ~ResponseEncoder() = default;
  // Streaming only: events to send right after the headers (chat: the role chunk per choice).
  virtual void Begin(std::vector<nlohmann::ordered_json>* events) {}
  // `events` null when not streaming.
  virtual void Add(const engine::RequestOutput& output,
                   std::vector<nlohmann::ordered_json>* events) = 0;
  // Non-streaming: the response body once the final output was added.
  virtual absl::StatusOr<nlohmann::ordered_json> Response() = 0;
  // Whether the request ended in an error (engine error, or a tool call that tool_choice
  // demanded and the model did not make). Valid after the final output.
  const absl::Status& error() const { return error_; }

 protected:
  absl::Status error_;
};

std::unique_ptr<ResponseEncoder> MakeChatEncoder(ResponseMeta meta, OutputPlan plan,
                                                 const tokenizer::Tokenizer* tokenizer);
std::unique_ptr<ResponseEncoder> MakeCompletionEncoder(ResponseMeta meta,
                                                       const tokenizer::Tokenizer* tokenizer);

// ---- pieces shared by the encoders (exposed for tests) ----------------------------------------
// OpenAI usage object.
nlohmann::ordered_json UsageJson(const engine::Usage& usage);
// The text of one token for logprobs ("token_id:N" without a tokenizer), and its bytes.
std::string LogprobTokenText(const tokenizer::Tokenizer* tokenizer, int32_t token);
// Finish reason names; "" while running.
std::string FinishReasonText(engine::FinishReason reason, bool made_tool_calls);

}  // namespace r2::server

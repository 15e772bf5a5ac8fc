#pragma once
// From a decoded OpenAI request to an engine::Request: chat template rendering, tokenization,
// the context-length check (400 context_length_exceeded before anything reaches the engine) and
// the output-parsing plan (reasoning split, tool-call parsing) the response encoder follows.
//
// Reasoning (DeepSeek-R1 style): when the chat template mentions "<think>" the output is split
// into reasoning and content (disable with ServedModelOptions::reasoning = false). Whether the
// output starts inside the reasoning is decided per request from the rendered prompt: a prompt
// ending in "<think>" (optionally followed by a newline) opens it, as R1's and V3.1's thinking
// templates do; otherwise only an explicit "<think>" at the start of the output does.
//
// Tools: the template's tool-call syntax picks the parser (V3/R1 or V3.1). tool_choice none does
// not pass the tools to the template and does not parse calls. auto passes them and parses.
// required and a named function cannot be enforced without constrained decoding: the template
// gets the tools (only the named one for a named choice), calls are parsed, and a choice that
// ends without a (matching) call is reported as an error instead of a normal answer
// (see openai_response.h). Nothing pretends a call happened.
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/chat/chat_template.h"
#include "engine/chat/tool_call_parser.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/openai_request.h"

namespace r2::server {

struct ServedModelOptions {
  std::string name;       // the id clients send as "model"
  std::string model_dir;  // for tokenizer_config.json (chat template)
  bool reasoning = true;  // split <think> when the template uses it
};

// What the front ends know about the served model. Immutable after Create; shared by threads.
class ServedModel {
 public:
  // `tokenizer` may be null (no tokenizer.json): then only token-id completions work.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Create(const ServedModelOptions& options,
                                                             const tokenizer::Tokenizer* tokenizer,
                                                             int32_t vocab_size,
                                                             int32_t max_model_len);

  const std::string& name() const { return name_; }
  // The checkpoint directory (GET /v1/models reports it as `root`, as vLLM does: load generators
  // such as `vllm bench serve` load their tokenizer from it).
  const std::string& model_dir() const { return model_dir_; }
  const tokenizer::Tokenizer* tokenizer() const { return tokenizer_; }
  const chat::ChatTemplate* chat_template() const { return chat_template_.get(); }
  int32_t vocab_size() const { return vocab_size_; }
  int32_t max_model_len() const { return max_model_len_; }
  bool reasoning() const { return reasoning_; }
  chat::ToolCallFormat tool_call_format() const { return tool_call_format_; }

 private:
  ServedModel() = default;
  std::string name_;
  std::string model_dir_;
  const tokenizer::Tokenizer* tokenizer_ = nullptr;
  std::unique_ptr<chat::ChatTemplate> chat_template_;
  int32_t vocab_size_ = 0;
  int32_t max_model_len_ = 0;
  bool reasoning_ = false;
  chat::ToolCallFormat tool_call_format_ = chat::ToolCallFormat::kDeepSeekV3;
};

// How to read the output of one chat request.
struct OutputPlan {
  bool reasoning = false;
  bool starts_in_reasoning = false;
  bool parse_tools = false;
  chat::ToolCallFormat tool_call_format = chat::ToolCallFormat::kDeepSeekV3;
  ToolChoice tool_choice = ToolChoice::kNone;
  std::string tool_choice_name;
};

struct PreparedRequest {
  engine::Request request;
  OutputPlan plan;
};

// 404 model_not_found unless `requested` is empty or the served name.
absl::Status CheckModelName(const ServedModel& model, const std::string& requested);

absl::StatusOr<PreparedRequest> PrepareChat(const ServedModel& model,
                                            const ChatCompletionRequest& request);
absl::StatusOr<PreparedRequest> PrepareCompletion(const ServedModel& model,
                                                  const CompletionRequest& request);

// Renders the chat prompt only (for /tokenize with messages).
absl::StatusOr<std::string> RenderChatPrompt(const ServedModel& model,
                                             const ChatCompletionRequest& request);

}  // namespace r2::server

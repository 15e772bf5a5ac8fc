#pragma once
// Renders an OpenAI-style conversation to the prompt string with the model's own Jinja chat
// template (from tokenizer_config.json), the way transformers' apply_chat_template(tokenize=False)
// does: the template sees `messages`, `tools` (null when none), `documents` (null),
// `add_generation_prompt`, the special tokens (bos_token, eos_token, ...) and any extra keyword
// arguments (e.g. DeepSeek-V3.1's `thinking`).
//
// Messages are normalized first: content given as a list of {"type": "text", "text": ...} parts is
// joined into one string; tool-call arguments given as JSON objects are serialized to a JSON
// string. Everything else passes through untouched, so the template decides the format.

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat/jinja.h"
#include "nlohmann/json.hpp"

namespace r2::chat {

struct ChatRenderRequest {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null, or an array of tool JSON schemas
  bool add_generation_prompt = true;
  // Extra template variables, e.g. {"thinking": true}. Override special tokens of the same name.
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();
};

class ChatTemplate {
 public:
  // One template; `special_tokens` maps names like "bos_token" to their text.
  static absl::StatusOr<ChatTemplate> Create(std::string_view source,
                                             std::map<std::string, std::string> special_tokens);

  // From a parsed tokenizer_config.json: "chat_template" is a string or a list of
  // {"name", "template"}; bos/eos/pad/unk tokens are strings or {"content": ...} objects.
  static absl::StatusOr<ChatTemplate> FromTokenizerConfig(const nlohmann::ordered_json& config);

  // Errors: InvalidArgument for malformed messages and for template errors (including the
  // template's own raise_exception), ResourceExhausted when rendering exceeds its limits.
  absl::StatusOr<std::string> Render(const ChatRenderRequest& request,
                                     const jinja::RenderLimits& limits = {}) const;

  // Normalizes OpenAI messages as described above. Exposed for tests.
  static absl::StatusOr<nlohmann::ordered_json> NormalizeMessages(
      const nlohmann::ordered_json& messages);

 private:
  ChatTemplate() = default;

  // Named templates ("default" for a single one), and special tokens.
  std::map<std::string, jinja::Template> templates_;
  std::map<std::string, std::string> special_tokens_;
};

}  // namespace r2::chat

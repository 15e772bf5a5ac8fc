#include "engine/chat/chat_template.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/chat/jinja_status.h"
#include "engine/chat/jinja_value.h"

namespace r2::chat {
namespace {

using Json = nlohmann::ordered_json;

absl::Status MessageError(size_t index, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("messages[", index, "]: ", std::string(what)));
}

absl::StatusOr<Json> FlattenContent(const Json& content, size_t index) {
  if (!content.is_array()) return content;
  std::string text;
  for (const Json& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      return MessageError(index, "content parts must be objects with a \"type\"");
    }
    if (part["type"] != "text") {
      return MessageError(index,
                          absl::StrCat("content part type '", part["type"].get<std::string>(),
                                       "' is not supported"));
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      return MessageError(index, "text content part without a string \"text\"");
    }
    text += part["text"].get<std::string>();
  }
  return Json(text);
}

absl::Status NormalizeToolCalls(Json* tool_calls, size_t index) {
  if (tool_calls->is_null()) return absl::OkStatus();
  if (!tool_calls->is_array()) return MessageError(index, "tool_calls must be an array");
  for (Json& call : *tool_calls) {
    if (!call.is_object()) return MessageError(index, "each tool call must be an object");
    if (!call.contains("function") || !call["function"].is_object()) continue;
    Json& fn = call["function"];
    if (fn.contains("arguments") && !fn["arguments"].is_string() && !fn["arguments"].is_null()) {
      JINJA_ASSIGN_OR_RETURN(jinja::Value args, jinja::Value::FromJson(fn["arguments"]));
      JINJA_ASSIGN_OR_RETURN(std::string text, jinja::ToPythonJson(args, -1, false));
      fn["arguments"] = text;
    }
  }
  return absl::OkStatus();
}

// A special token in tokenizer_config.json: a string, or an AddedToken object with "content".
std::string TokenText(const Json& token) {
  if (token.is_string()) return token.get<std::string>();
  if (token.is_object() && token.contains("content") && token["content"].is_string()) {
    return token["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<Json> ChatTemplate::NormalizeMessages(const Json& messages) {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be an array");
  Json out = Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    if (!m.is_object()) return MessageError(i, "must be an object");
    if (!m.contains("role") || !m["role"].is_string()) {
      return MessageError(i, "\"role\" must be a string");
    }
    Json msg = m;
    if (msg.contains("content")) {
      JINJA_ASSIGN_OR_RETURN(msg["content"], FlattenContent(msg["content"], i));
    }
    if (msg.contains("tool_calls")) {
      JINJA_RETURN_IF_ERROR(NormalizeToolCalls(&msg["tool_calls"], i));
    }
    out.push_back(std::move(msg));
  }
  return out;
}

absl::StatusOr<ChatTemplate> ChatTemplate::Create(
    std::string_view source, std::map<std::string, std::string> special_tokens) {
  JINJA_ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
  ChatTemplate ct;
  ct.templates_.emplace("default", std::move(t));
  ct.special_tokens_ = std::move(special_tokens);
  return ct;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromTokenizerConfig(const Json& config) {
  if (!config.is_object() || !config.contains("chat_template")) {
    return absl::InvalidArgumentError("tokenizer_config.json has no \"chat_template\"");
  }
  ChatTemplate ct;
  for (const char* name : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
    if (config.contains(name)) {
      std::string text = TokenText(config[name]);
      if (!text.empty()) ct.special_tokens_[name] = text;
    }
  }
  const Json& tmpl = config["chat_template"];
  if (tmpl.is_string()) {
    JINJA_ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(tmpl.get<std::string>()));
    ct.templates_.emplace("default", std::move(t));
    return ct;
  }
  if (!tmpl.is_array()) {
    return absl::InvalidArgumentError("\"chat_template\" must be a string or a list");
  }
  for (const Json& entry : tmpl) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("template") || !entry["template"].is_string()) {
      return absl::InvalidArgumentError(
          "\"chat_template\" list entries must have string \"name\" and \"template\"");
    }
    absl::StatusOr<jinja::Template> t =
        jinja::Template::Parse(entry["template"].get<std::string>());
    if (!t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chat template '", entry["name"].get<std::string>(), "': ", t.status().message()));
    }
    ct.templates_.emplace(entry["name"].get<std::string>(), *std::move(t));
  }
  if (ct.templates_.empty()) return absl::InvalidArgumentError("\"chat_template\" list is empty");
  return ct;
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatRenderRequest& request,
                                                 const jinja::RenderLimits& limits) const {
  bool has_tools = !request.tools.is_null();
  if (has_tools && !request.tools.is_array()) {
    return absl::InvalidArgumentError("tools must be an array");
  }
  // Like transformers: "tool_use" when tools are given and it exists, else "default".
  auto it = templates_.end();
  if (has_tools) it = templates_.find("tool_use");
  if (it == templates_.end()) it = templates_.find("default");
  if (it == templates_.end()) {
    return absl::InvalidArgumentError("no \"default\" chat template among the named templates");
  }
  JINJA_ASSIGN_OR_RETURN(Json messages, NormalizeMessages(request.messages));
  Json context = Json::object();
  context["messages"] = std::move(messages);
  context["tools"] = request.tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = request.add_generation_prompt;
  for (const auto& [name, text] : special_tokens_) context[name] = text;
  if (!request.kwargs.is_null() && !request.kwargs.is_object()) {
    return absl::InvalidArgumentError("chat template kwargs must be an object");
  }
  if (request.kwargs.is_object()) {
    for (const auto& [name, value] : request.kwargs.items()) context[name] = value;
  }
  return it->second.Render(context, limits);
}

}  // namespace r2::chat

#include "server/openai_request.h"

#include <algorithm>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/openai_error.h"
#include "server/openai_fields.h"

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;

// Nesting depth of JSON text, counted over brackets outside strings; linear, no recursion.
bool DepthWithin(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

absl::Status NotSupported(absl::string_view param, absl::string_view what) {
  return InvalidParam(param, absl::StrCat(what, " is not supported by this server"),
                      "unsupported_parameter");
}

absl::Status DecodeStop(const FieldReader& f, sampling::SamplingParams* p) {
  const Json* stop = f.Get("stop");
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    p->stop.push_back(stop->get<std::string>());
    return absl::OkStatus();
  }
  if (!stop->is_array()) {
    return InvalidParam("stop", "stop must be a string or an array of strings", "invalid_type");
  }
  if (stop->size() > static_cast<size_t>(sampling::kMaxStopStrings)) {
    return InvalidParam(
        "stop", absl::StrCat("stop may list at most ", sampling::kMaxStopStrings, " strings"));
  }
  for (const Json& s : *stop) {
    if (!s.is_string()) {
      return InvalidParam("stop", "stop must be a string or an array of strings", "invalid_type");
    }
    p->stop.push_back(s.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status DecodeTokenIdList(const FieldReader& f, std::string_view key, size_t max,
                               std::vector<int32_t>* out) {
  const Json* list = f.Get(key);
  if (list == nullptr) return absl::OkStatus();
  const std::string name(key);
  if (!list->is_array()) {
    return InvalidParam(name, name + " must be an array of token ids", "invalid_type");
  }
  if (list->size() > max) {
    return InvalidParam(name, absl::StrCat(name, " may list at most ", max, " token ids"));
  }
  for (const Json& id : *list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return InvalidParam(name, name + " must be an array of non-negative integer token ids",
                          "invalid_type");
    }
    out->push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

absl::Status DecodeLogitBias(const FieldReader& f, sampling::SamplingParams* p) {
  const Json* bias = f.Get("logit_bias");
  if (bias == nullptr) return absl::OkStatus();
  if (!bias->is_object()) {
    return InvalidParam("logit_bias", "logit_bias must be an object mapping token ids to numbers",
                        "invalid_type");
  }
  if (bias->size() > static_cast<size_t>(sampling::kMaxLogitBiasEntries)) {
    return InvalidParam("logit_bias", absl::StrCat("logit_bias may have at most ",
                                                   sampling::kMaxLogitBiasEntries, " entries"));
  }
  for (const auto& [key, value] : bias->items()) {
    int64_t id = -1;
    size_t used = 0;
    try {
      id = std::stoll(key, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != key.size() || id < 0 || id > INT32_MAX) {
      return InvalidParam("logit_bias",
                          "logit_bias keys must be token ids (non-negative "
                          "integers as strings)");
    }
    if (!value.is_number()) {
      return InvalidParam("logit_bias", "logit_bias values must be numbers", "invalid_type");
    }
    p->logit_bias[static_cast<int32_t>(id)] = static_cast<float>(value.get<double>());
  }
  return absl::OkStatus();
}

absl::Status DecodeStreamFlags(const FieldReader& f, CommonRequest* r) {
  R2_READ(f.Bool("stream", &r->stream));
  const Json* options = f.Get("stream_options");
  if (options == nullptr) return absl::OkStatus();
  if (!r->stream) {
    return InvalidParam("stream_options", "stream_options is only allowed when stream is true");
  }
  if (!options->is_object()) {
    return InvalidParam("stream_options", "stream_options must be an object", "invalid_type");
  }
  R2_READ(FieldReader(*options, "stream_options.").Bool("include_usage", &r->include_usage));
  return absl::OkStatus();
}

absl::Status DecodeResponseFormat(const FieldReader& f) {
  const Json* format = f.Get("response_format");
  if (format == nullptr) return absl::OkStatus();
  if (!format->is_object()) {
    return InvalidParam("response_format", "response_format must be an object", "invalid_type");
  }
  auto type = format->find("type");
  if (type != format->end() && type->is_string() && *type == "text") return absl::OkStatus();
  return NotSupported("response_format",
                      "response_format other than {\"type\": \"text\"} (structured output)");
}

// The sampling fields both APIs share.
absl::Status DecodeCommon(const Json& body, CommonRequest* r) {
  const FieldReader f(body);
  sampling::SamplingParams& p = r->params;
  R2_READ(f.String("model", &r->model));
  R2_RETURN_IF_ERROR(DecodeStreamFlags(f, r));
  R2_READ(f.Float("temperature", &p.temperature));
  R2_READ(f.Float("top_p", &p.top_p));
  R2_READ(f.Int32("top_k", &p.top_k));
  R2_READ(f.Float("min_p", &p.min_p));
  R2_READ(f.Float("repetition_penalty", &p.repetition_penalty));
  R2_READ(f.Float("presence_penalty", &p.presence_penalty));
  R2_READ(f.Float("frequency_penalty", &p.frequency_penalty));
  R2_RETURN_IF_ERROR(DecodeLogitBias(f, &p));
  int64_t seed = 0;
  absl::StatusOr<bool> has_seed = f.Int64("seed", &seed);
  if (!has_seed.ok()) return has_seed.status();
  if (*has_seed) p.seed = seed;
  R2_READ(f.Int32("n", &p.n, 1, sampling::kMaxChoices));
  R2_READ(f.Int32("min_tokens", &p.min_tokens, 0));
  R2_READ(f.Bool("ignore_eos", &p.ignore_eos));
  R2_RETURN_IF_ERROR(DecodeStop(f, &p));
  R2_RETURN_IF_ERROR(
      DecodeTokenIdList(f, "stop_token_ids", sampling::kMaxStopTokenIds, &p.stop_token_ids));
  R2_READ(f.Bool("include_stop_str_in_output", &p.include_stop_str_in_output));
  R2_READ(f.Bool("skip_special_tokens", &p.skip_special_tokens));
  R2_READ(f.Int32("priority", &r->priority));
  R2_READ(f.String("cache_salt", &r->cache_salt));
  R2_READ(f.Bool("return_tokens_as_token_ids", &r->return_tokens_as_token_ids));
  return DecodeResponseFormat(f);
}

absl::Status DecodeMaxTokens(const FieldReader& f, std::string_view key,
                             sampling::SamplingParams* p) {
  int32_t max_tokens = 0;
  absl::StatusOr<bool> got = f.Int32(key, &max_tokens, 1);
  if (!got.ok()) return got.status();
  if (*got) p->max_tokens = max_tokens;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Json> ParseJsonBody(std::string_view body) {
  if (!DepthWithin(body, kMaxJsonDepth)) {
    return InvalidParam(
        "", absl::StrCat("JSON nesting deeper than ", kMaxJsonDepth, " levels is not accepted"),
        "invalid_json");
  }
  // Duplicate keys are refused rather than resolved (last wins in most parsers, first in some):
  // a proxy that checked one value must not see the server act on another.
  std::vector<std::unordered_set<std::string>> keys;  // the keys of each open object
  std::string duplicate;
  bool duplicate_top_level = false;
  const Json::parser_callback_t track_keys = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(key).second && duplicate.empty()) {
            duplicate = key;
            duplicate_top_level = keys.size() == 1;
          }
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json parsed = Json::parse(body, track_keys, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return InvalidParam("", "the request body is not valid JSON", "invalid_json");
  }
  if (!duplicate.empty()) {
    // At most 64 bytes of the key, cut on a UTF-8 character boundary.
    size_t cut = std::min<size_t>(duplicate.size(), 64);
    while (cut > 0 && cut < duplicate.size() && (duplicate[cut] & 0xC0) == 0x80) --cut;
    const bool whole = cut == duplicate.size();
    return InvalidParam(
        duplicate_top_level && whole ? duplicate : "",
        absl::StrCat("the request body repeats the key \"", duplicate.substr(0, cut),
                     whole ? "" : "...", "\" in one object"),
        "invalid_json");
  }
  if (!parsed.is_object()) {
    return InvalidParam(
        "", absl::StrCat("the request body must be a JSON object, got ", JsonTypeName(parsed)),
        "invalid_type");
  }
  return parsed;
}

absl::Status ValidateSamplingParams(const sampling::SamplingParams& params, int32_t vocab_size) {
  absl::Status status = params.Validate(vocab_size);
  if (status.ok()) return status;
  return InvalidParam(sampling::InvalidParamName(status), status.message());
}

absl::StatusOr<CompletionRequest> DecodeCompletionRequest(const Json& body) {
  CompletionRequest r;
  r.params.max_tokens = 16;  // the legacy completions default (OpenAI, vLLM, SGLang)
  R2_RETURN_IF_ERROR(DecodeCommon(body, &r));
  const FieldReader f(body);
  R2_RETURN_IF_ERROR(DecodeMaxTokens(f, "max_tokens", &r.params));
  int32_t logprobs = -1;
  R2_READ(f.Int32("logprobs", &logprobs, 0, sampling::kMaxTopLogprobs));
  if (logprobs >= 0) {
    r.params.logprobs = true;
    r.params.top_logprobs = logprobs;
  }
  int32_t best_of = 0;
  absl::StatusOr<bool> has_best_of = f.Int32("best_of", &best_of, 1, sampling::kMaxChoices);
  if (!has_best_of.ok()) return has_best_of.status();
  if (*has_best_of) r.params.best_of = best_of;
  bool echo = false;
  R2_READ(f.Bool("echo", &echo));
  if (echo) return NotSupported("echo", "echo=true");
  if (f.Get("suffix") != nullptr) return NotSupported("suffix", "suffix");

  const Json* prompt = f.Get("prompt");
  if (prompt == nullptr) {
    return InvalidParam("prompt", "prompt is required", "missing_required_parameter");
  }
  const Json* one = prompt;
  if (prompt->is_array() && !prompt->empty() &&
      (prompt->front().is_array() || prompt->front().is_string())) {
    if (prompt->size() > 1) {
      return InvalidParam("prompt",
                          "a list of several prompts is not supported; send one "
                          "request per prompt (use n for several choices)",
                          "unsupported_parameter");
    }
    one = &prompt->front();
  }
  if (one->is_string()) {
    r.prompt_text = one->get<std::string>();
    if (r.prompt_text.empty()) return InvalidParam("prompt", "prompt must not be empty");
    return r;
  }
  if (one->is_array()) {
    r.prompt_is_token_ids = true;
    Json wrapper = {{"prompt", *one}};
    R2_RETURN_IF_ERROR(DecodeTokenIdList(FieldReader(wrapper), "prompt", SIZE_MAX, &r.prompt_ids));
    if (r.prompt_ids.empty()) return InvalidParam("prompt", "prompt must not be empty");
    return r;
  }
  return InvalidParam("prompt",
                      "prompt must be a string, an array of token ids, or a list "
                      "holding one of those",
                      "invalid_type");
}

}  // namespace r2::server

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;

absl::Status CheckContentParts(const Json& parts, const std::string& name) {
  for (size_t k = 0; k < parts.size(); ++k) {
    const Json& part = parts[k];
    const std::string part_name = absl::StrCat(name, "[", k, "]");
    if (!part.is_object()) {
      return InvalidParam("messages", part_name + " must be an object", "invalid_type");
    }
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) {
      return InvalidParam("messages", part_name + ".type must be a string", "invalid_type");
    }
    if (*type != "text") {
      return InvalidParam("messages",
                          absl::StrCat(part_name, ": content parts of type ", DumpJson(*type),
                                       " are not supported (text only)"),
                          "unsupported_parameter");
    }
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) {
      return InvalidParam("messages", part_name + ".text must be a string", "invalid_type");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMessage(const Json& message, size_t i) {
  const std::string name = absl::StrCat("messages[", i, "]");
  if (!message.is_object()) {
    return InvalidParam("messages", name + " must be an object", "invalid_type");
  }
  auto role = message.find("role");
  if (role == message.end() || !role->is_string() || role->get_ref<const std::string&>().empty()) {
    return InvalidParam("messages", name + ".role must be a non-empty string", "invalid_type");
  }
  // The roles DeepSeek's chat template renders ("developer" is OpenAI's newer name for system
  // and is rendered as one); any other role would be dropped from the prompt without a word.
  const std::string& role_name = role->get_ref<const std::string&>();
  if (role_name != "system" && role_name != "developer" && role_name != "user" &&
      role_name != "assistant" && role_name != "tool") {
    return InvalidParam("messages",
                        absl::StrCat(name, ".role '", role_name,
                                     "' is not one of system, developer, user, assistant, tool"),
                        "invalid_value");
  }
  auto content = message.find("content");
  const bool assistant = *role == "assistant";
  if (content == message.end() || content->is_null()) {
    if (assistant) return absl::OkStatus();  // e.g. only tool_calls
    return InvalidParam("messages", name + ".content is required", "missing_required_parameter");
  }
  if (content->is_string()) return absl::OkStatus();
  if (content->is_array()) return CheckContentParts(*content, name + ".content");
  return InvalidParam("messages", name + ".content must be a string or an array of parts",
                      "invalid_type");
}

absl::Status DecodeMessages(const FieldReader& f, ChatCompletionRequest* r) {
  const Json* messages = f.Get("messages");
  if (messages == nullptr) {
    return InvalidParam("messages", "messages is required", "missing_required_parameter");
  }
  if (!messages->is_array() || messages->empty()) {
    return InvalidParam("messages", "messages must be a non-empty array", "invalid_type");
  }
  r->messages = *messages;  // shapes checked by CheckChatRequest
  return absl::OkStatus();
}

absl::Status CheckTool(const Json& tool, size_t i) {
  const std::string name = absl::StrCat("tools[", i, "]");
  if (!tool.is_object() || tool.value("type", Json()) != "function") {
    return InvalidParam("tools", name + " must be {\"type\": \"function\", \"function\": {...}}",
                        "invalid_type");
  }
  auto fn = tool.find("function");
  if (fn == tool.end() || !fn->is_object()) {
    return InvalidParam("tools", name + ".function must be an object", "invalid_type");
  }
  auto fn_name = fn->find("name");
  if (fn_name == fn->end() || !fn_name->is_string() ||
      fn_name->get_ref<const std::string&>().empty()) {
    return InvalidParam("tools", name + ".function.name must be a non-empty string",
                        "invalid_type");
  }
  auto params = fn->find("parameters");
  if (params != fn->end() && !params->is_null() && !params->is_object()) {
    return InvalidParam("tools", name + ".function.parameters must be an object", "invalid_type");
  }
  return absl::OkStatus();
}

bool HasTool(const Json& tools, const std::string& name) {
  for (const Json& tool : tools) {
    if (tool["function"]["name"] == name) return true;
  }
  return false;
}

absl::Status DecodeToolChoice(const FieldReader& f, ChatCompletionRequest* r) {
  const bool has_tools = r->tools.is_array() && !r->tools.empty();
  r->tool_choice = has_tools ? ToolChoice::kAuto : ToolChoice::kNone;
  const Json* choice = f.Get("tool_choice");
  if (choice == nullptr) return absl::OkStatus();
  if (choice->is_string()) {
    const std::string& s = choice->get_ref<const std::string&>();
    if (s == "none")
      r->tool_choice = ToolChoice::kNone;
    else if (s == "auto")
      r->tool_choice = ToolChoice::kAuto;
    else if (s == "required")
      r->tool_choice = ToolChoice::kRequired;
    else
      return InvalidParam("tool_choice",
                          "tool_choice must be none, auto, required or "
                          "{\"type\": \"function\", \"function\": {\"name\"}}");
  } else if (choice->is_object()) {
    const Json fn = choice->value("function", Json());
    if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string()) {
      return InvalidParam("tool_choice", "tool_choice.function.name must be a string",
                          "invalid_type");
    }
    r->tool_choice = ToolChoice::kNamed;
    r->tool_choice_name = fn["name"].get<std::string>();
  } else {
    return InvalidParam("tool_choice", "tool_choice must be a string or an object", "invalid_type");
  }
  return absl::OkStatus();
}

absl::Status DecodeTools(const FieldReader& f, ChatCompletionRequest* r) {
  const Json* tools = f.Get("tools");
  if (tools != nullptr) {
    if (!tools->is_array()) {
      return InvalidParam("tools", "tools must be an array", "invalid_type");
    }
    if (!tools->empty()) r->tools = *tools;  // shapes checked by CheckChatRequest
  }
  if (f.Get("functions") != nullptr)
    return InvalidParam("functions",
                        "functions is deprecated "
                        "and not supported; use "
                        "tools",
                        "unsupported_parameter");
  return DecodeToolChoice(f, r);
}

}  // namespace

absl::StatusOr<ChatCompletionRequest> DecodeChatCompletionRequest(const Json& body) {
  ChatCompletionRequest r;
  R2_RETURN_IF_ERROR(DecodeCommon(body, &r));
  const FieldReader f(body);
  R2_RETURN_IF_ERROR(DecodeMessages(f, &r));
  R2_RETURN_IF_ERROR(DecodeMaxTokens(f, "max_tokens", &r.params));
  R2_RETURN_IF_ERROR(DecodeMaxTokens(f, "max_completion_tokens", &r.params));
  R2_READ(f.Bool("logprobs", &r.params.logprobs));
  R2_READ(f.Int32("top_logprobs", &r.params.top_logprobs, 0, sampling::kMaxTopLogprobs));
  R2_RETURN_IF_ERROR(DecodeTools(f, &r));
  R2_READ(f.Bool("add_generation_prompt", &r.add_generation_prompt));
  if (const Json* kwargs = f.Get("chat_template_kwargs")) {
    if (!kwargs->is_object()) {
      return InvalidParam("chat_template_kwargs", "chat_template_kwargs must be an object",
                          "invalid_type");
    }
    r.chat_template_kwargs = *kwargs;
  }
  R2_RETURN_IF_ERROR(CheckChatRequest(r));
  return r;
}

absl::Status CheckChatRequest(const ChatCompletionRequest& r) {
  if (!r.messages.is_array() || r.messages.empty()) {
    return InvalidParam("messages", "messages must be a non-empty array", "invalid_type");
  }
  if (r.messages.size() > static_cast<size_t>(kMaxMessages)) {
    return InvalidParam("messages", absl::StrCat("at most ", kMaxMessages, " messages"));
  }
  for (size_t i = 0; i < r.messages.size(); ++i) {
    R2_RETURN_IF_ERROR(CheckMessage(r.messages[i], i));
  }
  if (r.params.top_logprobs > 0 && !r.params.logprobs) {
    return InvalidParam("top_logprobs", "top_logprobs requires logprobs to be true");
  }
  const bool has_tools = r.tools.is_array() && !r.tools.empty();
  if (!r.tools.is_null() && !r.tools.is_array()) {
    return InvalidParam("tools", "tools must be an array", "invalid_type");
  }
  if (has_tools && r.tools.size() > static_cast<size_t>(kMaxTools)) {
    return InvalidParam("tools", absl::StrCat("at most ", kMaxTools, " tools"));
  }
  for (size_t i = 0; has_tools && i < r.tools.size(); ++i) {
    R2_RETURN_IF_ERROR(CheckTool(r.tools[i], i));
  }
  if (r.tool_choice != ToolChoice::kNone && !has_tools) {
    return InvalidParam("tool_choice", "tool_choice requires tools");
  }
  if (r.tool_choice == ToolChoice::kNamed && !HasTool(r.tools, r.tool_choice_name)) {
    return InvalidParam("tool_choice", "tool_choice names a function that is not in tools");
  }
  return absl::OkStatus();
}

}  // namespace r2::server

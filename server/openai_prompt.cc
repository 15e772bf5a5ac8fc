#include "server/openai_prompt.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/openai_error.h"
#include "server/openai_fields.h"

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<std::unique_ptr<chat::ChatTemplate>> LoadChatTemplate(const std::string& dir) {
  const std::string path = dir + "/tokenizer_config.json";
  std::ifstream in(path);
  if (!in) return nullptr;  // no template: chat completions answer 400
  std::stringstream text;
  text << in.rdbuf();
  Json config = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  if (!config.contains("chat_template")) return nullptr;
  absl::StatusOr<chat::ChatTemplate> t = chat::ChatTemplate::FromTokenizerConfig(config);
  if (!t.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": chat_template: ", t.status().message()));
  }
  return std::make_unique<chat::ChatTemplate>(*std::move(t));
}

std::string TemplateSource(const std::string& dir) {
  std::ifstream in(dir + "/tokenizer_config.json");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool EndsInThink(absl::string_view prompt) {
  while (!prompt.empty() && (prompt.back() == '\n' || prompt.back() == ' ')) {
    prompt.remove_suffix(1);
  }
  return absl::EndsWith(prompt, "<think>");
}

absl::Status ContextTooLong(int64_t prompt_tokens, int64_t max_tokens, int64_t limit,
                            absl::string_view param) {
  std::string message =
      absl::StrCat("This model's maximum context length is ", limit,
                   " tokens. However, your request has ", prompt_tokens, " input tokens");
  if (max_tokens > 0) absl::StrAppend(&message, " plus ", max_tokens, " max_tokens");
  absl::StrAppend(&message, ". Please reduce the length of the input or of max_tokens.");
  return InvalidParam(param, message, "context_length_exceeded");
}

absl::Status CheckLength(const ServedModel& model, const engine::Request& r,
                         absl::string_view prompt_param) {
  const int64_t n = static_cast<int64_t>(r.prompt.size());
  const int64_t limit = model.max_model_len();
  if (n >= limit) return ContextTooLong(n, 0, limit, prompt_param);
  if (r.params.max_tokens && n + *r.params.max_tokens > limit) {
    return ContextTooLong(n, *r.params.max_tokens, limit, "max_tokens");
  }
  return absl::OkStatus();
}

absl::Status CheckTokenIds(const ServedModel& model, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= model.vocab_size()) {
      return InvalidParam("prompt", absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                                 model.vocab_size(), ")"));
    }
  }
  return absl::OkStatus();
}

Json ToolsForTemplate(const ChatCompletionRequest& request) {
  if (request.tool_choice == ToolChoice::kNone) return Json();
  if (request.tool_choice != ToolChoice::kNamed) return request.tools;
  Json only = Json::array();
  for (const Json& tool : request.tools) {
    if (tool["function"]["name"] == request.tool_choice_name) only.push_back(tool);
  }
  return only;
}

absl::StatusOr<std::vector<int32_t>> Tokenize(const ServedModel& model, std::string_view text,
                                              bool add_special_tokens) {
  absl::StatusOr<std::vector<int32_t>> ids =
      model.tokenizer()->Encode(text, add_special_tokens, /*parse_special=*/true);
  if (!ids.ok()) return InvalidParam("prompt", ids.status().message());
  return ids;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Create(
    const ServedModelOptions& options, const tokenizer::Tokenizer* tokenizer, int32_t vocab_size,
    int32_t max_model_len) {
  std::unique_ptr<ServedModel> m(new ServedModel());
  m->name_ = options.name;
  m->model_dir_ = options.model_dir;
  m->tokenizer_ = tokenizer;
  m->vocab_size_ = vocab_size;
  m->max_model_len_ = max_model_len;
  if (tokenizer != nullptr) {
    absl::StatusOr<std::unique_ptr<chat::ChatTemplate>> t = LoadChatTemplate(options.model_dir);
    if (!t.ok()) return t.status();
    m->chat_template_ = *std::move(t);
  }
  const std::string source = m->chat_template_ ? TemplateSource(options.model_dir) : "";
  m->reasoning_ = options.reasoning && absl::StrContains(source, "<think>");
  // V3.1 writes NAME<｜tool▁sep｜>ARGS; V3/R1 write TYPE<｜tool▁sep｜>NAME then a json fence.
  m->tool_call_format_ =
      absl::StrContains(source, "<｜tool▁sep｜>' + tool['function']['arguments']")
          ? chat::ToolCallFormat::kDeepSeekV31
          : chat::ToolCallFormat::kDeepSeekV3;
  return m;
}

absl::Status CheckModelName(const ServedModel& model, const std::string& requested) {
  if (requested.empty() || requested == model.name()) return absl::OkStatus();
  return WithCode(
      absl::NotFoundError(absl::StrCat(
          "The model '", requested, "' does not exist; this server serves '", model.name(), "'")),
      "model_not_found");
}

absl::StatusOr<std::string> RenderChatPrompt(const ServedModel& model,
                                             const ChatCompletionRequest& request) {
  if (model.chat_template() == nullptr) {
    return InvalidParam("messages",
                        "this model has no chat template (tokenizer_config.json "
                        "with chat_template); use /v1/completions",
                        "chat_template_unavailable");
  }
  chat::ChatRenderRequest render;
  render.messages = request.messages;
  for (auto& message : render.messages) {
    if (message["role"] == "developer") message["role"] = "system";
  }
  render.tools = ToolsForTemplate(request);
  render.add_generation_prompt = request.add_generation_prompt;
  render.kwargs = request.chat_template_kwargs;
  absl::StatusOr<std::string> prompt = model.chat_template()->Render(render);
  if (!prompt.ok()) {
    return InvalidParam("messages", absl::StrCat("chat template: ", prompt.status().message()));
  }
  return prompt;
}

absl::StatusOr<PreparedRequest> PrepareChat(const ServedModel& model,
                                            const ChatCompletionRequest& request) {
  R2_RETURN_IF_ERROR(CheckModelName(model, request.model));
  R2_RETURN_IF_ERROR(ValidateSamplingParams(request.params, model.vocab_size()));
  absl::StatusOr<std::string> prompt = RenderChatPrompt(model, request);
  if (!prompt.ok()) return prompt.status();
  PreparedRequest out;
  absl::StatusOr<std::vector<int32_t>> ids = Tokenize(model, *prompt, false);
  if (!ids.ok()) return InvalidParam("messages", ids.status().message());
  out.request.prompt = *std::move(ids);
  out.request.params = request.params;
  out.request.priority = request.priority;
  out.request.cache_salt = request.cache_salt;
  R2_RETURN_IF_ERROR(CheckLength(model, out.request, "messages"));
  OutputPlan& plan = out.plan;
  plan.reasoning = model.reasoning();
  plan.starts_in_reasoning = plan.reasoning && EndsInThink(*prompt);
  plan.tool_choice = request.tool_choice;
  plan.tool_choice_name = request.tool_choice_name;
  plan.parse_tools = request.tool_choice != ToolChoice::kNone;
  plan.tool_call_format = model.tool_call_format();
  return out;
}

absl::StatusOr<PreparedRequest> PrepareCompletion(const ServedModel& model,
                                                  const CompletionRequest& request) {
  R2_RETURN_IF_ERROR(CheckModelName(model, request.model));
  PreparedRequest out;
  if (request.prompt_is_token_ids) {
    R2_RETURN_IF_ERROR(CheckTokenIds(model, request.prompt_ids));
    out.request.prompt = request.prompt_ids;
  } else {
    if (model.tokenizer() == nullptr) {
      return InvalidParam("prompt",
                          "this model has no tokenizer (tokenizer.json); send the "
                          "prompt as token ids",
                          "tokenizer_unavailable");
    }
    absl::StatusOr<std::vector<int32_t>> ids = Tokenize(model, request.prompt_text, true);
    if (!ids.ok()) return ids.status();
    out.request.prompt = *std::move(ids);
  }
  out.request.params = request.params;
  out.request.priority = request.priority;
  out.request.cache_salt = request.cache_salt;
  R2_RETURN_IF_ERROR(ValidateSamplingParams(out.request.params, model.vocab_size()));
  R2_RETURN_IF_ERROR(CheckLength(model, out.request, "prompt"));
  return out;
}

}  // namespace r2::server

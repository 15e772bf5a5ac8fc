#include "server/grpc/proto_convert.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "server/openai_error.h"
#include "server/openai_fields.h"
#include "server/openai_response.h"

namespace r2::server::grpc_api {
namespace {

using Json = nlohmann::ordered_json;

// Parses a JSON text field that must hold an object; empty text gives `empty`.
absl::StatusOr<Json> JsonObjectField(const std::string& text, const std::string& param,
                                     const std::string& what, Json empty) {
  if (text.empty()) return empty;
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return InvalidParam(param, absl::StrCat(what, " is not valid JSON"), "invalid_json");
  }
  if (!parsed.is_object()) {
    return InvalidParam(param,
                        absl::StrCat(what, " must be a JSON object, got ", JsonTypeName(parsed)),
                        "invalid_type");
  }
  return parsed;
}

Json ToolCallJson(const v1::ToolCall& call) {
  return Json{{"id", call.id()},
              {"type", "function"},
              {"function", {{"name", call.name()}, {"arguments", call.arguments()}}}};
}

Json MessageJson(const v1::ChatMessage& m) {
  Json out{{"role", m.role()}};
  out["content"] = m.has_content() ? Json(m.content()) : Json();
  if (!m.name().empty()) out["name"] = m.name();
  if (m.tool_calls_size() > 0) {
    out["tool_calls"] = Json::array();
    for (const v1::ToolCall& call : m.tool_calls()) out["tool_calls"].push_back(ToolCallJson(call));
  }
  if (!m.tool_call_id().empty()) out["tool_call_id"] = m.tool_call_id();
  if (m.has_reasoning_content()) out["reasoning_content"] = m.reasoning_content();
  return out;
}

absl::Status ToolsJson(const v1::ChatRequest& request, ChatCompletionRequest* out) {
  if (request.tools_size() == 0) return absl::OkStatus();
  out->tools = Json::array();
  for (int i = 0; i < request.tools_size(); ++i) {
    const v1::Tool& tool = request.tools(i);
    Json fn{{"name", tool.name()}};
    if (!tool.description().empty()) fn["description"] = tool.description();
    absl::StatusOr<Json> params = JsonObjectField(
        tool.parameters_json(), "tools", absl::StrCat("tools[", i, "].parameters_json"), Json());
    if (!params.ok()) return params.status();
    if (!params->is_null()) fn["parameters"] = *std::move(params);
    out->tools.push_back(Json{{"type", "function"}, {"function", std::move(fn)}});
  }
  return absl::OkStatus();
}

void ApplyToolChoice(const v1::ChatRequest& request, ChatCompletionRequest* out) {
  const bool has_tools = request.tools_size() > 0;
  out->tool_choice = has_tools ? ToolChoice::kAuto : ToolChoice::kNone;
  if (!request.has_tool_choice()) return;
  const v1::ToolChoice& choice = request.tool_choice();
  switch (choice.choice_case()) {
    case v1::ToolChoice::kFunctionName:
      out->tool_choice = ToolChoice::kNamed;
      out->tool_choice_name = choice.function_name();
      return;
    case v1::ToolChoice::kMode:
      if (choice.mode() == v1::ToolChoice::MODE_NONE) out->tool_choice = ToolChoice::kNone;
      if (choice.mode() == v1::ToolChoice::MODE_AUTO) out->tool_choice = ToolChoice::kAuto;
      if (choice.mode() == v1::ToolChoice::MODE_REQUIRED) out->tool_choice = ToolChoice::kRequired;
      return;
    default:
      return;
  }
}

absl::Status CheckEnumValues(const v1::ChatRequest& request) {
  if (request.has_tool_choice() && request.tool_choice().has_mode() &&
      !v1::ToolChoice::Mode_IsValid(request.tool_choice().mode())) {
    return InvalidParam(
        "tool_choice",
        absl::StrCat("tool_choice.mode ", request.tool_choice().mode(), " is not a known mode"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string FieldPath(const std::string& param) {
  static const std::set<std::string> kSampling = {"temperature",
                                                  "top_p",
                                                  "top_k",
                                                  "min_p",
                                                  "repetition_penalty",
                                                  "presence_penalty",
                                                  "frequency_penalty",
                                                  "logit_bias",
                                                  "seed",
                                                  "n",
                                                  "best_of",
                                                  "max_tokens",
                                                  "min_tokens",
                                                  "ignore_eos",
                                                  "stop",
                                                  "stop_token_ids",
                                                  "include_stop_str_in_output",
                                                  "logprobs",
                                                  "top_logprobs",
                                                  "skip_special_tokens"};
  if (param == "max_completion_tokens") return "sampling.max_tokens";
  if (param == "chat_template_kwargs") return "chat_template_kwargs_json";
  if (kSampling.count(param)) return "sampling." + param;
  return param;
}

::grpc::Status ToGrpcStatus(const absl::Status& status, std::string* field) {
  if (field != nullptr) field->clear();
  if (status.ok()) return ::grpc::Status::OK;
  std::string message(status.message());
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    const std::string path = FieldPath(ApiErrorFromStatus(status).param);
    if (!path.empty()) {
      message = absl::StrCat(path, ": ", message);
      if (field != nullptr) *field = path;
    }
  }
  ::grpc::StatusCode code = static_cast<::grpc::StatusCode>(static_cast<int>(status.code()));
  if (status.code() == absl::StatusCode::kUnknown) code = ::grpc::StatusCode::INTERNAL;
  return ::grpc::Status(code, message);
}

void ApplySampling(const v1::SamplingParams& s, sampling::SamplingParams* p) {
  if (s.has_temperature()) p->temperature = s.temperature();
  if (s.has_top_p()) p->top_p = s.top_p();
  if (s.has_top_k()) p->top_k = s.top_k();
  if (s.has_min_p()) p->min_p = s.min_p();
  if (s.has_repetition_penalty()) p->repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) p->presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) p->frequency_penalty = s.frequency_penalty();
  for (const auto& [token, bias] : s.logit_bias()) p->logit_bias[token] = bias;
  if (s.has_seed()) p->seed = s.seed();
  if (s.has_n()) p->n = s.n();
  if (s.has_max_tokens()) p->max_tokens = s.max_tokens();
  if (s.has_min_tokens()) p->min_tokens = s.min_tokens();
  if (s.has_ignore_eos()) p->ignore_eos = s.ignore_eos();
  for (const std::string& stop : s.stop()) p->stop.push_back(stop);
  for (int32_t id : s.stop_token_ids()) p->stop_token_ids.push_back(id);
  if (s.has_include_stop_str_in_output()) {
    p->include_stop_str_in_output = s.include_stop_str_in_output();
  }
  if (s.has_logprobs()) p->logprobs = s.logprobs();
  if (s.has_top_logprobs()) p->top_logprobs = s.top_logprobs();
  if (s.has_skip_special_tokens()) p->skip_special_tokens = s.skip_special_tokens();
}

absl::StatusOr<CompletionRequest> ToCompletionRequest(const v1::GenerateRequest& request) {
  CompletionRequest r;
  r.model = request.model();
  r.params.max_tokens = 16;  // the completions default, as over HTTP
  ApplySampling(request.sampling(), &r.params);
  r.priority = request.priority();
  r.cache_salt = request.cache_salt();
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (request.text().empty()) return InvalidParam("prompt", "prompt text must not be empty");
      r.prompt_text = request.text();
      return r;
    case v1::GenerateRequest::kTokenIds:
      r.prompt_is_token_ids = true;
      if (request.token_ids().ids().empty()) {
        return InvalidParam("prompt", "prompt token_ids must not be empty");
      }
      r.prompt_ids.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      return r;
    default:
      return InvalidParam("prompt", "a prompt is required: text or token_ids",
                          "missing_required_parameter");
  }
}

absl::StatusOr<ChatCompletionRequest> ToChatRequest(const v1::ChatRequest& request) {
  ChatCompletionRequest r;
  r.model = request.model();
  ApplySampling(request.sampling(), &r.params);
  r.priority = request.priority();
  r.cache_salt = request.cache_salt();
  r.messages = Json::array();
  for (const v1::ChatMessage& m : request.messages()) r.messages.push_back(MessageJson(m));
  if (absl::Status s = ToolsJson(request, &r); !s.ok()) return s;
  if (absl::Status s = CheckEnumValues(request); !s.ok()) return s;
  ApplyToolChoice(request, &r);
  r.add_generation_prompt =
      request.has_add_generation_prompt() ? request.add_generation_prompt() : true;
  absl::StatusOr<Json> kwargs =
      JsonObjectField(request.chat_template_kwargs_json(), "chat_template_kwargs",
                      "chat_template_kwargs_json", Json::object());
  if (!kwargs.ok()) return kwargs.status();
  r.chat_template_kwargs = *std::move(kwargs);
  if (absl::Status s = CheckChatRequest(r); !s.ok()) return s;
  return r;
}

void AddLogprobs(const engine::ChoiceDelta& d, const tokenizer::Tokenizer* tokenizer,
                 google::protobuf::RepeatedPtrField<v1::Logprob>* out) {
  for (size_t k = 0; k < d.token_ids.size() && k < d.logprobs.size(); ++k) {
    v1::Logprob* lp = out->Add();
    v1::TokenLogprob* sampled = lp->mutable_sampled();
    sampled->set_token_id(d.token_ids[k]);
    sampled->set_token(LogprobTokenText(tokenizer, d.token_ids[k]));
    sampled->set_logprob(d.logprobs[k].logprob);
    lp->set_rank(d.logprobs[k].rank);
    for (const sampling::TokenLogprob& t : d.logprobs[k].top_logprobs()) {
      v1::TokenLogprob* top = lp->add_top();
      top->set_token_id(t.token);
      top->set_token(LogprobTokenText(tokenizer, t.token));
      top->set_logprob(t.logprob);
    }
  }
}

v1::FinishReason ToFinishReason(engine::FinishReason reason, bool made_tool_calls) {
  switch (reason) {
    case engine::FinishReason::kStop:
      return made_tool_calls ? v1::FINISH_REASON_TOOL_CALLS : v1::FINISH_REASON_STOP;
    case engine::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kAbort:
      return v1::FINISH_REASON_ABORT;
    case engine::FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
    default:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
}

void SetUsage(const engine::Usage& usage, v1::Usage* out) {
  out->set_prompt_tokens(usage.prompt_tokens);
  out->set_completion_tokens(usage.completion_tokens);
  out->set_total_tokens(usage.prompt_tokens + usage.completion_tokens);
  out->set_cached_tokens(usage.cached_tokens);
}

}  // namespace r2::server::grpc_api

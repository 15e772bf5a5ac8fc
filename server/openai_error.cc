#include "server/openai_error.h"

#include <optional>

#include "absl/strings/cord.h"
#include "engine/sampling/sampling_params.h"

namespace r2::server {
namespace {

std::optional<std::string> Payload(const absl::Status& status, absl::string_view url) {
  absl::optional<absl::Cord> cord = status.GetPayload(url);
  if (!cord) return std::nullopt;
  return std::string(*cord);
}

}  // namespace

absl::Status InvalidParam(absl::string_view param, absl::string_view message,
                          absl::string_view code) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(sampling::kParamPayloadUrl, absl::Cord(param));
  if (!code.empty()) status.SetPayload(kCodePayloadUrl, absl::Cord(code));
  return status;
}

absl::Status WithCode(absl::Status status, absl::string_view code) {
  status.SetPayload(kCodePayloadUrl, absl::Cord(code));
  return status;
}

ApiError MakeApiError(int http_status, absl::string_view type, absl::string_view code,
                      absl::string_view message) {
  return ApiError{http_status, std::string(message), std::string(type), "", std::string(code)};
}

ApiError ApiErrorFromStatus(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  e.param = Payload(status, sampling::kParamPayloadUrl).value_or("");
  std::optional<std::string> code = Payload(status, kCodePayloadUrl);
  if (code == "tool_call_missing") {  // the model, not the request, failed tool_choice
    e.http_status = 422;
    e.type = "tool_call_error";
    e.code = *code;
    return e;
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      e.http_status = 400;
      e.type = "invalid_request_error";
      e.code = code.value_or("invalid_value");
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "invalid_request_error";
      e.code = code.value_or("invalid_api_key");
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "invalid_request_error";
      e.code = code.value_or("not_found");
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = code.value_or("queue_full");
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable_error";
      e.code = code.value_or("service_unavailable");
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      e.code = code.value_or("internal_error");
  }
  return e;
}

nlohmann::ordered_json ApiErrorJson(const ApiError& error) {
  nlohmann::ordered_json body;
  body["message"] = error.message;
  body["type"] = error.type;
  body["param"] =
      error.param.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(error.param);
  body["code"] = error.code.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(error.code);
  nlohmann::ordered_json out;
  out["error"] = std::move(body);
  return out;
}

std::string DumpJson(const nlohmann::ordered_json& json) {
  return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace r2::server

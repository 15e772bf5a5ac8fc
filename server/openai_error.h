#pragma once
// OpenAI-style API errors: {"error": {"message", "type", "param", "code"}} with a string code.
//
// Inside the server, errors travel as absl::Status. The canonical code picks the HTTP status and
// the error type; two payloads refine it: the parameter at fault (sampling::kParamPayloadUrl, so
// SamplingParams::Validate's errors carry through) and the OpenAI string code (kCodePayloadUrl).
//
//   InvalidArgument     400 invalid_request_error   (code: payload, else "invalid_value")
//   Unauthenticated     401 invalid_request_error   invalid_api_key
//   NotFound            404 invalid_request_error   (model_not_found, not_found)
//   ResourceExhausted   429 rate_limit_error         queue_full (the server adds Retry-After)
//   Unavailable         503 service_unavailable_error service_unavailable
//   anything else       500 server_error             internal_error
//   code "tool_call_missing" 422 tool_call_error  (the model ignored tool_choice required/named)
// The HTTP layer builds 405/413/415/431 errors with MakeApiError directly.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace r2::server {

inline constexpr char kCodePayloadUrl[] = "type.r2serve/code";

struct ApiError {
  int http_status = 500;
  std::string message;
  std::string type;
  std::string param;  // empty -> null
  std::string code;   // empty -> null
};

// InvalidArgument naming `param`, with OpenAI code `code` ("invalid_value" when empty).
absl::Status InvalidParam(absl::string_view param, absl::string_view message,
                          absl::string_view code = "invalid_value");
// A status with an explicit OpenAI code payload (e.g. NotFound + "model_not_found").
absl::Status WithCode(absl::Status status, absl::string_view code);

ApiError ApiErrorFromStatus(const absl::Status& status);
ApiError MakeApiError(int http_status, absl::string_view type, absl::string_view code,
                      absl::string_view message);

// {"error": {...}}.
nlohmann::ordered_json ApiErrorJson(const ApiError& error);
// Compact JSON text; invalid UTF-8 in messages is replaced, never thrown on.
std::string DumpJson(const nlohmann::ordered_json& json);

}  // namespace r2::server

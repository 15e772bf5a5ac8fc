#pragma once
// Server-sent events as OpenAI streams them: one `data: <compact JSON>` line and a blank line per
// event, and a single `data: [DONE]` at the end of the stream.
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "server/openai_error.h"

namespace r2::server::http {

inline void AppendSseEvent(const nlohmann::ordered_json& event, std::string* out) {
  out->append("data: ");
  out->append(DumpJson(event));
  out->append("\n\n");
}

inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace r2::server::http

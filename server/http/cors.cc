#include "server/http/cors.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "server/http/absl_sv.h"

namespace r2::server::http {

CorsPolicy::CorsPolicy(std::string_view allowed_origins) {
  for (absl::string_view part : absl::StrSplit(Sv(allowed_origins), ',')) {
    std::string origin(absl::StripAsciiWhitespace(part));
    if (origin == "*")
      any_ = true;
    else if (!origin.empty())
      origins_.push_back(std::move(origin));
  }
}

std::string CorsPolicy::AllowOrigin(std::string_view origin) const {
  if (origin.empty()) return "";
  if (any_) return "*";
  for (const std::string& o : origins_) {
    if (o == origin) return o;
  }
  return "";
}

}  // namespace r2::server::http

#pragma once
// CORS (--allowed-origins): off by default. When an Origin header matches the allowlist (or the
// list holds "*"), responses carry Access-Control-Allow-Origin, and OPTIONS preflights get
// Allow-Methods/Allow-Headers/Max-Age. Credentials are never allowed.
#include <string>
#include <string_view>
#include <vector>

namespace r2::server::http {

class CorsPolicy {
 public:
  CorsPolicy() = default;
  // Comma-separated origins, or "*".
  explicit CorsPolicy(std::string_view allowed_origins);

  bool enabled() const { return any_ || !origins_.empty(); }
  // The Access-Control-Allow-Origin value for `origin`, or "" when not allowed.
  std::string AllowOrigin(std::string_view origin) const;

  static constexpr std::string_view kAllowMethods = "GET, POST, OPTIONS";
  static constexpr std::string_view kAllowHeaders =
      "Authorization, Content-Type, X-API-Key, OpenAI-Organization, OpenAI-Project";

 private:
  bool any_ = false;
  std::vector<std::string> origins_;
};

}  // namespace r2::server::http

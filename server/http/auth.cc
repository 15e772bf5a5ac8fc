#include "server/http/auth.h"

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/http/absl_sv.h"

namespace r2::server::http {

ApiKeys::ApiKeys(const std::vector<std::string>& keys) {
  for (const std::string& key : keys) digests_.push_back(cache::Sha256::Hash(key));
}

absl::StatusOr<ApiKeys> ApiKeys::FromFlagValues(const std::vector<std::string>& values) {
  std::vector<std::string> keys;
  for (const std::string& value : values) {
    if (absl::StartsWith(value, "@")) {
      std::ifstream in(value.substr(1));
      if (!in)
        return absl::InvalidArgumentError(absl::StrCat("--api-key: cannot read ", value.substr(1)));
      for (std::string line; std::getline(in, line);) {
        std::string key(absl::StripAsciiWhitespace(line));
        if (!key.empty() && key[0] != '#') keys.push_back(std::move(key));
      }
      continue;
    }
    for (absl::string_view part : absl::StrSplit(value, ',')) {
      std::string key(absl::StripAsciiWhitespace(part));
      if (!key.empty()) keys.push_back(std::move(key));
    }
  }
  return ApiKeys(keys);
}

bool DigestsEqual(const cache::Sha256::Digest& a, const cache::Sha256::Digest& b) {
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = diff | (a[i] ^ b[i]);
  return diff == 0;
}

bool ApiKeys::AllowsKey(std::string_view key) const {
  const cache::Sha256::Digest presented = cache::Sha256::Hash(key);
  bool match = false;
  for (const cache::Sha256::Digest& d : digests_) match |= DigestsEqual(presented, d);
  return match;
}

bool ApiKeys::Allows(std::string_view authorization, std::string_view x_api_key) const {
  if (!enabled()) return true;
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() > kBearer.size() &&
      absl::EqualsIgnoreCase(Sv(authorization.substr(0, kBearer.size())), Sv(kBearer))) {
    const absl::string_view key =
        absl::StripAsciiWhitespace(Sv(authorization.substr(kBearer.size())));
    return AllowsKey(std::string_view(key.data(), key.size()));
  }
  if (!x_api_key.empty()) return AllowsKey(x_api_key);
  return false;
}

}  // namespace r2::server::http

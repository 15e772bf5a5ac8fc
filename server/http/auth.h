#pragma once
// API keys (--api-key): clients send "Authorization: Bearer <key>" (or "x-api-key: <key>").
// Only the SHA-256 digest of each key is kept; a presented key is hashed and compared with every
// stored digest by a constant-time routine, without early exit, so timing reveals neither which
// key nor how many bytes matched. With no keys configured every request is allowed.
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/cache/sha256.h"

namespace r2::server::http {

class ApiKeys {
 public:
  ApiKeys() = default;
  explicit ApiKeys(const std::vector<std::string>& keys);

  // Parses --api-key values: each a key, a comma-separated list, or @FILE (one key a line).
  static absl::StatusOr<ApiKeys> FromFlagValues(const std::vector<std::string>& values);

  bool enabled() const { return !digests_.empty(); }
  size_t size() const { return digests_.size(); }
  // Whether `authorization` ("Bearer KEY") or `x_api_key` carries a configured key.
  bool Allows(std::string_view authorization, std::string_view x_api_key) const;
  bool AllowsKey(std::string_view key) const;

 private:
  std::vector<cache::Sha256::Digest> digests_;
};

// Constant-time equality of two digests.
bool DigestsEqual(const cache::Sha256::Digest& a, const cache::Sha256::Digest& b);

}  // namespace r2::server::http

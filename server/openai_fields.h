#pragma once
// Strictly typed reads of optional fields of a JSON object, with errors naming the field
// (InvalidParam, code "invalid_type"). A missing field or JSON null leaves *out untouched and
// returns false; a present one of the right type is stored and returns true.
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

// Propagates the error of a StatusOr<bool> field read.
#define R2_READ(expr)                             \
  do {                                            \
    absl::StatusOr<bool> r2_read_ = (expr);       \
    if (!r2_read_.ok()) return r2_read_.status(); \
  } while (0)

#define R2_RETURN_IF_ERROR(expr)             \
  do {                                       \
    absl::Status r2_status_ = (expr);        \
    if (!r2_status_.ok()) return r2_status_; \
  } while (0)

namespace r2::server {

class FieldReader {
 public:
  // `prefix` names the object in errors ("stream_options." gives "stream_options.include_usage").
  explicit FieldReader(const nlohmann::ordered_json& object, std::string prefix = "")
      : object_(object), prefix_(std::move(prefix)) {}

  absl::StatusOr<bool> Bool(std::string_view key, bool* out) const;
  absl::StatusOr<bool> Int64(std::string_view key, int64_t* out) const;
  // An integer within [lo, hi], else InvalidParam naming the range.
  absl::StatusOr<bool> Int32(std::string_view key, int32_t* out, int64_t lo = INT32_MIN,
                             int64_t hi = INT32_MAX) const;
  absl::StatusOr<bool> Float(std::string_view key, float* out) const;
  absl::StatusOr<bool> String(std::string_view key, std::string* out) const;
  // The raw value (nullptr when missing or null).
  const nlohmann::ordered_json* Get(std::string_view key) const;
  std::string Name(std::string_view key) const { return prefix_ + std::string(key); }

 private:
  const nlohmann::ordered_json& object_;
  std::string prefix_;
};

// Name of a JSON value's type for messages ("a string", "an array", ...).
const char* JsonTypeName(const nlohmann::ordered_json& value);

}  // namespace r2::server

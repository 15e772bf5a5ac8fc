#include "server/openai_fields.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/openai_error.h"

namespace r2::server {
namespace {

absl::Status WrongType(const std::string& name, absl::string_view want,
                       const nlohmann::ordered_json& got) {
  return InvalidParam(name, absl::StrCat(name, " must be ", want, ", got ", JsonTypeName(got)),
                      "invalid_type");
}

}  // namespace

const char* JsonTypeName(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case nlohmann::ordered_json::value_t::null:
      return "null";
    case nlohmann::ordered_json::value_t::object:
      return "an object";
    case nlohmann::ordered_json::value_t::array:
      return "an array";
    case nlohmann::ordered_json::value_t::string:
      return "a string";
    case nlohmann::ordered_json::value_t::boolean:
      return "a boolean";
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned:
      return "an integer";
    case nlohmann::ordered_json::value_t::number_float:
      return "a number";
    default:
      return "an unsupported value";
  }
}

const nlohmann::ordered_json* FieldReader::Get(std::string_view key) const {
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<bool> FieldReader::Bool(std::string_view key, bool* out) const {
  const nlohmann::ordered_json* v = Get(key);
  if (v == nullptr) return false;
  if (!v->is_boolean()) return WrongType(Name(key), "a boolean", *v);
  *out = v->get<bool>();
  return true;
}

absl::StatusOr<bool> FieldReader::Int64(std::string_view key, int64_t* out) const {
  const nlohmann::ordered_json* v = Get(key);
  if (v == nullptr) return false;
  if (v->is_number_unsigned()) {
    if (v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return InvalidParam(Name(key), absl::StrCat(Name(key),
                                                  " must fit in a signed 64-bit "
                                                  "integer"));
    }
    *out = static_cast<int64_t>(v->get<uint64_t>());
    return true;
  }
  if (v->is_number_integer()) {
    *out = v->get<int64_t>();
    return true;
  }
  if (v->is_number_float()) {
    // Integers too large for int64 arrive as floats from the parser.
    const double d = v->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) >= 9.2e18) {
      return InvalidParam(Name(key),
                          absl::StrCat(Name(key), " must fit in a signed 64-bit integer"));
    }
  }
  return WrongType(Name(key), "an integer", *v);
}

absl::StatusOr<bool> FieldReader::Int32(std::string_view key, int32_t* out, int64_t lo,
                                        int64_t hi) const {
  int64_t value = 0;
  absl::StatusOr<bool> got = Int64(key, &value);
  if (!got.ok() || !*got) return got;
  if (value < lo || value > hi) {
    return InvalidParam(Name(key),
                        absl::StrCat(Name(key), " must be in [", lo, ", ", hi, "], got ", value));
  }
  *out = static_cast<int32_t>(value);
  return true;
}

absl::StatusOr<bool> FieldReader::Float(std::string_view key, float* out) const {
  const nlohmann::ordered_json* v = Get(key);
  if (v == nullptr) return false;
  if (!v->is_number()) return WrongType(Name(key), "a number", *v);
  const double d = v->get<double>();
  if (!std::isfinite(d) || std::fabs(d) > 1e30) {
    return InvalidParam(Name(key), absl::StrCat(Name(key), " is out of range"));
  }
  *out = static_cast<float>(d);
  return true;
}

absl::StatusOr<bool> FieldReader::String(std::string_view key, std::string* out) const {
  const nlohmann::ordered_json* v = Get(key);
  if (v == nullptr) return false;
  if (!v->is_string()) return WrongType(Name(key), "a string", *v);
  *out = v->get<std::string>();
  return true;
}

}  // namespace r2::server

#pragma once
// std::unordered_map keyed by std::string with lookups by std::string_view (no copy).
#include <string>
#include <string_view>
#include <unordered_map>

namespace r2::tokenizer {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

template <typename V>
using StringMap = std::unordered_map<std::string, V, StringViewHash, std::equal_to<>>;

}  // namespace r2::tokenizer

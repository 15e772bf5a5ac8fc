#pragma once
// Debian's Abseil is built with its own absl::string_view (not std::string_view): Sv() converts
// for StrCat and heterogeneous hash-map lookups.
#include <string_view>

#include "absl/strings/string_view.h"

namespace r2::tokenizer {

inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace r2::tokenizer

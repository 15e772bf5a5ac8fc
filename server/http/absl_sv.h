#pragma once
// Debian's Abseil has its own absl::string_view (not std::string_view); Sv() converts.
#include <string_view>

#include "absl/strings/string_view.h"

namespace r2::server::http {

inline absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace r2::server::http

#pragma once
// Parsing helpers for `r2serve serve` flags (exposed for tests).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace r2::server::http {

// "4096", "512K", "64M", "2G", "1.5G" (binary multiples, case-insensitive, optional "B"/"iB").
absl::StatusOr<int64_t> ParseByteSize(std::string_view text, std::string_view flag);

// Every value of a repeatable flag (--name=V or --name V, dashes or underscores) in argv order.
std::vector<std::string> RepeatedFlagValues(int argc, char** argv, std::string_view name);

}  // namespace r2::server::http

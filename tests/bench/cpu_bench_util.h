#pragma once
// Small helpers shared by the plain-main CPU benchmarks (tests/bench/cpu_*_bench.cc).
#include <time.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace r2::bench {

// Seconds on `clock` (CLOCK_MONOTONIC for wall time, CLOCK_PROCESS_CPUTIME_ID for CPU time).
inline double ClockSeconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The middle value (the upper one of an even count); v must not be empty.
inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// "key=value" -> {key, value}; an argument without '=' is all key, with an empty value.
inline std::pair<std::string, std::string> SplitArg(const std::string& arg) {
  const size_t eq = arg.find('=');
  return {arg.substr(0, eq), eq == std::string::npos ? "" : arg.substr(eq + 1)};
}

// A whole decimal integer; false (out untouched) for anything else.
inline bool ParseInt64(const std::string& value, int64_t* out) {
  int64_t v = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, v);
  if (ec != std::errc() || ptr != end || value.empty()) return false;
  *out = v;
  return true;
}

// "1,8,32" -> {1, 8, 32}; false for an empty list or an item that is not an integer.
inline bool ParseInt64List(const std::string& value, std::vector<int64_t>* out) {
  std::vector<int64_t> items;
  for (size_t pos = 0; pos <= value.size();) {
    const size_t comma = std::min(value.find(',', pos), value.size());
    int64_t v = 0;
    if (!ParseInt64(value.substr(pos, comma - pos), &v)) return false;
    items.push_back(v);
    pos = comma + 1;
  }
  *out = std::move(items);
  return true;
}

}  // namespace r2::bench

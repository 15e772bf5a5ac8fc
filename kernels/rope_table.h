#pragma once
// The cos/sin table that RopeParams reads: cos[p, i] = cos(p * inv_freq[i]) * attention_factor
// (likewise sin), for positions p in [0, max_positions) and i in [0, rope_dim / 2). The model
// computes inv_freq (with any YaRN correction) and the attention factor; the table is built once
// at load time on the host, angles in double precision.
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace r2 {

struct RopeTable {
  int64_t max_positions = 0;
  int64_t half_dim = 0;    // rope_dim / 2
  std::vector<float> cos;  // [max_positions, half_dim]
  std::vector<float> sin;  // [max_positions, half_dim]
};

RopeTable BuildRopeTable(absl::Span<const double> inv_freq, int64_t max_positions,
                         double attention_factor);

}  // namespace r2

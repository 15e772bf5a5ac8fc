#include "kernels/rope_table.h"

#include <cmath>

namespace r2 {

RopeTable BuildRopeTable(absl::Span<const double> inv_freq, int64_t max_positions,
                         double attention_factor) {
  RopeTable table;
  table.max_positions = max_positions;
  table.half_dim = static_cast<int64_t>(inv_freq.size());
  const size_t n = static_cast<size_t>(max_positions) * inv_freq.size();
  table.cos.resize(n);
  table.sin.resize(n);
  for (int64_t p = 0; p < max_positions; ++p) {
    for (int64_t i = 0; i < table.half_dim; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[i];
      table.cos[p * table.half_dim + i] = static_cast<float>(std::cos(angle) * attention_factor);
      table.sin[p * table.half_dim + i] = static_cast<float>(std::sin(angle) * attention_factor);
    }
  }
  return table;
}

}  // namespace r2

#pragma once
// Shared helpers for the reference-kernel tests: seeded random data in every storage dtype and
// error measures.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/numeric.h"
#include "kernels/tensor.h"

namespace r2::testing {

inline std::vector<float> RandomFloats(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A tensor stored in `dtype` whose values are the rounded `values`; `decoded` holds those rounded
// values as float (what a kernel should see).
struct StoredTensor {
  std::vector<uint8_t> bytes;
  std::vector<float> decoded;
  TensorView view;
};

inline StoredTensor Store(const std::vector<float>& values, DType dtype,
                          std::vector<int64_t> shape) {
  StoredTensor t;
  t.decoded.resize(values.size());
  t.bytes.resize(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    float f = values[i];
    if (dtype == DType::kBF16) {
      const uint16_t b = FloatToBF16(f);
      std::memcpy(&t.bytes[2 * i], &b, 2);
      f = BF16ToFloat(b);
    } else if (dtype == DType::kF16) {
      const uint16_t b = FloatToHalf(f);
      std::memcpy(&t.bytes[2 * i], &b, 2);
      f = HalfToFloat(b);
    } else if (dtype == DType::kF8E4M3) {
      t.bytes[i] = FloatToFp8E4M3(f);
      f = Fp8E4M3ToFloat(t.bytes[i]);
    } else {
      std::memcpy(&t.bytes[4 * i], &f, 4);
    }
    t.decoded[i] = f;
  }
  t.view = TensorView{dtype, std::move(shape), t.bytes.data()};
  return t;
}

// max |a - b| / max |b| (0 when both are zero).
inline double RelativeError(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    ref = std::max(ref, std::fabs(b[i]));
  }
  return ref == 0.0 ? diff : diff / ref;
}

inline double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  return RelativeError(a, std::vector<double>(b.begin(), b.end()));
}

}  // namespace r2::testing

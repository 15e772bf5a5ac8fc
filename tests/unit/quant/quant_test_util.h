#pragma once
// Builders for integer weights in the layouts of kernels/quant_format.h, from float matrices.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/numeric.h"
#include "kernels/quant_format.h"
#include "kernels/tensor.h"

namespace r2::testing {

inline std::vector<float> Gaussian(std::mt19937& rng, int64_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// An integer weight that owns its storage; `view` points into it.
struct OwnedIntWeight {
  std::vector<uint8_t> q, scale, zero;
  std::vector<float> group_scale;  // float scales, [out, groups]
  WeightView view;
};

inline OwnedIntWeight MakeInt8Weight(const std::vector<float>& w, int64_t out, int64_t in) {
  OwnedIntWeight r;
  r.q.resize(out * in);
  r.scale.resize(out * 4);
  r.group_scale.resize(out);
  for (int64_t o = 0; o < out; ++o) {
    r.group_scale[o] =
        QuantizeInt8Row(w.data() + o * in, in, reinterpret_cast<int8_t*>(r.q.data()) + o * in);
    std::memcpy(r.scale.data() + 4 * o, &r.group_scale[o], 4);
  }
  r.view.weight = TensorView{DType::kI8, {out, in}, r.q.data()};
  r.view.scale = TensorView{DType::kF32, {out, 1}, r.scale.data()};
  r.view.group_size = in;
  return r;
}

// BF16 scales; zero points packed down the rows when !symmetric.
inline OwnedIntWeight MakeInt4Weight(const std::vector<float>& w, int64_t out, int64_t in,
                                     int64_t group, bool symmetric) {
  OwnedIntWeight r;
  const int64_t groups = QuantGroups(in, group), row_bytes = PackedU4RowBytes(in);
  r.q.assign(out * row_bytes, 0);
  r.scale.resize(out * groups * 2);
  r.group_scale.resize(out * groups);
  std::vector<uint32_t> zeros(((out + 7) / 8) * groups, 0);
  std::vector<int32_t> q(group);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = g * group, n = std::min(group, in - begin);
      const Int4Group res = QuantizeInt4Group(w.data() + o * in + begin, n, symmetric, q.data());
      for (int64_t j = 0; j < n; ++j) PackU4(r.q.data() + o * row_bytes, begin + j, q[j]);
      r.group_scale[o * groups + g] = res.scale;
      const uint16_t b = FloatToBF16(res.scale);
      std::memcpy(r.scale.data() + 2 * (o * groups + g), &b, 2);
      zeros[(o / 8) * groups + g] |= static_cast<uint32_t>((res.zero + 8) & 0xf) << (4 * (o % 8));
    }
  }
  r.view.weight = TensorView{DType::kU4, {out, in}, r.q.data()};
  r.view.scale = TensorView{DType::kBF16, {out, groups}, r.scale.data()};
  r.view.group_size = group;
  if (!symmetric) {
    r.zero.resize(zeros.size() * 4);
    std::memcpy(r.zero.data(), zeros.data(), r.zero.size());
    r.view.zero_point = TensorView{DType::kI32, {(out + 7) / 8, groups}, r.zero.data()};
  }
  return r;
}

inline std::vector<float> Dequantize(const WeightView& w) {
  std::vector<float> r(w.out_features() * w.in_features());
  for (int64_t o = 0; o < w.out_features(); ++o) {
    DequantizeIntegerRow(w, o, r.data() + o * w.in_features());
  }
  return r;
}

}  // namespace r2::testing

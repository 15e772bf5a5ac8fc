#include "kernels/quant_format.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/numeric.h"

namespace r2 {
namespace {

absl::Status Invalid(const std::string& op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsFloatDType(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

// Element i of an F32/BF16/F16 tensor (possibly unaligned).
float LoadScale(const TensorView& t, int64_t i) {
  const auto* bytes = static_cast<const uint8_t*>(t.data);
  if (t.dtype == DType::kF32) {
    float v;
    std::memcpy(&v, bytes + 4 * i, 4);
    return v;
  }
  uint16_t v;
  std::memcpy(&v, bytes + 2 * i, 2);
  return t.dtype == DType::kBF16 ? BF16ToFloat(v) : HalfToFloat(v);
}

// The smallest BF16 value >= s (s >= 0, finite).
float RoundUpToBF16(float s) {
  float r = BF16ToFloat(FloatToBF16(s));
  if (r < s) {
    uint16_t bits = FloatToBF16(s);
    r = BF16ToFloat(static_cast<uint16_t>(bits + 1));
  }
  return r;
}

}  // namespace

absl::Status CheckIntegerWeight(const WeightView& w, const std::string& op) {
  const TensorView& q = w.weight;
  const std::string kind = q.dtype == DType::kI8 ? "i8" : "u4";
  if (q.dtype != DType::kI8 && q.dtype != DType::kU4) {
    return Invalid(op,
                   absl::StrCat("not an integer weight: dtype ", std::string(DTypeName(q.dtype))));
  }
  if (q.data == nullptr || q.shape.size() != 2 || q.shape[0] <= 0 || q.shape[1] <= 0) {
    return Invalid(op, absl::StrCat(kind, " weight must be a non-empty 2-d tensor [out, in], got ",
                                    ShapeString(q.shape)));
  }
  const int64_t out = q.shape[0], in = q.shape[1];
  if (w.block_scaled()) return Invalid(op, absl::StrCat(kind, " weight takes no scale_inv"));
  if (w.group_size <= 0) {
    return Invalid(op, absl::StrCat(kind, " weight needs group_size > 0, got ", w.group_size));
  }
  if (q.dtype == DType::kI8 && w.group_size != in) {
    return Invalid(op, absl::StrCat("i8 weight is scaled per output channel: group_size must be ",
                                    in, ", got ", w.group_size));
  }
  const int64_t groups = QuantGroups(in, w.group_size);
  const TensorView& s = w.scale;
  if (s.data == nullptr || !IsFloatDType(s.dtype)) {
    return Invalid(op, absl::StrCat(kind, " weight needs an f32/bf16/f16 scale, got ",
                                    s.data == nullptr ? "none" : std::string(DTypeName(s.dtype))));
  }
  const std::vector<int64_t> want = {out, groups};
  if (s.shape != want) {
    return Invalid(
        op, absl::StrCat(kind, " weight ", ShapeString(q.shape), " with group_size ", w.group_size,
                         " needs scale shape ", ShapeString(want), ", got ", ShapeString(s.shape)));
  }
  const TensorView& z = w.zero_point;
  if (z.data != nullptr) {
    if (q.dtype == DType::kI8) return Invalid(op, "i8 weight is symmetric: no zero_point");
    const std::vector<int64_t> want_z = {(out + 7) / 8, groups};
    if (z.dtype != DType::kI32 || z.shape != want_z) {
      return Invalid(op, absl::StrCat("u4 zero_point must be i32 ", ShapeString(want_z), ", got ",
                                      std::string(DTypeName(z.dtype)), " ", ShapeString(z.shape)));
    }
  }
  return absl::OkStatus();
}

float IntegerWeightScale(const WeightView& w, int64_t o, int64_t g) {
  return LoadScale(w.scale, o * w.scale.shape[1] + g);
}

int32_t U4ZeroPoint(const WeightView& w, int64_t o, int64_t g) {
  if (w.zero_point.data == nullptr) return 0;
  const int64_t groups = w.zero_point.shape[1];
  uint32_t word;
  std::memcpy(&word, static_cast<const uint8_t*>(w.zero_point.data) + 4 * ((o / 8) * groups + g),
              4);
  return static_cast<int32_t>((word >> (4 * (o % 8))) & 0xf) - 8;
}

void DequantizeIntegerRow(const WeightView& w, int64_t o, float* row) {
  const int64_t in = w.in_features(), groups = w.scale.shape[1];
  if (w.weight.dtype == DType::kI8) {
    const auto* q = static_cast<const int8_t*>(w.weight.data) + o * in;
    const float s = LoadScale(w.scale, o);
    for (int64_t j = 0; j < in; ++j) row[j] = static_cast<float>(q[j]) * s;
    return;
  }
  const auto* packed = static_cast<const uint8_t*>(w.weight.data) + o * PackedU4RowBytes(in);
  for (int64_t g = 0; g < groups; ++g) {
    const float s = LoadScale(w.scale, o * groups + g);
    const int32_t z = U4ZeroPoint(w, o, g);
    const int64_t end = std::min(in, (g + 1) * w.group_size);
    for (int64_t j = g * w.group_size; j < end; ++j) {
      row[j] = static_cast<float>(UnpackU4(packed, j) - z) * s;
    }
  }
}

float QuantizeInt8Row(const float* x, int64_t n, int8_t* q) {
  float amax = 0.0f;
  for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  if (!(amax > 0.0f)) {
    std::fill(q, q + n, int8_t{0});
    return 0.0f;
  }
  const float s = amax / 127.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float v = std::nearbyint(x[j] / s);
    q[j] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
  }
  return s;
}

Int4Group QuantizeInt4Group(const float* x, int64_t n, bool symmetric, int32_t* q) {
  float lo = 0.0f, hi = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  Int4Group g;
  const float range = symmetric ? std::max(-lo, hi) / 7.5f : (hi - lo) / 15.0f;
  if (!(range > 0.0f)) {
    std::fill(q, q + n, 0);
    return g;
  }
  g.scale = RoundUpToBF16(range);
  if (!symmetric) {
    g.zero = static_cast<int32_t>(std::clamp(std::nearbyint(-8.0f - lo / g.scale), -8.0f, 7.0f));
  }
  for (int64_t j = 0; j < n; ++j) {
    const float v = std::nearbyint(x[j] / g.scale) + static_cast<float>(g.zero);
    q[j] = static_cast<int32_t>(std::clamp(v, -8.0f, 7.0f));
  }
  return g;
}

namespace {

// std::nearbyint in the default rounding mode (to nearest, ties to even) for |v| < 2^22, in a form
// that vectorizes without SSE4.1; larger |v| come back as large values of the same sign, which
// the callers' clamps saturate. (Needs IEEE float arithmetic: no -ffast-math.)
inline float RoundToNearestEven(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23: v + kMagic has no fraction bits
  return (v + kMagic) - kMagic;
}

// v limited to [lo, hi], written as the compare-and-select that maps to min/max instructions.
inline float ClampTo(float v, float lo, float hi) {
  v = v > hi ? hi : v;
  return v < lo ? lo : v;
}

// Squared error of x rounded to the grid (q - z) s with q limited to [lo, hi], in float (summed
// in blocks of 256 into a double): the fast, vectorized measure that ranks candidate scales.
double GridError(const float* x, int64_t n, float s, float z, float lo, float hi) {
  double err = 0.0;
  for (int64_t b = 0; b < n; b += 256) {
    const int64_t e = std::min(n, b + 256);
    float block = 0.0f;
#pragma omp simd reduction(+ : block)
    for (int64_t j = b; j < e; ++j) {
      const float v = ClampTo(RoundToNearestEven(x[j] / s) + z, lo, hi);
      const float d = x[j] - (v - z) * s;
      block += d * d;
    }
    err += block;
  }
  return err;
}

// Squared error of x quantized symmetrically to [-127, 127] with scale s, writing q.
double QuantizeInt8WithScale(const float* x, int64_t n, float s, int8_t* q) {
  double err = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const float v = ClampTo(RoundToNearestEven(x[j] / s), -127.0f, 127.0f);
    q[j] = static_cast<int8_t>(v);
    const double d = double{x[j]} - double{v} * s;
    err += d * d;
  }
  return err;
}

// The least-squares scale for fixed integers: sum x (q - z) / sum (q - z)^2 (0 if all q == z).
template <typename Int>
float LeastSquaresScale(const float* x, int64_t n, const Int* q, int32_t z) {
  double xq = 0.0, qq = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    const double v = static_cast<double>(q[j]) - z;
    xq += double{x[j]} * v;
    qq += v * v;
  }
  return qq > 0.0 && xq > 0.0 ? static_cast<float>(xq / qq) : 0.0f;
}

// The nearest BF16 value to s.
float NearestBF16(float s) { return BF16ToFloat(FloatToBF16(s)); }

int NumClipCandidates() {
  return static_cast<int>(std::lround((1.0f - kMinClipRatio) / kClipRatioStep));
}

}  // namespace

double QuantizeInt4WithScale(const float* x, int64_t n, float s, int32_t z, int32_t* q) {
  double err = 0.0;
  const auto zf = static_cast<float>(z);
  for (int64_t j = 0; j < n; ++j) {
    const float v = ClampTo(RoundToNearestEven(x[j] / s) + zf, -8.0f, 7.0f);
    q[j] = static_cast<int32_t>(v);
    const double d = double{x[j]} - (double{v} - z) * s;
    err += d * d;
  }
  return err;
}

float QuantizeInt8WeightRow(const float* x, int64_t n, int8_t* q) {
  const float s0 = QuantizeInt8Row(x, n, q);  // r = 1: max-abs
  if (!(s0 > 0.0f)) return s0;
  // Rank the candidates with the fast float measure, then check the winner against max-abs in
  // double (the exact comparison the guarantee is about).
  float best_s = s0;
  double best = GridError(x, n, s0, 0.0f, -127.0f, 127.0f);
  const float amax = s0 * 127.0f;
  auto consider = [&](float s) {
    if (!(s > 0.0f) || !std::isfinite(s)) return;
    const double err = GridError(x, n, s, 0.0f, -127.0f, 127.0f);
    if (err < best) {
      best = err;
      best_s = s;
    }
  };
  for (int k = 1; k <= NumClipCandidates(); ++k) {
    consider((1.0f - kClipRatioStep * static_cast<float>(k)) * amax / 127.0f);
  }
  std::vector<int8_t> trial(n);
  QuantizeInt8WithScale(x, n, best_s, trial.data());
  consider(LeastSquaresScale(x, n, trial.data(), 0));
  if (best_s == s0) return s0;
  const double err0 = QuantizeInt8WithScale(x, n, s0, trial.data());
  if (QuantizeInt8WithScale(x, n, best_s, trial.data()) > err0) return s0;
  std::copy(trial.begin(), trial.end(), q);
  return best_s;
}

Int4Group QuantizeInt4GroupMinError(const float* x, int64_t n, bool symmetric, int32_t* q) {
  const Int4Group plain = QuantizeInt4Group(x, n, symmetric, q);  // r = 1: max-abs
  if (!(plain.scale > 0.0f)) return plain;
  float lo = 0.0f, hi = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  // Rank the candidates with the fast float measure, then check the winner against max-abs in
  // double (the exact comparison the guarantee is about).
  Int4Group best = plain;
  double best_err = GridError(x, n, plain.scale, static_cast<float>(plain.zero), -8.0f, 7.0f);
  auto consider = [&](float s, int32_t z) {
    if (!(s > 0.0f) || !std::isfinite(s)) return;
    const double err = GridError(x, n, s, static_cast<float>(z), -8.0f, 7.0f);
    if (err < best_err) {
      best_err = err;
      best = {s, z};
    }
  };
  // The zero point that puts the clipped range's low end at -8 (asymmetric).
  auto zero_for = [](float low, float s) {
    return static_cast<int32_t>(std::clamp(std::nearbyint(-8.0f - low / s), -8.0f, 7.0f));
  };
  for (int k = 1; k <= NumClipCandidates(); ++k) {
    const float r = 1.0f - kClipRatioStep * static_cast<float>(k);
    if (symmetric) {
      consider(NearestBF16(r * std::max(-lo, hi) / 7.5f), 0);
    } else {
      const float s = NearestBF16(r * (hi - lo) / 15.0f);
      if (s > 0.0f) consider(s, zero_for(r * lo, s));
    }
  }
  std::vector<int32_t> trial(n);
  QuantizeInt4WithScale(x, n, best.scale, best.zero, trial.data());
  consider(NearestBF16(LeastSquaresScale(x, n, trial.data(), best.zero)), best.zero);
  if (best.scale == plain.scale && best.zero == plain.zero) return plain;
  const double err0 = QuantizeInt4WithScale(x, n, plain.scale, plain.zero, trial.data());
  if (QuantizeInt4WithScale(x, n, best.scale, best.zero, trial.data()) > err0) return plain;
  std::copy(trial.begin(), trial.end(), q);
  return best;
}

}  // namespace r2

// Reference MoeExperts: each (token, expert) pair's SwiGLU in plain float32 loops, the pairs of a
// token combined in order j = 0..top_k-1 and then added to h.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool SupportedDType(DType d) { return IsFloatStorage(d) || d == DType::kF8E4M3; }

// Element (o, j) of an [out, in] expert weight as float32 (FP8 times its block scale).
float WeightAt(const MoeExpertsParams& p, const void* w, const float* scale_inv, int64_t in,
               int64_t o, int64_t j) {
  if (p.dtype != DType::kF8E4M3) return LoadFloat(w, p.dtype, o * in + j);
  const uint8_t q = static_cast<const uint8_t*>(w)[o * in + j];
  const int64_t scale_cols = CeilDiv(in, p.block_in);
  return Fp8E4M3ToFloat(q) * scale_inv[(o / p.block_out) * scale_cols + j / p.block_in];
}

// y[o] = sum_j W[o, j] x[j] for o < out.
void MatVec(const MoeExpertsParams& p, const void* w, const float* scale_inv, int64_t out,
            int64_t in, const float* x, float* y) {
  for (int64_t o = 0; o < out; ++o) {
    float acc = 0.0f;
    for (int64_t j = 0; j < in; ++j) acc += WeightAt(p, w, scale_inv, in, o, j) * x[j];
    y[o] = acc;
  }
}

}  // namespace

absl::Status CheckMoeExperts(const MoeExpertsParams& p) {
  const std::string op = "MoeExperts";
  if (p.expert_views != nullptr) {
    return absl::UnimplementedError(
        "MoeExperts: expert_views are taken by the optimized CPU backend");
  }
  if (p.rows < 0) return Invalid(op, absl::StrCat("rows must be >= 0, got ", p.rows));
  if (p.hidden <= 0 || p.width <= 0) {
    return Invalid(op,
                   absl::StrCat("hidden and width must be > 0, got ", p.hidden, " and ", p.width));
  }
  if (p.num_experts <= 0) return Invalid(op, "num_experts must be > 0");
  if (p.top_k < 1) return Invalid(op, absl::StrCat("top_k must be >= 1, got ", p.top_k));
  if (!SupportedDType(p.dtype)) {
    return Invalid(op, absl::StrCat("unsupported expert dtype ", Name(p.dtype)));
  }
  if (p.x_stride != 0 && p.x_stride < p.hidden) return Invalid(op, "x_stride < hidden");
  if (p.h_stride != 0 && p.h_stride < p.hidden) return Invalid(op, "h_stride < hidden");
  if (p.dtype == DType::kF8E4M3 && (p.block_out <= 0 || p.block_in <= 0)) {
    return Invalid(op, "block_out and block_in must be > 0");
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.h == nullptr) return Invalid(op, "null x or h");
  if (p.expert_ids == nullptr || p.expert_weights == nullptr) {
    return Invalid(op, "null expert_ids or expert_weights");
  }
  if (p.gate == nullptr || p.up == nullptr || p.down == nullptr) {
    return Invalid(op, "null gate, up or down pointer array");
  }
  if (p.dtype == DType::kF8E4M3 &&
      (p.gate_scale_inv == nullptr || p.up_scale_inv == nullptr || p.down_scale_inv == nullptr)) {
    return Invalid(op, "f8_e4m3 experts need gate, up and down scale_inv pointer arrays");
  }
  return absl::OkStatus();
}

absl::Status MoeExperts(const MoeExpertsParams& p) {
  if (absl::Status s = CheckMoeExperts(p); !s.ok()) return s;
  const int64_t k = p.top_k, d = p.hidden, width = p.width;
  for (int64_t i = 0; i < p.rows * k; ++i) {
    const int32_t e = p.expert_ids[i];
    if (e < 0 || e >= p.num_experts) {
      return Invalid("MoeExperts",
                     absl::StrCat("expert id ", e, " not in [0, ", p.num_experts, ")"));
    }
    const bool fp8 = p.dtype == DType::kF8E4M3;
    if (p.gate[e] == nullptr || p.up[e] == nullptr || p.down[e] == nullptr ||
        (fp8 && (p.gate_scale_inv[e] == nullptr || p.up_scale_inv[e] == nullptr ||
                 p.down_scale_inv[e] == nullptr))) {
      return Invalid("MoeExperts", absl::StrCat("expert ", e, " has a null weight pointer"));
    }
  }
  const int64_t xs = Stride(p.x_stride, d), hs = Stride(p.h_stride, d);
  const bool fp8 = p.dtype == DType::kF8E4M3;
  std::vector<float> gate(width), up(width), y(d), acc(d);
  for (int64_t t = 0; t < p.rows; ++t) {
    const float* x = p.x + t * xs;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = p.expert_ids[t * k + j];
      MatVec(p, p.gate[e], fp8 ? p.gate_scale_inv[e] : nullptr, width, d, x, gate.data());
      MatVec(p, p.up[e], fp8 ? p.up_scale_inv[e] : nullptr, width, d, x, up.data());
      for (int64_t i = 0; i < width; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
      MatVec(p, p.down[e], fp8 ? p.down_scale_inv[e] : nullptr, d, width, gate.data(), y.data());
      const float w = p.expert_weights[t * k + j];
      for (int64_t o = 0; o < d; ++o) acc[o] += w * y[o];
    }
    float* h = p.h + t * hs;
    for (int64_t o = 0; o < d; ++o) h[o] += acc[o];
  }
  return absl::OkStatus();
}

}  // namespace r2::cpu

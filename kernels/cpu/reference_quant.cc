// Reference integer-weight Linear: W8A8 (integer dot products, y = acc * s_x * s_w) and W4A16
// (weights dequantized per group, float dot products).
#include "kernels/cpu/reference_quant.h"

#include <vector>

#include "kernels/cpu/reference_ops.h"
#include "kernels/quant_format.h"

namespace r2::cpu {
namespace {

void Store(const LinearParams& p, float* y, float value) { *y = p.accumulate ? *y + value : value; }

// W8A8: each activation row is quantized once (symmetric, per token), then every output is an
// exact integer dot product scaled by both scales.
void Int8Linear(const LinearParams& p, int64_t xs, int64_t ys) {
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features();
  std::vector<int8_t> xq(p.rows * in);
  std::vector<float> x_scale(p.rows);
  for (int64_t i = 0; i < p.rows; ++i) {
    x_scale[i] = QuantizeInt8Row(p.x + i * xs, in, xq.data() + i * in);
  }
  const auto* wq = static_cast<const int8_t*>(w.weight.data);
#pragma omp parallel for schedule(static) if (p.rows * in * out >= kParallelWork)
  for (int64_t o = 0; o < out; ++o) {
    const int8_t* wrow = wq + o * in;
    const float w_scale = IntegerWeightScale(w, o, 0);
    for (int64_t i = 0; i < p.rows; ++i) {
      const int8_t* xrow = xq.data() + i * in;
      int64_t acc = 0;
      for (int64_t j = 0; j < in; ++j) acc += int32_t{xrow[j]} * int32_t{wrow[j]};
      Store(p, p.y + i * ys + o, static_cast<float>(acc) * x_scale[i] * w_scale);
    }
  }
}

// W4A16: each weight row is dequantized (per group scale and zero point), float dot products.
void Int4Linear(const LinearParams& p, int64_t xs, int64_t ys) {
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features();
#pragma omp parallel if (p.rows * in * out >= kParallelWork)
  {
    std::vector<float> row(in);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < out; ++o) {
      DequantizeIntegerRow(w, o, row.data());
      for (int64_t i = 0; i < p.rows; ++i) {
        const float* x = p.x + i * xs;
        float acc = 0.0f;
        for (int64_t j = 0; j < in; ++j) acc += x[j] * row[j];
        Store(p, p.y + i * ys + o, acc);
      }
    }
  }
}

}  // namespace

absl::Status QuantizedLinear(const LinearParams& p) {
  if (absl::Status s = CheckIntegerWeight(p.weight, "Linear"); !s.ok()) return s;
  if (p.rows < 0) return Invalid("Linear", "rows must be >= 0");
  if (p.batch != 1) {
    return Invalid("Linear", absl::StrCat("batch > 1 takes bf16/f16/f32 weights only, got ",
                                          Name(p.weight.weight.dtype)));
  }
  if (p.weight_transposed) {
    return Invalid("Linear", absl::StrCat("a transposed weight must be bf16/f16/f32, got ",
                                          Name(p.weight.weight.dtype)));
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr) return Invalid("Linear", "null x or y");
  const int64_t in = p.weight.in_features(), out = p.weight.out_features();
  const int64_t xs = Stride(p.x_stride, in), ys = Stride(p.y_stride, out);
  if (p.weight.weight.dtype == DType::kI8) {
    Int8Linear(p, xs, ys);
  } else {
    Int4Linear(p, xs, ys);
  }
  return absl::OkStatus();
}

}  // namespace r2::cpu

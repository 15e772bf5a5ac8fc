// Reference row-wise ops: embedding, RMSNorm, linear (incl. block-scaled FP8), RoPE, SiLU-mul,
// add, gather and scatter-add of rows.
#include <cmath>
#include <vector>

#include "kernels/cpu/reference_ops.h"
#include "kernels/cpu/reference_quant.h"

namespace r2::cpu {
namespace {

absl::Status CheckFloatVector(const std::string& op, const TensorView& t, int64_t dim) {
  if (t.data == nullptr || !IsFloatStorage(t.dtype)) {
    return Invalid(op, absl::StrCat("weight must be bf16/f16/f32, got ", Name(t.dtype)));
  }
  if (t.numel() != dim) {
    return Invalid(op, absl::StrCat("weight has ", t.numel(), " values, expected ", dim));
  }
  return absl::OkStatus();
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

absl::Status CheckWeight(const WeightView& w) {
  if (w.weight.data == nullptr || w.weight.shape.size() != 2) {
    return Invalid("Linear", "weight must be a 2-d tensor [out, in]");
  }
  if (w.weight.dtype == DType::kF8E4M3) {
    if (w.block_out <= 0 || w.block_in <= 0) return Invalid("Linear", "block sizes must be > 0");
    const TensorView& s = w.scale_inv;
    if (s.data == nullptr || s.dtype != DType::kF32) {
      return Invalid("Linear", "f8_e4m3 weight needs an f32 scale_inv");
    }
    const std::vector<int64_t> want = {CeilDiv(w.out_features(), w.block_out),
                                       CeilDiv(w.in_features(), w.block_in)};
    if (s.shape != want) {
      return Invalid("Linear",
                     absl::StrCat("scale_inv shape must be [", want[0], ", ", want[1], "]"));
    }
    return absl::OkStatus();
  }
  if (!IsFloatStorage(w.weight.dtype)) {
    return Invalid("Linear", absl::StrCat("unsupported weight dtype ", Name(w.weight.dtype)));
  }
  if (w.block_scaled()) return Invalid("Linear", "only f8_e4m3 weights take a scale_inv");
  return absl::OkStatus();
}

// Row o of W as float32, dequantizing FP8 with its block scales. `offset` (elements, float
// dtypes only) selects one weight of a strided batch.
void DecodeWeightRow(const WeightView& w, int64_t o, float* row, int64_t offset = 0,
                     bool transposed = false) {
  const int64_t in = w.in_features();
  if (transposed) {  // float storage only (Linear checks)
    const int64_t out = w.out_features();
    for (int64_t j = 0; j < in; ++j) {
      row[j] = LoadFloat(w.weight.data, w.weight.dtype, offset + j * out + o);
    }
    return;
  }
  if (w.weight.dtype == DType::kF8E4M3) {
    const auto* q = static_cast<const uint8_t*>(w.weight.data) + o * in;
    const int64_t scale_cols = w.scale_inv.shape[1];
    const int64_t scale_row = (o / w.block_out) * scale_cols;
    for (int64_t j = 0; j < in; ++j) {
      const float scale = LoadFloat(w.scale_inv.data, DType::kF32, scale_row + j / w.block_in);
      row[j] = Fp8E4M3ToFloat(q[j]) * scale;
    }
    return;
  }
  for (int64_t j = 0; j < in; ++j) {
    row[j] = LoadFloat(w.weight.data, w.weight.dtype, offset + o * in + j);
  }
}

}  // namespace

absl::Status Embedding(const EmbeddingParams& p) {
  const TensorView& t = p.table;
  if (t.data == nullptr || t.shape.size() != 2 || !IsFloatStorage(t.dtype)) {
    return Invalid("Embedding", "table must be a 2-d bf16/f16/f32 tensor");
  }
  if (p.rows < 0 || (p.rows > 0 && (p.ids == nullptr || p.out == nullptr))) {
    return Invalid("Embedding", "null ids or out");
  }
  const int64_t vocab = t.dim(0), dim = t.dim(1), out_stride = Stride(p.out_stride, dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    if (p.ids[i] < 0 || p.ids[i] >= vocab) {
      return Invalid("Embedding", absl::StrCat("token id ", p.ids[i], " not in [0, ", vocab, ")"));
    }
  }
  for (int64_t i = 0; i < p.rows; ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      p.out[i * out_stride + j] = LoadFloat(t.data, t.dtype, p.ids[i] * dim + j);
    }
  }
  return absl::OkStatus();
}

absl::Status RmsNorm(const RmsNormParams& p) {
  if (p.dim <= 0 || p.rows < 0) return Invalid("RmsNorm", "dim must be > 0 and rows >= 0");
  if (p.rows > 0 && (p.x == nullptr || p.y == nullptr)) return Invalid("RmsNorm", "null x or y");
  if (absl::Status s = CheckFloatVector("RmsNorm", p.weight, p.dim); !s.ok()) return s;
  const int64_t xs = Stride(p.x_stride, p.dim), ys = Stride(p.y_stride, p.dim);
#pragma omp parallel for if (p.rows * p.dim >= kParallelWork)
  for (int64_t i = 0; i < p.rows; ++i) {
    const float* x = p.x + i * xs;
    float sum_sq = 0.0f;
    for (int64_t j = 0; j < p.dim; ++j) sum_sq += x[j] * x[j];
    const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(p.dim) + p.eps);
    float* y = p.y + i * ys;
    for (int64_t j = 0; j < p.dim; ++j) {
      y[j] = LoadFloat(p.weight.data, p.weight.dtype, j) * (x[j] * inv_rms);
    }
  }
  return absl::OkStatus();
}

absl::Status Linear(const LinearParams& p) {
  if (p.weight.integer_quantized()) return QuantizedLinear(p);  // I8 / U4: reference_quant.cc
  if (absl::Status s = CheckWeight(p.weight); !s.ok()) return s;
  if (p.rows < 0) return Invalid("Linear", "rows must be >= 0");
  if (p.batch < 1) return Invalid("Linear", absl::StrCat("batch must be >= 1, got ", p.batch));
  if (p.batch > 1 && p.weight.weight.dtype == DType::kF8E4M3) {
    return Invalid("Linear", "batch > 1 takes bf16/f16/f32 weights only, got f8_e4m3");
  }
  if (p.weight_transposed && p.weight.weight.dtype == DType::kF8E4M3) {
    return Invalid("Linear", "a transposed weight must be bf16/f16/f32, got f8_e4m3");
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr) return Invalid("Linear", "null x or y");
  const int64_t in = p.weight.in_features(), out = p.weight.out_features();
  const int64_t xs = Stride(p.x_stride, in), ys = Stride(p.y_stride, out);
#pragma omp parallel if (p.batch * p.rows * in * out >= kParallelWork)
  {
    std::vector<float> row(in);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t o = 0; o < out; ++o) {
        DecodeWeightRow(p.weight, o, row.data(), b * p.weight_batch_stride, p.weight_transposed);
        const float* xb = p.x + b * p.x_batch_stride;
        float* yb = p.y + b * p.y_batch_stride;
        for (int64_t i = 0; i < p.rows; ++i) {
          const float* x = xb + i * xs;
          float acc = 0.0f;
          for (int64_t j = 0; j < in; ++j) acc += x[j] * row[j];
          float& y = yb[i * ys + o];
          y = p.accumulate ? y + acc : acc;
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Rope(const RopeParams& p) {
  if (p.rope_dim <= 0 || p.rope_dim % 2 != 0) return Invalid("Rope", "rope_dim must be even");
  if (p.rows < 0 || p.heads <= 0) return Invalid("Rope", "rows must be >= 0 and heads > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.positions == nullptr || p.cos == nullptr || p.sin == nullptr) {
    return Invalid("Rope", "null x, positions or table");
  }
  for (int64_t t = 0; t < p.rows; ++t) {
    if (p.positions[t] < 0 || p.positions[t] >= p.max_positions) {
      return Invalid(
          "Rope", absl::StrCat("position ", p.positions[t], " not in [0, ", p.max_positions, ")"));
    }
  }
  const int64_t half = p.rope_dim / 2;
  for (int64_t t = 0; t < p.rows; ++t) {
    const float* cos = p.cos + p.positions[t] * half;
    const float* sin = p.sin + p.positions[t] * half;
    for (int64_t h = 0; h < p.heads; ++h) {
      float* x = p.x + t * p.token_stride + h * p.head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const float a0 = x[2 * i], a1 = x[2 * i + 1];
        x[2 * i] = a0 * cos[i] - a1 * sin[i];
        x[2 * i + 1] = a0 * sin[i] + a1 * cos[i];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SiluMul(const SiluMulParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("SiluMul", "rows must be >= 0 and dim > 0");
  if (p.rows > 0 && (p.gate == nullptr || p.up == nullptr || p.out == nullptr)) {
    return Invalid("SiluMul", "null gate, up or out");
  }
  const int64_t gs = Stride(p.gate_stride, p.dim), us = Stride(p.up_stride, p.dim);
  const int64_t os = Stride(p.out_stride, p.dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    for (int64_t j = 0; j < p.dim; ++j) {
      const float g = p.gate[i * gs + j];
      p.out[i * os + j] = g / (1.0f + std::exp(-g)) * p.up[i * us + j];
    }
  }
  return absl::OkStatus();
}

absl::Status Add(const AddParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("Add", "rows must be >= 0 and dim > 0");
  if (p.rows > 0 && (p.a == nullptr || p.b == nullptr || p.out == nullptr)) {
    return Invalid("Add", "null a, b or out");
  }
  const int64_t as = Stride(p.a_stride, p.dim), bs = Stride(p.b_stride, p.dim);
  const int64_t os = Stride(p.out_stride, p.dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    for (int64_t j = 0; j < p.dim; ++j) p.out[i * os + j] = p.a[i * as + j] + p.b[i * bs + j];
  }
  return absl::OkStatus();
}

absl::Status GatherRows(const GatherRowsParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("GatherRows", "rows must be >= 0 and dim > 0");
  if (p.rows > 0 && (p.x == nullptr || p.out == nullptr)) {
    return Invalid("GatherRows", "null x or out");
  }
  const int64_t xs = Stride(p.x_stride, p.dim), os = Stride(p.out_stride, p.dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    const int64_t row = p.index ? p.index[i] : i;
    if (row < 0 || row >= p.x_rows) {
      return Invalid("GatherRows", absl::StrCat("index ", row, " out of range"));
    }
  }
  for (int64_t i = 0; i < p.rows; ++i) {
    const float* x = p.x + (p.index ? p.index[i] : i) * xs;
    for (int64_t j = 0; j < p.dim; ++j) p.out[i * os + j] = x[j];
  }
  return absl::OkStatus();
}

absl::Status ScatterAddRows(const ScatterAddRowsParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("ScatterAddRows", "rows must be >= 0, dim > 0");
  if (p.rows > 0 && (p.x == nullptr || p.index == nullptr || p.out == nullptr)) {
    return Invalid("ScatterAddRows", "null x, index or out");
  }
  const int64_t xs = Stride(p.x_stride, p.dim), os = Stride(p.out_stride, p.dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    if (p.index[i] < 0 || p.index[i] >= p.out_rows) {
      return Invalid("ScatterAddRows", absl::StrCat("index ", p.index[i], " out of range"));
    }
  }
  for (int64_t i = 0; i < p.rows; ++i) {
    const float scale = p.scale ? p.scale[i] : 1.0f;
    float* out = p.out + p.index[i] * os;
    for (int64_t j = 0; j < p.dim; ++j) out[j] += scale * p.x[i * xs + j];
  }
  return absl::OkStatus();
}

}  // namespace r2::cpu

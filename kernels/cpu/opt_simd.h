#pragma once
// The per-instruction-set kernels of the optimized CPU backend: one table of plain functions per
// instruction set (opt_simd_{avx512,avx2,portable}.cc compile opt_simd_impl.inc with their own
// target). Callers validate arguments and split work across threads; these run on one thread.
#include <cstdint>

#include "kernels/cpu/opt_backend.h"

namespace r2::cpu {

// y[r * y_stride + o] (+)= sum_j x[r * x_stride + j] * w_o[j] for r < rows, o < outs, where row o
// of the weight starts w_row_bytes * o bytes after w and holds `in` values of f32 or bf16.
// For bf16 weights the kernel splits each group of bf16_group() weights into its even and odd
// elements with two bit operations, so it reads x in the same order from `xp`: x's first
// (in / group) * group columns with each group stored as its even then its odd elements (see
// pair_split); the tail columns come from x.
struct LinearBlock {
  const float* x = nullptr;
  int64_t x_stride = 0;
  const float* xp = nullptr;  // bf16 weights only
  int64_t xp_stride = 0;
  int64_t rows = 0;
  const uint8_t* w = nullptr;
  int64_t w_row_bytes = 0;
  bool w_bf16 = false;  // else f32
  int64_t in = 0;
  int64_t outs = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
  bool accumulate = false;
};

// y[r * y_stride + o] (+)= sum_j x[r * x_stride + j] * w[j * w_stride + o] for r < rows,
// o < outs: a weight stored transposed ([in][w_stride] elements of f32 or bf16, w at the block's
// first output column). Each output's terms are added in order j = 0, 1, ..., in - 1.
struct TransposedBlock {
  const float* x = nullptr;
  int64_t x_stride = 0;
  int64_t rows = 0;
  const uint8_t* w = nullptr;
  int64_t w_stride = 0;  // elements between the weight rows of consecutive inputs
  bool w_bf16 = false;   // else f32
  int64_t in = 0;
  int64_t outs = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
  bool accumulate = false;
  // Bytes [next, next + next_bytes) (the weights of the product after this one) are prefetched
  // into L2 a few lines per input step, spread over the block's work.
  const uint8_t* next = nullptr;
  int64_t next_bytes = 0;
};

struct SimdKernels {
  CpuIsa isa;
  int64_t lanes;  // floats per vector
  void (*linear_block)(const LinearBlock& b);
  // Register tiles of rows x output vectors; each input's weight vectors are loaded once per
  // tile and multiplied by every row's broadcast x value (no horizontal sums).
  void (*transposed_block)(const TransposedBlock& b);
  int64_t bf16_group;  // weights per even/odd split (two vectors)
  // xp[r * in_main + ...] = the groups of x row r split into even then odd elements, for the
  // first in_main = (in / bf16_group) * bf16_group columns.
  void (*pair_split)(const float* x, int64_t x_stride, int64_t rows, int64_t in, float* xp);
  // f16 -> f32 of n values (src may be unaligned).
  void (*decode_f16)(const uint8_t* src, float* dst, int64_t n);
  float (*dot)(const float* a, const float* b, int64_t n);
  // qt[j * cols + h] = q[h * q_stride + j] for h < heads and j < n, zero for heads <= h < cols
  // (a multiple of the vector width): the heads' queries with the heads in the lanes.
  void (*transpose_heads)(const float* q, int64_t q_stride, int64_t heads, int64_t n, float* qt,
                          int64_t cols);
  // Attention scores with the heads in the lanes: s[i * s_stride + c] = scale * sum over j < n
  // of rows[i][j] * qt[j * cols + c], for i < count and c < cols (a multiple of the vector
  // width; qt holds the heads' queries transposed, padded with zeros). Register tiles of rows x
  // head vectors; each sum runs over j in order. Each tile requests the next tile's rows.
  void (*head_scores)(const float* const* rows, int64_t count, const float* qt, int64_t cols,
                      int64_t n, float scale, float* s, int64_t s_stride);
  // For every column c < cols (a multiple of the vector width) of p[i * stride + c], i < count:
  // m[c] = the maximum over i, l[c] = the sum over i (in order) of e = exp(p - m[c]), and
  // p = e / l[c] in place.
  void (*softmax_columns)(float* p, int64_t count, int64_t stride, int64_t cols, float* m,
                          float* l);
  // out[h * out_stride + j] (+)= sum_i coef[i * coef_stride + h] * rows[i][j] for h < heads
  // (1-4), j < n, the terms added in order of i, the sums held in registers across the rows;
  // they start from out when `accumulate`, else from zero.
  void (*axpy_rows)(const float* const* rows, int64_t count, const float* coef, int64_t coef_stride,
                    int64_t heads, int64_t n, float* out, int64_t out_stride, bool accumulate);
  float (*sum_squares)(const float* x, int64_t n);
  // y[j] = w[j] * (x[j] * s).
  void (*scale_mul)(const float* x, const float* w, float s, float* y, int64_t n);
  // out[j] = silu(gate[j]) * up[j].
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
  // In place: p[j] = exp(p[j] - max); returns the sum.
  float (*exp_sub_sum)(float* p, float max, int64_t n);
};

const SimdKernels& PortableKernels();
const SimdKernels* Avx2Kernels();    // null when the build has no x86 path
const SimdKernels* Avx512Kernels();  // null when the build has no x86 path
const SimdKernels& KernelsFor(CpuIsa isa);

}  // namespace r2::cpu

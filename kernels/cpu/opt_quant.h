#pragma once
// Integer-weight Linear for the optimized CPU backend (formats: kernels/quant_format.h).
//
// W8A8 (I8): each activation row is quantized per token exactly like the reference
// (QuantizeInt8Row, vectorized), then every output is an int8 x int8 dot product accumulated in
// int32: AVX512-VNNI vpdpbusd on (w + 128) x q with the per-token correction 128 * sum(q), AVX2
// maddubs/madd on |w| x sign(q, w), or plain C++. The result, float(acc) * s_x * s_w, equals the
// reference bit for bit whenever the exact dot product fits in int32, which holds for every
// in_features <= 131072 (|q| <= 127, |w| <= 128).
//
// W4A16 (U4): packed nibbles, zero points and group scales are turned into float in registers
// and multiplied (FMA) with float32 activations; per group the partial sums are scaled once.
// Float rounding differs from the reference only in summation order.
//
// Both are threaded over blocks of output features (each weight read once per step) and
// register-tiled over rows. PrepareRows/BlockLinear expose the single-threaded pieces (for every
// weight format the backend's Linear takes) to the MoE experts op.
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/opt_simd.h"

namespace r2 {
// Whether this CPU has AVX512-VNNI (vpdpbusd) on top of the AVX-512 set (opt_isa.cc).
bool CpuHasAvx512Vnni();
}  // namespace r2

namespace r2::cpu {

// Activations quantized for W8A8: rows of `stride` int8 (in values, then zeros), their scales
// (QuantizeInt8Row's) and the sum of each row's int8 values.
struct Int8Rows {
  const int8_t* q = nullptr;
  int64_t stride = 0;
  const float* scale = nullptr;
  const int32_t* sum = nullptr;
};

// One input of a Linear made ready for a weight format (PrepareRows).
struct PreparedRows {
  DType dtype = DType::kF32;  // the weight format it was prepared for
  int64_t rows = 0, in = 0;
  const float* x = nullptr;  // the float rows (every format but I8)
  int64_t x_stride = 0;
  const float* xp = nullptr;  // bf16: pair_split of x; U4: chunks split into even then odd
  int64_t xp_stride = 0;
  Int8Rows q;  // I8
};

// Per-instruction-set integer kernels (single-threaded).
struct Int8Block {
  Int8Rows x;
  int64_t rows = 0;
  const int8_t* w = nullptr;  // row o at w + o * in
  int64_t in = 0;
  const float* w_scale = nullptr;  // [outs]
  int64_t outs = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
  bool accumulate = false;
};
struct Int4Block {
  const float* xp = nullptr;  // split rows (see PreparedRows::xp), zero past `in`
  int64_t xp_stride = 0;
  int64_t rows = 0;
  const uint8_t* w = nullptr;  // row o at w + o * row_bytes
  int64_t row_bytes = 0;
  int64_t in = 0, group_size = 0, groups = 0;
  const float* scale = nullptr;   // [outs][groups]
  const float* offset = nullptr;  // [outs][groups]: 8 + zero point (nibble - offset = q - z)
  int64_t outs = 0;
  float* y = nullptr;
  int64_t y_stride = 0;
  bool accumulate = false;
};
struct QuantKernels {
  const char* name;
  int64_t int8_pad;    // Int8Rows::stride is a multiple of this
  int64_t int4_chunk;  // U4 elements per split chunk (group_size must be a multiple)
  // QuantizeInt8Row's result (bit-identical), plus the sum of q. q is written for n values.
  float (*quantize_row)(const float* x, int64_t n, int8_t* q, int32_t* sum);
  void (*int8_block)(const Int8Block& b);
  void (*int4_block)(const Int4Block& b);
};

// The integer kernels for a SimdKernels table's instruction set (AVX-512 with VNNI when the CPU
// has it, else the AVX2 integer kernels).
const QuantKernels& QuantKernelsFor(CpuIsa isa);
const QuantKernels& PortableQuantKernels();
const QuantKernels* Avx2QuantKernels();        // null without an x86 build
const QuantKernels* Avx512VnniQuantKernels();  // null without an x86 build

// Linear for I8/U4 weights: the reference answers what this does not take (its errors, strided
// batches, U4 group sizes that are not a multiple of the kernel's chunk).
absl::Status OptQuantLinear(const SimdKernels& k, const LinearParams& p);

// Whether PrepareRows/BlockLinear take weights like w (2-d, a format the backend's Linear runs
// without the reference, scales consistent).
bool BlockLinearSupports(const SimdKernels& k, const WeightView& w);
// Floats of scratch PrepareRows needs for `rows` x `in` activations and format `dtype`.
int64_t PreparedScratchFloats(const SimdKernels& k, DType dtype, int64_t rows, int64_t in);
// Prepares rows x in activations (row stride xs) for weights of format `dtype`, in `scratch`
// (PreparedScratchFloats floats, 64-byte aligned); `x` must outlive the result.
PreparedRows PrepareRows(const SimdKernels& k, DType dtype, const float* x, int64_t xs,
                         int64_t rows, int64_t in, float* scratch);
// y[r * ys + (o - o0)] (+)= x_r . W_o for o in [o0, o1), on the calling thread. w passed
// BlockLinearSupports and has x.dtype. Uses ThreadScratch slot 1.
void BlockLinear(const SimdKernels& k, const PreparedRows& x, const WeightView& w, int64_t o0,
                 int64_t o1, float* y, int64_t ys, bool accumulate);

// MoeExperts on the optimized backend (opt_moe_experts.cc): pointer arrays or expert_views.
absl::Status OptMoeExperts(const SimdKernels& k, const MoeExpertsParams& p);

}  // namespace r2::cpu

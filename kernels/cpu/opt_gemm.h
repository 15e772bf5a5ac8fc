#pragma once
// The packed, cache-blocked GEMM behind Linear on many rows (prefill, large batches), for the
// optimized CPU backend. y[r, o] (+)= sum_k x[r, k] W[o, k] is computed by output panels of NR
// outputs (the vector width times two): each thread owns runs of whole panels. For each pass of
// up to 256 rows and block of kc = 256 input columns (the pass's x block stays in L2), each of the
// thread's panels is widened to float32 and transposed into a thread-local panel [kc][NR]
// (grow-only buffer, 32 KiB: L1), then a micro-kernel sweeps the pass's row tiles over it with an
// MR x NR tile of float32 accumulators in registers (x broadcast per row and column, each weight
// vector loaded once per column and reused by MR rows). Activations stay float32 and every product
// is a float32 FMA, in column order per output within a block; blocks are added to y in order.
//
// Micro-kernels and packers are compiled once per instruction set from opt_gemm_impl.inc (the
// opt_simd_impl.inc scheme); GemmLinear (opt_gemm.cc) is the driver.
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/cpu/opt_simd.h"

namespace r2::cpu {

struct GemmKernels {
  CpuIsa isa;
  int64_t tile_rows;  // MR: rows per register tile
  int64_t panel;      // NR: outputs per packed panel (a multiple of the vector width)
  // dst[k * NR + o] = bf16 weight element (o, k) as float32 for o < n, k < kc, where row o starts
  // w_row_bytes * o bytes after w (w points at column k0 of output o0); dst[k * NR + o] = 0 for
  // n <= o < NR. n <= NR.
  void (*pack_bf16)(const uint8_t* w, int64_t w_row_bytes, int64_t n, int64_t kc, float* dst);
  // The same from float32 rows w + o * w_stride.
  void (*pack_f32)(const float* w, int64_t w_stride, int64_t n, int64_t kc, float* dst);
  // y[r * y_stride + o] = (load_y ? y[...] : 0) + sum_{k < kc} x[r * x_stride + k] * panel[k * NR
  // + o] for r < rows, o < n (n <= NR); the block's sum runs in column order and is then added.
  void (*panel_rows)(const float* x, int64_t x_stride, int64_t rows, const float* panel, int64_t kc,
                     int64_t n, float* y, int64_t y_stride, bool load_y);
};

const GemmKernels& PortableGemm();
const GemmKernels* Avx2Gemm();    // null when the build has no x86 path
const GemmKernels* Avx512Gemm();  // null when the build has no x86 path
const GemmKernels& GemmKernelsFor(CpuIsa isa);

// Linear takes the packed GEMM from this many rows per product on.
inline constexpr int64_t kGemmMinRows = 16;

// Whether GemmBlock takes weights like w: 2-d bf16/f16/f32, or fp8 with consistent block scales.
bool GemmSupports(const WeightView& w);

// y[r * ys + (o - o0)] (+)= x_r . W_o for r < rows, o in [o0, o1), on the calling thread, through
// the packed GEMM (for callers that split the work themselves, e.g. MoE experts with many rows).
// w passed GemmSupports.
void GemmBlock(const SimdKernels& k, const float* x, int64_t xs, int64_t rows, const WeightView& w,
               int64_t o0, int64_t o1, float* y, int64_t ys, bool accumulate);

// MlaPrefillAttention through the GEMM kernels (opt_prefill_attention.cc): per (sequence, head,
// block of 48 queries) the scores are one packed GEMM, then a causal softmax, then P V as another.
// Arguments the op does not take get the reference's error.
absl::Status GemmMlaPrefillAttention(const SimdKernels& k, const MlaPrefillParams& p);

// Runs Linear p (already accepted by the optimized Linear's checks: float or block-scaled fp8
// weights, rows > 0, out > 0) through the packed GEMM on the instruction set of k.
void GemmLinear(const SimdKernels& k, const LinearParams& p);

}  // namespace r2::cpu

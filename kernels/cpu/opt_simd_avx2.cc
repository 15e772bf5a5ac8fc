// The optimized CPU kernels compiled for AVX2 + FMA + F16C, chosen at run time.
#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_simd.h"
#include "kernels/numeric.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <cstdint>

// Only the functions defined below get the wider instruction set (no per-file -m flags, which
// would also compile inline functions shared with other files for it). GCC and clang spell it
// differently.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#define R2_SIMD_NS avx2
#define R2_SIMD_BYTES 32
#define R2_SIMD_ISA CpuIsa::kAvx2
#define R2_TILE_ROWS 4
#define R2_TILE_OUTS 2
#include "kernels/cpu/opt_simd_impl.inc"
#define R2_GEMM_ROWS 6
#include "kernels/cpu/opt_gemm_impl.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace r2::cpu {
const SimdKernels* Avx2Kernels() { return &avx2::kKernels; }
const GemmKernels* Avx2Gemm() { return &avx2::kGemm; }
}  // namespace r2::cpu
#else
namespace r2::cpu {
const SimdKernels* Avx2Kernels() { return nullptr; }
const GemmKernels* Avx2Gemm() { return nullptr; }
}  // namespace r2::cpu
#endif

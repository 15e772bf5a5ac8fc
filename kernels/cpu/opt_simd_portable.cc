// The optimized CPU kernels in portable C++ (the compiler's baseline vectors): the fallback on
// CPUs without AVX2 and the path every other one is checked beside.
#include <cstdint>

#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_simd.h"
#include "kernels/numeric.h"

#define R2_SIMD_NS portable
#define R2_SIMD_BYTES 16
#define R2_SIMD_ISA CpuIsa::kPortable
#define R2_TILE_ROWS 2
#define R2_TILE_OUTS 2
#include "kernels/cpu/opt_simd_impl.inc"
#define R2_GEMM_ROWS 4
#include "kernels/cpu/opt_gemm_impl.inc"

namespace r2::cpu {
const SimdKernels& PortableKernels() { return portable::kKernels; }
const GemmKernels& PortableGemm() { return portable::kGemm; }
}  // namespace r2::cpu

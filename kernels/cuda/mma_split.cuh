#pragma once
// Float32 matrix products on bf16 tensor cores: each float32 operand x is split as x = hi + lo
// with hi = bf16(x), lo = bf16(x - hi), and a product is taken as lo*hi + hi*lo + hi*hi on
// mma.sync m16n8k16 with float32 accumulation. The dropped lo*lo term and the rounding of lo leave
// about 2^-17 relative error per product (float32-class results at a third of the bf16 rate).
// Also the cp.async helpers of the attention kernels. Needs sm_80 or newer.
#include <cuda_bf16.h>

#include <cstdint>

namespace r2::cuda {
namespace {

// 16-byte asynchronous copy global -> shared; src_bytes 0 writes zeros (an absent row).
__device__ __forceinline__ void CpAsync16(void* smem_dst, const void* src, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ uint32_t BitsOf(__nv_bfloat162 v) {
  return *reinterpret_cast<const uint32_t*>(&v);
}

// (x, y) -> hi + lo pairs of bfloat16 (x in the low half, the lower column index).
__device__ __forceinline__ void SplitBf16(float x, float y, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  hi = BitsOf(h);
  lo = BitsOf(__floats2bfloat162_rn(x - __low2float(h), y - __high2float(h)));
}

// d += a b for one m16n8k16 bf16 tile (row-major A, column-major B, float32 accumulate).
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d += a b with both operands split: lo*hi + hi*lo + hi*hi (small terms first).
__device__ __forceinline__ void MmaSplit(float (&d)[4], const uint32_t (&ah)[4],
                                         const uint32_t (&al)[4], uint32_t bh0, uint32_t bh1,
                                         uint32_t bl0, uint32_t bl1) {
  MmaBf16(d, al, bh0, bh1);
  MmaBf16(d, ah, bl0, bl1);
  MmaBf16(d, ah, bh0, bh1);
}

}  // namespace
}  // namespace r2::cuda

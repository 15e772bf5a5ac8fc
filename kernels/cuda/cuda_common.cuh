#pragma once
// Small device helpers and host argument checks shared by the dense CUDA launchers.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/tensor.h"

namespace r2::cuda {

// (Abseil here is built without std::string_view interop, so names are passed as std::string.)
inline absl::Status Invalid(const std::string& op, const std::string& what) {
  return absl::InvalidArgumentError(op + ": " + what);
}

inline std::string DTypeStr(DType d) { return std::string(DTypeName(d)); }

inline bool IsFloatStorage(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16;
}

// A stride of 0 means the packed row width.
inline int64_t StrideOr(int64_t stride, int64_t width) { return stride == 0 ? width : stride; }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A launch grid dimension capped at the hardware limit (kernels loop over the rest).
inline unsigned GridCap(int64_t blocks, int64_t cap = 1 << 30) {
  if (blocks < 1) return 1;
  return static_cast<unsigned>(blocks < cap ? blocks : cap);
}

// Element i of a float-storage array as float.
template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) {
  return __half2float(v);
}

// Calls f(T{}) with T the storage type of dtype `d` (BF16/F16/F32 only).
template <typename F>
absl::Status DispatchFloat(DType d, F&& f) {
  switch (d) {
    case DType::kF32:
      return f(float{});
    case DType::kBF16:
      return f(__nv_bfloat16{});
    case DType::kF16:
      return f(__half{});
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", DTypeStr(d)));
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace r2::cuda

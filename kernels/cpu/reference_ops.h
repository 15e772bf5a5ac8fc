#pragma once
// The CPU reference ops behind MakeCpuReferenceBackend(), one function per Backend method, plus the
// small argument checks they share. Plain loops, float32 accumulation, OpenMP over independent
// rows only.
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/numeric.h"

namespace r2::cpu {

absl::Status Embedding(const EmbeddingParams& p);
absl::Status RmsNorm(const RmsNormParams& p);
absl::Status Linear(const LinearParams& p);
absl::Status Rope(const RopeParams& p);
absl::Status SiluMul(const SiluMulParams& p);
absl::Status Add(const AddParams& p);
absl::Status GatherRows(const GatherRowsParams& p);
absl::Status ScatterAddRows(const ScatterAddRowsParams& p);
absl::Status MoeRoute(const MoeRouteParams& p);
absl::Status MlaPrefillAttention(const MlaPrefillParams& p);
absl::Status KvCacheWrite(const KvCacheWriteParams& p);
absl::Status MlaDecodeAttention(const MlaDecodeParams& p);
absl::Status MoeExperts(const MoeExpertsParams& p);  // reference_moe_experts.cc
// MoeExperts' host-side argument checks (shapes, dtype, null pointers; not the indices).
absl::Status CheckMoeExperts(const MoeExpertsParams& p);

// Below this many multiply-adds an op runs on one thread: forking a team costs more than it saves
// (and much more on an oversubscribed machine).
inline constexpr int64_t kParallelWork = int64_t{1} << 20;

// A stride of 0 means the packed row width.
inline int64_t Stride(int64_t stride, int64_t width) { return stride == 0 ? width : stride; }

// (Abseil here is built without std::string_view interop, so names are passed as std::string.)
inline absl::Status Invalid(const std::string& op, const std::string& what) {
  return absl::InvalidArgumentError(op + ": " + what);
}

inline std::string Name(DType dtype) { return std::string(DTypeName(dtype)); }

// Element i of a float tensor of dtype BF16/F16/F32, read without assuming alignment (views into
// mapped safetensors files may be unaligned).
inline float LoadFloat(const void* data, DType dtype, int64_t i) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  switch (dtype) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, bytes + 4 * i, 4);
      return v;
    }
    case DType::kBF16: {
      uint16_t v;
      std::memcpy(&v, bytes + 2 * i, 2);
      return BF16ToFloat(v);
    }
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, bytes + 2 * i, 2);
      return HalfToFloat(v);
    }
    default:
      return 0.0f;
  }
}

inline bool IsFloatStorage(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

}  // namespace r2::cpu

#include "kernels/tensor.h"

#include <cstring>

#include "kernels/numeric.h"

namespace r2 {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
    case DType::kI8:
    case DType::kU8:
      return 1;
    case DType::kI64:
      return 8;
    case DType::kU4:
      return 0;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kF8E4M3:
      return "f8_e4m3";
    case DType::kI8:
      return "i8";
    case DType::kU8:
      return "u8";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
    case DType::kU4:
      return "u4";
  }
  return "?";
}

float ElementAsFloat(const TensorView& t, int64_t i) {
  const auto* bytes = static_cast<const uint8_t*>(t.data);
  switch (t.dtype) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, bytes + 4 * i, 4);
      return v;
    }
    case DType::kBF16:
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, bytes + 2 * i, 2);
      return t.dtype == DType::kBF16 ? BF16ToFloat(v) : HalfToFloat(v);
    }
    case DType::kF8E4M3:
      return Fp8E4M3ToFloat(bytes[i]);
    default:
      return 0.0f;
  }
}

}  // namespace r2

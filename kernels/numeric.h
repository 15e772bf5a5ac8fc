#pragma once
// Scalar conversions between the storage dtypes and float. Exact where the format allows; rounding
// to narrower formats is round-to-nearest-even.
#include <cstdint>
#include <cstring>

namespace r2 {

inline float BF16ToFloat(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float HalfToFloat(uint16_t v);
uint16_t FloatToHalf(float f);

// e4m3fn (sign, 4 exponent bits with bias 7, 3 mantissa bits; no infinities; S.1111.111 is NaN).
float Fp8E4M3ToFloat(uint8_t v);
// Saturates to +-448; NaN maps to NaN (0x7f).
uint8_t FloatToFp8E4M3(float f);

}  // namespace r2

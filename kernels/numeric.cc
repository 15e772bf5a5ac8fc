#include "kernels/numeric.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace r2 {

float HalfToFloat(uint16_t v) {
  const uint32_t sign = (v >> 15) & 1u, exp = (v >> 10) & 0x1fu, man = v & 0x3ffu;
  float mag;
  if (exp == 0) {
    mag = std::ldexp(static_cast<float>(man), -24);  // subnormal (and zero)
  } else if (exp == 31) {
    mag = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    mag = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -mag : mag;
}

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (a < std::ldexp(1.0f, -14)) {           // subnormal: units of 2^-24, round to nearest even
    return sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24)));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  uint32_t mant = static_cast<uint32_t>(std::nearbyint(std::ldexp(m, 11)));  // 11 significant bits
  if (mant == 2048) {  // rounding carried into the next binade
    mant = 1024;
    ++e;
  }
  const uint32_t exp = static_cast<uint32_t>(e + 14);
  if (exp >= 31) return sign | 0x7c00u;
  return sign | static_cast<uint16_t>((exp << 10) | (mant & 0x3ffu));
}

namespace {
std::array<float, 256> MakeFp8Table() {
  std::array<float, 256> table{};
  for (int b = 0; b < 256; ++b) {
    const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float mag;
    if (e == 15 && m == 7) {
      mag = std::numeric_limits<float>::quiet_NaN();
    } else if (e == 0) {
      mag = std::ldexp(static_cast<float>(m) / 8.0f, -6);
    } else {
      mag = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
    }
    table[b] = sign ? -mag : mag;
  }
  return table;
}
const std::array<float, 256> kFp8Table = MakeFp8Table();
}  // namespace

float Fp8E4M3ToFloat(uint8_t v) { return kFp8Table[v]; }

uint8_t FloatToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::min(std::fabs(f), 448.0f);
  // Nearest representable magnitude, ties to even code (codes are monotonic in magnitude).
  int lo = 0, hi = 126;  // 126 = 448, the largest finite code
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (kFp8Table[mid] <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  int code = lo;
  if (code < 126) {
    const float down = a - kFp8Table[code], up = kFp8Table[code + 1] - a;
    if (up < down || (up == down && (code & 1))) code += 1;
  }
  return sign | static_cast<uint8_t>(code);
}

}  // namespace r2

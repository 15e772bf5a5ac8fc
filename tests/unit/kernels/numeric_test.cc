#include "kernels/numeric.h"

#include <gtest/gtest.h>

#include <cmath>

namespace r2 {
namespace {

TEST(NumericTest, Fp8DecodesSpecValues) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x00), 0.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0xfe), -448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xff)));
}

TEST(NumericTest, Fp8RoundTripsEveryFiniteCode) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    const float f = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
    if (f == 0.0f) continue;  // +0 and -0 both decode to zero
    EXPECT_EQ(FloatToFp8E4M3(f), b) << b;
  }
  EXPECT_EQ(FloatToFp8E4M3(1000.0f), 0x7e);  // saturates
  EXPECT_EQ(FloatToFp8E4M3(-1000.0f), 0xfe);
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);  // tie between 1.0 and 1.125 goes to even code
}

TEST(NumericTest, Bf16AndHalfRoundTrip) {
  for (float f : {0.0f, 1.0f, -2.5f, 3.14159f, 1e-3f, 65504.0f, -6.1e-5f}) {
    EXPECT_NEAR(BF16ToFloat(FloatToBF16(f)), f, std::fabs(f) * 1.0f / 128);
    EXPECT_NEAR(HalfToFloat(FloatToHalf(f)), f, std::fabs(f) * 1.0f / 1024);
  }
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(1e6f))));
}

}  // namespace
}  // namespace r2

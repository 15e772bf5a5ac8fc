#include <cmath>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/sampling_simd.h"

namespace r2::cpu::sampling_simd {
namespace {

TEST(SimdMathTest, ExpIsAccurateOnNonPositiveArguments) {
  double worst = 0.0;
  for (float x = 0.0f; x > -87.0f; x -= 0.00731f) {
    const double expected = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(ExpNonPositive(x) - expected) / expected);
  }
  EXPECT_LT(worst, 2e-7);
}

TEST(SimdMathTest, ExpSpecialValues) {
  EXPECT_EQ(ExpNonPositive(0.0f), 1.0f);
  EXPECT_EQ(ExpNonPositive(-0.0f), 1.0f);
  EXPECT_EQ(ExpNonPositive(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(ExpNonPositive(-87.5f), 0.0f);
  EXPECT_GT(ExpNonPositive(-86.9f), 0.0f);
  EXPECT_TRUE(std::isnan(ExpNonPositive(std::numeric_limits<float>::quiet_NaN())));
}

TEST(SimdMathTest, ExpIsMonotone) {
  float previous = ExpNonPositive(-87.0f);
  for (float x = -87.0f; x <= 0.0f; x += 0.0001f) {
    const float y = ExpNonPositive(x);
    ASSERT_GE(y, previous) << x;
    previous = y;
  }
}

TEST(SimdMathTest, VectorAndScalarAgree) {
  const F4 x = {-0.1f, -3.5f, -40.0f, 0.0f};
  const F4 y = ExpNonPositive(x);
  for (int lane = 0; lane < 4; ++lane) EXPECT_EQ(y[lane], ExpNonPositive(x[lane]));
}

TEST(SimdMathTest, BlockSumIsPairwiseInDouble) {
  const F4 lo = {1e8f, 1.0f, -1e8f, 1.0f};
  const F4 hi = {0.5f, 0.25f, 0.125f, 0.0625f};
  EXPECT_EQ(BlockSum(lo, hi), ((1e8 + 1.0) + (-1e8 + 1.0)) + ((0.5 + 0.25) + (0.125 + 0.0625)));
}

TEST(SimdMathTest, MaxIgnoresNaNAndHandlesTails) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> values = {1, nan, 3, 2, -1, 7, nan};
  for (size_t n = 0; n <= values.size(); ++n) {
    float expected = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < n; ++i) {
      if (values[i] > expected) expected = values[i];
    }
    EXPECT_EQ(Max(values.data(), n), expected) << n;
  }
}

TEST(SimdMathTest, FirstIndexOf) {
  const std::vector<float> values = {0, 1, 2, 3, 4, 5, 2, 7, 8};
  EXPECT_EQ(FirstIndexOf(values.data(), values.size(), 2.0f), 2u);
  EXPECT_EQ(FirstIndexOf(values.data(), values.size(), 8.0f), 8u);  // in the tail
  EXPECT_EQ(FirstIndexOf(values.data(), values.size(), 9.0f), values.size());
  EXPECT_EQ(FirstIndexOf(values.data(), 0, 0.0f), 0u);
}

TEST(SimdMathTest, Lanes) {
  EXPECT_FALSE(AnyLane(I4{0, 0, 0, 0}));
  EXPECT_TRUE(AnyLane(I4{0, 0, -1, 0}));
  EXPECT_EQ(CountLanes(I4{-1, 0, -1, -1}), 3);
  EXPECT_EQ(SumLanes(I4{1, 2, 3, 4}), 10);
}

}  // namespace
}  // namespace r2::cpu::sampling_simd

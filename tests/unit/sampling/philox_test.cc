#include "engine/sampling/philox.h"

#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

// Known-answer vectors of Philox4x32-10 published with the Random123 library (kat_vectors).
TEST(PhiloxTest, KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}),
            (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, UnitDoubleUsesTheTop53Bits) {
  EXPECT_EQ(PhiloxToUnitDouble({0, 0, 5, 5}), 0.0);
  EXPECT_EQ(PhiloxToUnitDouble({~0u, ~0u, 0, 0}), 1.0 - 0x1.0p-53);
  EXPECT_EQ(PhiloxToUnitDouble({0, 0x80000000u, 0, 0}), 0.5);
  EXPECT_EQ(PhiloxToUnitDouble({0x7FF, 0, 0, 0}), 0.0);  // the low 11 bits are dropped
}

TEST(PhiloxTest, StreamsAreDistinctAndStable) {
  EXPECT_EQ(SeededUniform(42, 0, 7), SeededUniform(42, 0, 7));
  EXPECT_NE(SeededUniform(42, 0, 7), SeededUniform(42, 0, 8));
  EXPECT_NE(SeededUniform(42, 0, 7), SeededUniform(42, 1, 7));
  EXPECT_NE(SeededUniform(42, 0, 7), SeededUniform(43, 0, 7));
  EXPECT_NE(SeededUniform(42, 0, 7), EngineUniform(42, 7));
  EXPECT_NE(SeededUniform(-1, 0, 0), SeededUniform(0xFFFFFFFF, 0, 0));
  // Pinned values: a change here changes every seeded output.
  static_assert(SeededUniform(0, 0, 0) == PhiloxToUnitDouble({0x6627e8d5, 0xe169c58d, 0, 0}));
}

TEST(PhiloxTest, UniformsLookUniform) {
  constexpr int kDraws = 20000, kBins = 10;
  int counts[kBins] = {};
  double sum = 0.0;
  for (int i = 0; i < kDraws; ++i) {
    const double u = SeededUniform(2024, 3, static_cast<uint64_t>(i));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ++counts[static_cast<int>(u * kBins)];
    sum += u;
  }
  double chi_square = 0.0;
  for (int c : counts) chi_square += (c - kDraws / kBins) * (c - kDraws / kBins) / (kDraws / 10.0);
  EXPECT_LT(chi_square, 27.877);  // 0.999 quantile of chi-square(9)
  EXPECT_NEAR(sum / kDraws, 0.5, 0.01);
}

}  // namespace
}  // namespace r2::sampling

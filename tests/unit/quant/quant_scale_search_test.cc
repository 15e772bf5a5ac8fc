// The converter's weight quantizers (QuantizeInt8WeightRow, QuantizeInt4GroupMinError): the
// searched scale's squared error is never above plain max-abs scaling's, every element is
// rounded to the nearest step of the chosen range (saturating beyond it), BF16 scales stay
// BF16-representable, and on Gaussian weights the search lowers the error clearly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/numeric.h"
#include "kernels/quant_format.h"
#include "tests/unit/quant/quant_test_util.h"

namespace r2 {
namespace {

using ::r2::testing::Gaussian;

// Test inputs: Gaussian, Gaussian with a few large outliers, uniform, all positive (far from
// symmetric), heavy tailed (Laplace), a single non-zero value, a constant, all zero.
std::vector<std::vector<float>> Inputs(std::mt19937& rng, int64_t n) {
  std::vector<std::vector<float>> r;
  for (int rep = 0; rep < 20; ++rep) {
    r.push_back(Gaussian(rng, n, 0.02f));
    std::vector<float> outliers = Gaussian(rng, n, 0.02f);
    outliers[rng() % n] = 0.3f;
    outliers[rng() % n] = -0.2f;
    r.push_back(outliers);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<float> u(n), positive(n), laplace(n);
    std::exponential_distribution<float> exp(50.0f);
    for (int64_t j = 0; j < n; ++j) {
      u[j] = uniform(rng);
      positive[j] = 0.5f + 0.25f * uniform(rng);
      laplace[j] = (rng() & 1 ? 1.0f : -1.0f) * exp(rng);
    }
    r.push_back(u);
    r.push_back(positive);
    r.push_back(laplace);
  }
  std::vector<float> single(n, 0.0f);
  single[n / 2] = -0.7f;
  r.push_back(single);
  r.push_back(std::vector<float>(n, 0.125f));
  r.push_back(std::vector<float>(n, 0.0f));
  return r;
}

// Squared error of int4 values q (with zero point z and scale s) against x.
double Int4Error(const std::vector<float>& x, const std::vector<int32_t>& q, float s, int32_t z) {
  double err = 0.0;
  for (size_t j = 0; j < x.size(); ++j) {
    const double d = double{x[j]} - (double{static_cast<double>(q[j])} - z) * s;
    err += d * d;
  }
  return err;
}

// Each element is round-to-nearest within [lo, hi] = [(-8 - z) s, (7 - z) s]: within s / 2 of x
// inside the range (half a step beyond its ends), else saturated at the end.
void ExpectInt4Rounding(const std::vector<float>& x, const std::vector<int32_t>& q, float s,
                        int32_t z, const std::string& what) {
  const double lo = (-8.0 - z) * double{s}, hi = (7.0 - z) * double{s};
  for (size_t j = 0; j < x.size(); ++j) {
    ASSERT_GE(q[j], -8) << what;
    ASSERT_LE(q[j], 7) << what;
    const double back = (double{static_cast<double>(q[j])} - z) * s;
    if (x[j] > hi + 0.5 * s) {
      ASSERT_EQ(q[j], 7) << what << " " << j;
    } else if (x[j] < lo - 0.5 * s) {
      ASSERT_EQ(q[j], -8) << what << " " << j;
    } else {
      ASSERT_LE(std::fabs(back - x[j]), 0.5 * s * 1.0001 + 1e-12) << what << " " << j;
    }
  }
}

TEST(QuantScaleSearchTest, Int4NeverWorseThanMaxAbsAndRoundsWithinItsRange) {
  std::mt19937 rng(11);
  for (bool symmetric : {true, false}) {
    for (int64_t n : {int64_t{128}, int64_t{44}, int64_t{1}}) {
      for (const std::vector<float>& x : Inputs(rng, n)) {
        const std::string what = (symmetric ? "sym n=" : "asym n=") + std::to_string(n);
        std::vector<int32_t> q0(n), q(n);
        const Int4Group plain = QuantizeInt4Group(x.data(), n, symmetric, q0.data());
        const Int4Group best = QuantizeInt4GroupMinError(x.data(), n, symmetric, q.data());
        if (plain.scale == 0.0f) {  // all zero
          EXPECT_EQ(best.scale, 0.0f);
          EXPECT_TRUE(std::all_of(q.begin(), q.end(), [](int32_t v) { return v == 0; }));
          continue;
        }
        ASSERT_GT(best.scale, 0.0f) << what;
        EXPECT_EQ(best.scale, BF16ToFloat(FloatToBF16(best.scale))) << what;  // stored as BF16
        if (symmetric) EXPECT_EQ(best.zero, 0) << what;
        const double e0 = Int4Error(x, q0, plain.scale, plain.zero);
        const double e = Int4Error(x, q, best.scale, best.zero);
        EXPECT_LE(e, e0 * (1.0 + 1e-9)) << what;
        // The returned error helper agrees with the values written.
        std::vector<int32_t> q2(n);
        EXPECT_NEAR(QuantizeInt4WithScale(x.data(), n, best.scale, best.zero, q2.data()), e,
                    1e-9 * e0 + 1e-30);
        EXPECT_EQ(q2, q) << what;
        ExpectInt4Rounding(x, q, best.scale, best.zero, what);
      }
    }
  }
}

TEST(QuantScaleSearchTest, Int8WeightRowNeverWorseThanMaxAbs) {
  std::mt19937 rng(12);
  for (int64_t n : {int64_t{7168}, int64_t{300}, int64_t{1}}) {
    for (const std::vector<float>& x : Inputs(rng, n)) {
      std::vector<int8_t> q0(n), q(n);
      const float s0 = QuantizeInt8Row(x.data(), n, q0.data());
      const float s = QuantizeInt8WeightRow(x.data(), n, q.data());
      if (s0 == 0.0f) {
        EXPECT_EQ(s, 0.0f);
        EXPECT_TRUE(std::all_of(q.begin(), q.end(), [](int8_t v) { return v == 0; }));
        continue;
      }
      ASSERT_GT(s, 0.0f);
      double e0 = 0.0, e = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        ASSERT_GE(q[j], -127);  // -128 is never written
        const double d0 = double{x[j]} - double{static_cast<double>(q0[j])} * s0;
        const double d = double{x[j]} - double{static_cast<double>(q[j])} * s;
        e0 += d0 * d0;
        e += d * d;
        // Round to nearest inside [-127 s, 127 s], saturated beyond it.
        if (std::fabs(x[j]) <= 127.5 * s) {
          ASSERT_LE(std::fabs(d), 0.5 * s * 1.0001) << n << " " << j;
        } else {
          ASSERT_EQ(std::abs(int{q[j]}), 127) << n << " " << j;
        }
      }
      EXPECT_LE(e, e0 * (1.0 + 1e-9)) << n;
    }
  }
}

TEST(QuantScaleSearchTest, GaussianWeightsClipBelowMaxAbs) {
  // On Gaussian weights the best range is inside max |w| (a few large values saturate), and the
  // squared error drops by a clear margin.
  std::mt19937 rng(13);
  const int groups = 200;
  for (bool symmetric : {true, false}) {
    double e0 = 0.0, e = 0.0;
    int clipped = 0;
    for (int g = 0; g < groups; ++g) {
      const std::vector<float> x = Gaussian(rng, 128, 0.02f);
      std::vector<int32_t> q0(128), q(128);
      const Int4Group plain = QuantizeInt4Group(x.data(), 128, symmetric, q0.data());
      const Int4Group best = QuantizeInt4GroupMinError(x.data(), 128, symmetric, q.data());
      e0 += Int4Error(x, q0, plain.scale, plain.zero);
      e += Int4Error(x, q, best.scale, best.zero);
      clipped += best.scale < 0.97f * plain.scale;
    }
    std::printf("int4 %s: searched / max-abs squared error %.3f, %d of %d groups clipped\n",
                symmetric ? "symmetric" : "asymmetric", e / e0, clipped, groups);
    EXPECT_GT(clipped, groups / 2);
    EXPECT_LT(e, (symmetric ? 0.88 : 0.93) * e0);  // measured 0.83 and 0.88
  }
  double e0 = 0.0, e = 0.0;
  for (int r = 0; r < 20; ++r) {
    const std::vector<float> x = Gaussian(rng, 7168, 0.02f);
    std::vector<int8_t> q0(x.size()), q(x.size());
    const float s0 = QuantizeInt8Row(x.data(), 7168, q0.data());
    const float s = QuantizeInt8WeightRow(x.data(), 7168, q.data());
    for (size_t j = 0; j < x.size(); ++j) {
      e0 += std::pow(double{x[j]} - q0[j] * double{s0}, 2);
      e += std::pow(double{x[j]} - q[j] * double{s}, 2);
    }
  }
  std::printf("int8 rows: searched / max-abs squared error %.3f\n", e / e0);
  EXPECT_LT(e, 0.98 * e0);  // measured 0.96: 255 levels leave little to gain on Gaussian rows
}

}  // namespace
}  // namespace r2

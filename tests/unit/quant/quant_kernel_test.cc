// Integer weight formats and the reference quantized Linear: round trips within each format's
// bound, W8A8 exactly equal to integer math and close to float math, W4A16 equal to float math
// over the dequantized weights, and clear errors for scales that do not match.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/quant_format.h"
#include "tests/unit/quant/quant_test_util.h"

namespace r2 {
namespace {

using ::r2::testing::Dequantize;
using ::r2::testing::Gaussian;
using ::r2::testing::MakeInt4Weight;
using ::r2::testing::MakeInt8Weight;
using ::testing::HasSubstr;

// y[i, o] = sum_j x[i, j] w[o, j] in double.
std::vector<double> FloatLinear(const std::vector<float>& x, const std::vector<float>& w,
                                int64_t rows, int64_t out, int64_t in) {
  std::vector<double> y(rows * out, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0.0;
      for (int64_t j = 0; j < in; ++j) acc += double{x[i * in + j]} * w[o * in + j];
      y[i * out + o] = acc;
    }
  }
  return y;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

TEST(QuantFormatTest, Int8RoundTripWithinHalfAStep) {
  std::mt19937 rng(1);
  const int64_t out = 37, in = 300;
  std::vector<float> w = Gaussian(rng, out * in, 0.05f);
  for (int64_t j = 0; j < in; ++j) w[5 * in + j] = 0.0f;  // an all-zero row
  auto q = MakeInt8Weight(w, out, in);
  ASSERT_TRUE(CheckIntegerWeight(q.view, "test").ok());
  const std::vector<float> back = Dequantize(q.view);
  for (int64_t o = 0; o < out; ++o) {
    float amax = 0.0f;
    for (int64_t j = 0; j < in; ++j) amax = std::max(amax, std::fabs(w[o * in + j]));
    EXPECT_FLOAT_EQ(q.group_scale[o], amax / 127.0f);
    for (int64_t j = 0; j < in; ++j) {
      ASSERT_LE(std::fabs(back[o * in + j] - w[o * in + j]), 0.5f * q.group_scale[o] * 1.0001f)
          << o << "," << j;
    }
  }
  for (int64_t j = 0; j < in; ++j) EXPECT_EQ(back[5 * in + j], 0.0f);
}

TEST(QuantFormatTest, Int4RoundTripSymmetricAndAsymmetric) {
  std::mt19937 rng(2);
  const int64_t out = 19, in = 300, group = 128;  // a partial last group of 44 columns
  std::vector<float> w = Gaussian(rng, out * in, 0.05f);
  for (int64_t j = 0; j < in; ++j) w[3 * in + j] += 0.2f;  // a row far from symmetric
  for (bool symmetric : {true, false}) {
    auto q = MakeInt4Weight(w, out, in, group, symmetric);
    ASSERT_TRUE(CheckIntegerWeight(q.view, "test").ok());
    const std::vector<float> back = Dequantize(q.view);
    const int64_t groups = QuantGroups(in, group);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t j = 0; j < in; ++j) {
        const float s = q.group_scale[o * groups + j / group];
        // The format's bound: half a step (symmetric), one step (asymmetric, rounded zero point).
        const float bound = (symmetric ? 0.5f : 1.0f) * s * 1.0001f;
        ASSERT_LE(std::fabs(back[o * in + j] - w[o * in + j]), bound)
            << (symmetric ? "sym " : "asym ") << o << "," << j;
      }
    }
    // Packed values are in the documented layout: element j of row o in nibble j of the row.
    const auto* row = q.q.data() + 2 * PackedU4RowBytes(in);
    const float s = q.group_scale[2 * groups];
    EXPECT_FLOAT_EQ(back[2 * in + 1],
                    static_cast<float>(((row[0] >> 4) & 0xf) - 8 - U4ZeroPoint(q.view, 2, 0)) * s);
  }
}

TEST(QuantFormatTest, Int4AsymmetricUsesZeroPointsForShiftedGroups) {
  std::vector<float> w(128);
  for (int j = 0; j < 128; ++j) w[j] = 1.0f + j / 128.0f;  // all positive: [1, 2)
  auto sym = MakeInt4Weight(w, 1, 128, 128, true);
  auto asym = MakeInt4Weight(w, 1, 128, 128, false);
  EXPECT_LT(asym.group_scale[0], sym.group_scale[0]);  // range [0, 2) over 15 steps, not 7.5
  EXPECT_NE(U4ZeroPoint(asym.view, 0, 0), 0);
}

TEST(QuantLinearTest, W8A8MatchesIntegerMathAndIsCloseToFloat) {
  std::mt19937 rng(3);
  const int64_t rows = 5, out = 33, in = 260;
  const std::vector<float> w = Gaussian(rng, out * in, 0.05f);
  std::vector<float> x = Gaussian(rng, rows * in);
  for (int64_t j = 0; j < in; ++j) x[2 * in + j] = 0.0f;  // an all-zero activation row
  auto q = MakeInt8Weight(w, out, in);
  auto backend = MakeCpuReferenceBackend();
  std::vector<float> y(rows * out, -1.0f);
  ASSERT_TRUE(backend->Linear({.x = x.data(), .rows = rows, .weight = q.view, .y = y.data()}).ok());
  // Integer math written out independently: s_x = max|x| / 127, round half to even.
  const auto* wq = reinterpret_cast<const int8_t*>(q.q.data());
  for (int64_t i = 0; i < rows; ++i) {
    float amax = 0.0f;
    for (int64_t j = 0; j < in; ++j) amax = std::max(amax, std::fabs(x[i * in + j]));
    const float sx = amax / 127.0f;
    for (int64_t o = 0; o < out; ++o) {
      int64_t acc = 0;
      for (int64_t j = 0; j < in; ++j) {
        const int64_t xq = amax > 0 ? static_cast<int64_t>(std::nearbyint(x[i * in + j] / sx)) : 0;
        acc += xq * wq[o * in + j];
      }
      const double want = static_cast<double>(acc) * sx * q.group_scale[o];
      ASSERT_NEAR(y[i * out + o], want, 1e-5 * std::max(1.0, std::fabs(want))) << i << "," << o;
    }
  }
  for (int64_t o = 0; o < out; ++o) EXPECT_EQ(y[2 * out + o], 0.0f);
  // Against float math on the original weights: within about 1% of the output range.
  const std::vector<double> ref = FloatLinear(x, w, rows, out, in);
  double err = 0.0;
  for (size_t k = 0; k < ref.size(); ++k) err = std::max(err, std::fabs(y[k] - ref[k]));
  EXPECT_LT(err / MaxAbs(ref), 0.02);
}

TEST(QuantLinearTest, W4A16EqualsFloatMathOnDequantizedWeights) {
  std::mt19937 rng(4);
  const int64_t rows = 4, out = 21, in = 200;
  const std::vector<float> w = Gaussian(rng, out * in, 0.05f);
  const std::vector<float> x = Gaussian(rng, rows * in);
  auto backend = MakeCpuReferenceBackend();
  for (bool symmetric : {true, false}) {
    auto q = MakeInt4Weight(w, out, in, 64, symmetric);
    std::vector<float> y(rows * out);
    ASSERT_TRUE(
        backend->Linear({.x = x.data(), .rows = rows, .weight = q.view, .y = y.data()}).ok());
    const std::vector<double> exact = FloatLinear(x, Dequantize(q.view), rows, out, in);
    const std::vector<double> ref = FloatLinear(x, w, rows, out, in);
    double err_exact = 0.0, sq_err = 0.0, sq_ref = 0.0;
    for (size_t k = 0; k < ref.size(); ++k) {
      err_exact = std::max(err_exact, std::fabs(y[k] - exact[k]));
      sq_err += (y[k] - ref[k]) * (y[k] - ref[k]);
      sq_ref += ref[k] * ref[k];
    }
    EXPECT_LT(err_exact / MaxAbs(exact), 1e-5);
    // Against the original weights: int4 rounding leaves an error of about s / sqrt(12) per
    // weight with s ~ 3 sigma / 7.5, i.e. ~12% of the output's RMS (asymmetric: a bit less).
    EXPECT_LT(std::sqrt(sq_err / sq_ref), 0.2);
  }
}

TEST(QuantLinearTest, StridesAndAccumulate) {
  std::mt19937 rng(5);
  const int64_t rows = 3, out = 9, in = 40, xs = 50, ys = 12;
  const std::vector<float> w = Gaussian(rng, out * in, 0.1f);
  const std::vector<float> x = Gaussian(rng, rows * xs);
  auto q = MakeInt4Weight(w, out, in, 16, true);
  auto backend = MakeCpuReferenceBackend();
  std::vector<float> y(rows * ys, 1.0f);
  ASSERT_TRUE(backend
                  ->Linear({.x = x.data(),
                            .x_stride = xs,
                            .rows = rows,
                            .weight = q.view,
                            .y = y.data(),
                            .y_stride = ys,
                            .accumulate = true})
                  .ok());
  const std::vector<float> dq = Dequantize(q.view);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 1.0;
      for (int64_t j = 0; j < in; ++j) acc += double{x[i * xs + j]} * dq[o * in + j];
      EXPECT_NEAR(y[i * ys + o], acc, 1e-4);
    }
    for (int64_t o = out; o < ys; ++o) EXPECT_EQ(y[i * ys + o], 1.0f);  // untouched padding
  }
}

TEST(QuantLinearTest, MismatchedScalesAreInvalidArgument) {
  std::mt19937 rng(6);
  const int64_t out = 8, in = 256;
  const std::vector<float> w = Gaussian(rng, out * in);
  std::vector<float> x(in, 1.0f), y(out);
  auto backend = MakeCpuReferenceBackend();
  auto run = [&](const WeightView& v) {
    return backend->Linear({.x = x.data(), .rows = 1, .weight = v, .y = y.data()});
  };
  auto q4 = MakeInt4Weight(w, out, in, 128, false);
  WeightView bad = q4.view;
  bad.scale.shape = {out, 3};
  absl::Status s = run(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("needs scale shape [8, 2], got [8, 3]"));
  bad = q4.view;
  bad.zero_point.shape = {8, 2};
  EXPECT_THAT(run(bad).message(), HasSubstr("zero_point must be i32 [1, 2]"));
  bad = q4.view;
  bad.scale = TensorView{};
  EXPECT_THAT(run(bad).message(), HasSubstr("needs an f32/bf16/f16 scale, got none"));
  bad = q4.view;
  bad.group_size = 0;
  EXPECT_THAT(run(bad).message(), HasSubstr("group_size > 0"));
  auto q8 = MakeInt8Weight(w, out, in);
  bad = q8.view;
  bad.group_size = 128;
  EXPECT_THAT(run(bad).message(), HasSubstr("per output channel"));
  bad = q8.view;
  bad.scale.shape = {out};
  EXPECT_THAT(run(bad).message(), HasSubstr("needs scale shape [8, 1], got [8]"));
  bad = q8.view;
  bad.scale.dtype = DType::kI32;
  EXPECT_THAT(run(bad).message(), HasSubstr("f32/bf16/f16 scale, got i32"));
  absl::Status batched =
      backend->Linear({.x = x.data(), .rows = 1, .weight = q8.view, .y = y.data(), .batch = 2});
  EXPECT_THAT(batched.message(), HasSubstr("batch > 1"));
}

}  // namespace
}  // namespace r2

// The optimized integer-weight Linear (kernels/cpu/opt_quant.h) against the reference, on every
// instruction set this machine supports, on random odd shapes with tails, strides and
// accumulation. W8A8 must equal the reference bit for bit (integer dot products; the same
// activation quantization and the same float scaling). W4A16 differs from the reference only in
// summation order: |opt - ref| <= 2 * in * 2^-24 * sum_j |x_j w_j| per output (the two
// summation-order error bounds added).
#include "kernels/cpu/opt_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/numeric.h"
#include "kernels/quant_format.h"
#include "tests/unit/kernels/cpu_isas.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::SupportedIsas;

// An integer weight with its storage.
struct IntWeight {
  std::vector<uint8_t> data, scale;
  std::vector<int32_t> zero;
  WeightView view;
  std::vector<float> dequantized;  // [out, in]
};

// I8: rows quantized per output channel; with `raw`, uniform int8 values including -128.
IntWeight MakeI8(std::mt19937& rng, int64_t out, int64_t in, DType scale_dtype, bool raw) {
  IntWeight w;
  w.data.resize(out * in);
  std::vector<float> scales(out);
  auto* q = reinterpret_cast<int8_t*>(w.data.data());
  for (int64_t o = 0; o < out; ++o) {
    if (raw) {
      std::uniform_int_distribution<int> dist(-128, 127);
      for (int64_t j = 0; j < in; ++j) q[o * in + j] = static_cast<int8_t>(dist(rng));
      scales[o] = 0.001f * static_cast<float>(1 + o % 7);
    } else {
      const std::vector<float> row = RandomFloats(rng, in, 0.05f);
      scales[o] = QuantizeInt8Row(row.data(), in, q + o * in);
    }
  }
  const testing::StoredTensor s = testing::Store(scales, scale_dtype, {out, 1});
  w.scale = s.bytes;
  w.view.weight = TensorView{DType::kI8, {out, in}, w.data.data()};
  w.view.scale = TensorView{scale_dtype, {out, 1}, w.scale.data()};
  w.view.group_size = in;
  return w;
}

IntWeight MakeU4(std::mt19937& rng, int64_t out, int64_t in, int64_t group, bool symmetric,
                 DType scale_dtype) {
  IntWeight w;
  const int64_t groups = QuantGroups(in, group), row_bytes = PackedU4RowBytes(in);
  w.data.assign(out * row_bytes, 0);
  std::vector<float> scales(out * groups);
  if (!symmetric) w.zero.assign(((out + 7) / 8) * groups, 0);
  std::vector<int32_t> q(group);
  for (int64_t o = 0; o < out; ++o) {
    const std::vector<float> row = RandomFloats(rng, in, 0.05f);
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t j0 = g * group, n = std::min(group, in - j0);
      std::vector<float> vals(row.begin() + j0, row.begin() + j0 + n);
      if (!symmetric) {
        for (float& v : vals) v += 0.03f;  // off-centre, so zero points are not 0
      }
      const Int4Group qg = QuantizeInt4Group(vals.data(), n, symmetric, q.data());
      scales[o * groups + g] = qg.scale;
      for (int64_t j = 0; j < n; ++j) PackU4(w.data.data() + o * row_bytes, j0 + j, q[j]);
      if (!symmetric) {
        uint32_t word;
        std::memcpy(&word, &w.zero[(o / 8) * groups + g], 4);
        word |= static_cast<uint32_t>(qg.zero + 8) << (4 * (o % 8));
        std::memcpy(&w.zero[(o / 8) * groups + g], &word, 4);
      }
    }
  }
  const testing::StoredTensor s = testing::Store(scales, scale_dtype, {out, groups});
  w.scale = s.bytes;
  w.view.weight = TensorView{DType::kU4, {out, in}, w.data.data()};
  w.view.scale = TensorView{scale_dtype, {out, groups}, w.scale.data()};
  if (!symmetric) {
    w.view.zero_point = TensorView{DType::kI32, {(out + 7) / 8, groups}, w.zero.data()};
  }
  w.view.group_size = group;
  w.dequantized.resize(out * in);
  for (int64_t o = 0; o < out; ++o) DequantizeIntegerRow(w.view, o, &w.dequantized[o * in]);
  return w;
}

class OptQuantTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    auto made = MakeCpuOptimizedBackend(GetParam());
    ASSERT_TRUE(made.ok()) << made.status();
    opt_ = *std::move(made);
  }
  std::unique_ptr<Backend> opt_;
  std::unique_ptr<Backend> ref_ = MakeCpuReferenceBackend();
  std::mt19937 rng_{20261128};
};

struct Case {
  int64_t rows, in, out;
  bool strided = false, accumulate = false;
};

// Runs both backends on one weight; returns {opt, ref} outputs (padding included).
std::pair<std::vector<float>, std::vector<float>> RunBoth(Backend& opt, Backend& ref,
                                                          std::mt19937& rng, const Case& c,
                                                          const WeightView& w,
                                                          std::vector<float>* x_out = nullptr) {
  const int64_t xs = c.strided ? c.in + 3 : c.in, ys = c.strided ? c.out + 5 : c.out;
  std::vector<float> x = RandomFloats(rng, c.rows * xs);
  const std::vector<float> y0 = RandomFloats(rng, c.rows * ys);
  std::vector<float> a = y0, b = y0;
  LinearParams p{.x = x.data(),
                 .x_stride = c.strided ? xs : 0,
                 .rows = c.rows,
                 .weight = w,
                 .y = a.data(),
                 .y_stride = c.strided ? ys : 0,
                 .accumulate = c.accumulate};
  absl::Status s = opt.Linear(p);
  EXPECT_TRUE(s.ok()) << s;
  p.y = b.data();
  s = ref.Linear(p);
  EXPECT_TRUE(s.ok()) << s;
  if (x_out != nullptr) *x_out = x;
  return {a, b};
}

TEST_P(OptQuantTest, ActivationQuantizationIsTheReferences) {
  const cpu::QuantKernels& qk = cpu::QuantKernelsFor(GetParam());
  for (int64_t n : {1, 5, 15, 16, 17, 31, 32, 33, 63, 64, 100, 1027}) {
    std::vector<float> x = RandomFloats(rng_, n, 3.0f);
    if (n > 4) x[3] = 0.0f, x[4] = -x[2];  // ties of magnitude
    std::vector<int8_t> want(n), got(n);
    const float ws = QuantizeInt8Row(x.data(), n, want.data());
    int32_t sum = 0, want_sum = 0;
    const float gs = qk.quantize_row(x.data(), n, got.data(), &sum);
    for (int8_t v : want) want_sum += v;
    EXPECT_EQ(gs, ws) << n;
    EXPECT_EQ(got, want) << n;
    EXPECT_EQ(sum, want_sum) << n;
  }
  std::vector<float> zeros(37, 0.0f);
  std::vector<int8_t> q(37, 5);
  int32_t sum = 7;
  EXPECT_EQ(qk.quantize_row(zeros.data(), 37, q.data(), &sum), 0.0f);
  EXPECT_EQ(sum, 0);
  EXPECT_EQ(q, std::vector<int8_t>(37, 0));
}

TEST_P(OptQuantTest, Int8MatchesTheReferenceExactly) {
  const std::vector<Case> cases = {
      {1, 1, 1},       {1, 64, 16},         {1, 65, 17},   {1, 1000, 37, false, true},
      {2, 7, 3, true}, {3, 129, 33},        {4, 64, 4},    {5, 200, 19, true, true},
      {9, 333, 70},    {17, 96, 130, true}, {1, 2048, 64}, {33, 1024, 48, false, true}};
  for (const Case& c : cases) {
    for (bool raw : {false, true}) {
      for (DType sd : {DType::kF32, DType::kBF16}) {
        SCOPED_TRACE("rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
                     std::to_string(c.out) + (raw ? " raw" : "") + " " +
                     std::string(DTypeName(sd)));
        IntWeight w = MakeI8(rng_, c.out, c.in, sd, raw);
        auto [a, b] = RunBoth(*opt_, *ref_, rng_, c, w.view);
        ASSERT_EQ(a.size(), b.size());
        for (size_t i = 0; i < a.size(); ++i) {
          ASSERT_EQ(a[i], b[i]) << "element " << i;
        }
      }
    }
  }
}

TEST_P(OptQuantTest, Int4WithinTheSummationOrderBound) {
  struct U4Case {
    Case c;
    int64_t group;
  };
  const std::vector<U4Case> cases = {{{1, 128, 16}, 128},
                                     {{1, 130, 17}, 128},
                                     {{1, 37, 5}, 32},
                                     {{2, 256, 9, true}, 64},
                                     {{3, 1000, 24, false, true}, 128},
                                     {{4, 96, 8}, 32},
                                     {{5, 300, 33, true, true}, 128},
                                     {{7, 1024, 40}, 128},
                                     {{1, 2048, 64}, 128},
                                     {{20, 257, 19}, 64}};
  for (const U4Case& uc : cases) {
    const Case& c = uc.c;
    for (bool symmetric : {true, false}) {
      SCOPED_TRACE("rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
                   std::to_string(c.out) + " group " + std::to_string(uc.group) +
                   (symmetric ? " symmetric" : " zero points"));
      IntWeight w =
          MakeU4(rng_, c.out, c.in, uc.group, symmetric, symmetric ? DType::kBF16 : DType::kF32);
      std::vector<float> x;
      auto [a, b] = RunBoth(*opt_, *ref_, rng_, c, w.view, &x);
      const int64_t xs = c.strided ? c.in + 3 : c.in, ys = c.strided ? c.out + 5 : c.out;
      for (int64_t r = 0; r < c.rows; ++r) {
        for (int64_t o = 0; o < c.out; ++o) {
          double mag = 0;
          for (int64_t j = 0; j < c.in; ++j) {
            mag += std::fabs(double{x[r * xs + j]} * w.dequantized[o * c.in + j]);
          }
          const double bound = 2.0 * c.in * std::ldexp(1.0, -24) * mag + 1e-30;
          ASSERT_LE(std::fabs(a[r * ys + o] - b[r * ys + o]), bound) << "row " << r << " out " << o;
        }
        for (int64_t o = c.out; o < ys; ++o) ASSERT_EQ(a[r * ys + o], b[r * ys + o]);
      }
    }
  }
}

TEST_P(OptQuantTest, Int4GroupsTheKernelCannotSplitRunOnTheReference) {
  // Group 6 is no multiple of any kernel chunk but the portable one (2); the result is still
  // right (reference or portable kernel).
  IntWeight w = MakeU4(rng_, 9, 40, 6, false, DType::kF32);
  auto [a, b] = RunBoth(*opt_, *ref_, rng_, {3, 40, 9}, w.view);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5f * (1 + std::fabs(b[i])));
}

TEST_P(OptQuantTest, BadScalesAreTheReferencesError) {
  IntWeight w = MakeI8(rng_, 8, 32, DType::kF32, false);
  w.view.scale.shape = {8, 2};
  std::vector<float> x(32, 1.0f), y(8);
  const absl::Status s = opt_->Linear({.x = x.data(), .rows = 1, .weight = w.view, .y = y.data()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("scale shape"), std::string::npos) << s;
  IntWeight u = MakeU4(rng_, 8, 64, 32, false, DType::kF32);
  u.view.zero_point.shape = {2, 2};
  const absl::Status z = opt_->Linear({.x = x.data(), .rows = 1, .weight = u.view, .y = y.data()});
  EXPECT_EQ(z.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(z.message().find("zero_point"), std::string::npos) << z;
}

INSTANTIATE_TEST_SUITE_P(Isas, OptQuantTest, ::testing::ValuesIn(SupportedIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

TEST(OptQuantIsaTest, VnniKernelsWhenTheCpuHasThem) {
  if (!CpuIsaSupported(CpuIsa::kAvx512)) GTEST_SKIP() << "no AVX-512";
  EXPECT_STREQ(
      cpu::QuantKernelsFor(CpuIsa::kAvx512).name,
      CpuHasAvx512Vnni() && cpu::Avx512VnniQuantKernels() != nullptr ? "avx512-vnni" : "avx2");
}

}  // namespace
}  // namespace r2

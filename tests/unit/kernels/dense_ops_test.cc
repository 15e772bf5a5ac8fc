// Reference row-wise ops against naive double-precision computations in the test.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "kernels/rope_table.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::RelativeError;
using testing::Store;
using testing::StoredTensor;

WeightView Unscaled(const TensorView& t) {
  WeightView w;
  w.weight = t;
  return w;
}

class DenseOpsTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = MakeCpuReferenceBackend();
  std::mt19937 rng_{1234};
};

TEST_F(DenseOpsTest, EmbeddingGathersRowsOfEveryFloatDtype) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t vocab = 37, dim = 13;
    StoredTensor table = Store(RandomFloats(rng_, vocab * dim), dtype, {vocab, dim});
    const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
    std::vector<float> out(ids.size() * (dim + 3), -1.0f);
    ASSERT_TRUE(backend_
                    ->Embedding({.table = table.view,
                                 .ids = ids.data(),
                                 .rows = 5,
                                 .out = out.data(),
                                 .out_stride = dim + 3})
                    .ok());
    for (size_t i = 0; i < ids.size(); ++i) {
      for (int64_t j = 0; j < dim; ++j) {
        EXPECT_EQ(out[i * (dim + 3) + j], table.decoded[ids[i] * dim + j]);
      }
      EXPECT_EQ(out[i * (dim + 3) + dim], -1.0f);  // stride padding untouched
    }
  }
}

TEST_F(DenseOpsTest, EmbeddingRejectsOutOfRangeIds) {
  StoredTensor table = Store(RandomFloats(rng_, 4 * 3), DType::kF32, {4, 3});
  std::vector<float> out(3);
  for (int32_t bad : {4, -1}) {
    absl::Status s =
        backend_->Embedding({.table = table.view, .ids = &bad, .rows = 1, .out = out.data()});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
}

TEST_F(DenseOpsTest, RmsNormMatchesNaive) {
  const int64_t rows = 7, dim = 131;
  std::vector<float> x = RandomFloats(rng_, rows * dim, 3.0f);
  StoredTensor w = Store(RandomFloats(rng_, dim), DType::kBF16, {dim});
  std::vector<float> y(rows * dim);
  ASSERT_TRUE(backend_
                  ->RmsNorm({.x = x.data(),
                             .y = y.data(),
                             .rows = rows,
                             .dim = dim,
                             .weight = w.view,
                             .eps = 1e-6f})
                  .ok());
  std::vector<double> ref(rows * dim);
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += double(x[i * dim + j]) * x[i * dim + j];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-6);
    for (int64_t j = 0; j < dim; ++j) ref[i * dim + j] = w.decoded[j] * x[i * dim + j] * inv;
  }
  EXPECT_LT(RelativeError(y, ref), 1e-5);
  // In place gives the same result.
  ASSERT_TRUE(backend_
                  ->RmsNorm({.x = x.data(),
                             .y = x.data(),
                             .rows = rows,
                             .dim = dim,
                             .weight = w.view,
                             .eps = 1e-6f})
                  .ok());
  EXPECT_EQ(x, y);
}

// y = x W^T in double from the decoded weight; `w_real(o, j)` gives the real weight value.
template <typename WeightFn>
std::vector<double> NaiveLinear(const std::vector<float>& x, int64_t rows, int64_t in, int64_t out,
                                WeightFn w_real) {
  std::vector<double> y(rows * out);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < in; ++j) acc += double(x[i * in + j]) * w_real(o, j);
      y[i * out + o] = acc;
    }
  }
  return y;
}

TEST_F(DenseOpsTest, LinearMatchesNaiveForFloatDtypes) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t rows = 5, in = 203, out = 67;
    std::vector<float> x = RandomFloats(rng_, rows * in);
    StoredTensor w = Store(RandomFloats(rng_, out * in, 0.05f), dtype, {out, in});
    std::vector<float> y(rows * out);
    ASSERT_TRUE(
        backend_->Linear({.x = x.data(), .rows = rows, .weight = Unscaled(w.view), .y = y.data()})
            .ok());
    auto ref = NaiveLinear(x, rows, in, out,
                           [&](int64_t o, int64_t j) { return double(w.decoded[o * in + j]); });
    EXPECT_LT(RelativeError(y, ref), 1e-5) << DTypeName(dtype);
  }
}

// FP8 weights with block scales, including partial edge blocks and non-square blocks.
TEST_F(DenseOpsTest, LinearDequantizesBlockScaledFp8OnTheFly) {
  struct Case {
    int64_t out, in, block_out, block_in;
  };
  for (Case c : {Case{200, 300, 128, 128}, Case{80, 256, 128, 128}, Case{45, 70, 16, 32},
                 Case{1, 129, 128, 128}}) {
    const int64_t rows = 3;
    std::vector<float> x = RandomFloats(rng_, rows * c.in);
    StoredTensor w = Store(RandomFloats(rng_, c.out * c.in, 100.0f), DType::kF8E4M3, {c.out, c.in});
    const int64_t sr = (c.out + c.block_out - 1) / c.block_out;
    const int64_t sc = (c.in + c.block_in - 1) / c.block_in;
    std::vector<float> scales(sr * sc);
    std::uniform_real_distribution<float> scale_dist(1e-4f, 1e-3f);
    for (float& s : scales) s = scale_dist(rng_);
    StoredTensor s = Store(scales, DType::kF32, {sr, sc});
    WeightView weight{w.view, s.view, c.block_out, c.block_in};
    std::vector<float> y(rows * c.out, 1.0f);
    ASSERT_TRUE(
        backend_
            ->Linear(
                {.x = x.data(), .rows = rows, .weight = weight, .y = y.data(), .accumulate = true})
            .ok());
    auto ref = NaiveLinear(x, rows, c.in, c.out, [&](int64_t o, int64_t j) {
      return double(w.decoded[o * c.in + j]) * scales[(o / c.block_out) * sc + j / c.block_in];
    });
    for (double& r : ref) r += 1.0;  // accumulate onto the ones
    EXPECT_LT(RelativeError(y, ref), 1e-5) << c.out << "x" << c.in;
  }
}

TEST_F(DenseOpsTest, LinearReadsAndWritesStridedRows) {
  const int64_t rows = 4, in = 9, out = 6, xs = 20, ys = 11;
  std::vector<float> x = RandomFloats(rng_, rows * xs);
  StoredTensor w = Store(RandomFloats(rng_, out * in), DType::kF32, {out, in});
  std::vector<float> y(rows * ys, 7.0f);
  ASSERT_TRUE(backend_
                  ->Linear({.x = x.data() + 3,
                            .x_stride = xs,
                            .rows = rows,
                            .weight = Unscaled(w.view),
                            .y = y.data() + 2,
                            .y_stride = ys})
                  .ok());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t j = 0; j < in; ++j) acc += double(x[i * xs + 3 + j]) * w.decoded[o * in + j];
      EXPECT_NEAR(y[i * ys + 2 + o], acc, 1e-5);
    }
    EXPECT_EQ(y[i * ys], 7.0f);
    EXPECT_EQ(y[i * ys + 1], 7.0f);
  }
}

// A strided batch of products (per-head projections): product b reads x rows at
// b * x_batch_stride, the weight at b * weight_batch_stride and writes y at b * y_batch_stride;
// with weight_transposed, element (o, j) of a product's weight is at j * out + o.
TEST_F(DenseOpsTest, LinearRunsAStridedBatchOfProducts) {
  EXPECT_TRUE(backend_->SupportsTransposedLinear());
  for (const bool transposed : {false, true}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      const int64_t batch = 3, rows = 4, in = 10, out = 7;
      const int64_t xs = 40, ys = 30, xbs = 12, ybs = 8, wbs = out * in + 5;
      std::vector<float> x = RandomFloats(rng_, rows * xs);
      StoredTensor w = Store(RandomFloats(rng_, batch * wbs), dtype, {batch * wbs});
      WeightView weight = Unscaled(TensorView{dtype, {out, in}, w.view.data});
      std::vector<float> y(rows * ys, 5.0f);
      ASSERT_TRUE(backend_
                      ->Linear({.x = x.data(),
                                .x_stride = xs,
                                .rows = rows,
                                .weight = weight,
                                .y = y.data(),
                                .y_stride = ys,
                                .accumulate = dtype == DType::kBF16,
                                .batch = batch,
                                .x_batch_stride = xbs,
                                .y_batch_stride = ybs,
                                .weight_batch_stride = wbs,
                                .weight_transposed = transposed})
                      .ok());
      std::vector<bool> written(y.size(), false);
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t o = 0; o < out; ++o) {
            double acc = dtype == DType::kBF16 ? 5.0 : 0.0;
            for (int64_t j = 0; j < in; ++j) {
              const int64_t at = b * wbs + (transposed ? j * out + o : o * in + j);
              acc += double(x[i * xs + b * xbs + j]) * w.decoded[at];
            }
            const int64_t at = i * ys + b * ybs + o;
            EXPECT_NEAR(y[at], acc, 1e-4)
                << DTypeName(dtype) << " b=" << b << " i=" << i << " transposed " << transposed;
            written[at] = true;
          }
        }
      }
      for (size_t k = 0; k < y.size(); ++k) {
        if (!written[k]) EXPECT_EQ(y[k], 5.0f) << "untouched element " << k << " was written";
      }
    }
  }
}

TEST_F(DenseOpsTest, LinearRefusesATransposedQuantizedWeight) {
  StoredTensor f8 = Store(RandomFloats(rng_, 4 * 3), DType::kF8E4M3, {4, 3});
  StoredTensor scale = Store({1.0f}, DType::kF32, {1, 1});
  std::vector<float> x(3), y(4);
  absl::Status st = backend_->Linear(
      {.x = x.data(),
       .rows = 1,
       .weight = {.weight = f8.view, .scale_inv = scale.view, .block_out = 128, .block_in = 128},
       .y = y.data(),
       .weight_transposed = true});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("transposed"), std::string::npos) << st;
}

TEST_F(DenseOpsTest, LinearRejectsBadBatch) {
  StoredTensor w = Store(RandomFloats(rng_, 4 * 3), DType::kF32, {4, 3});
  std::vector<float> x(3), y(4);
  absl::Status st = backend_->Linear(
      {.x = x.data(), .rows = 1, .weight = Unscaled(w.view), .y = y.data(), .batch = 0});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("batch"), std::string::npos) << st;
  StoredTensor f8 = Store(RandomFloats(rng_, 4 * 3), DType::kF8E4M3, {4, 3});
  StoredTensor s = Store({1.0f}, DType::kF32, {1, 1});
  st = backend_->Linear({.x = x.data(),
                         .rows = 1,
                         .weight = {f8.view, s.view, 128, 128},
                         .y = y.data(),
                         .batch = 2,
                         .y_batch_stride = 0});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("f8_e4m3"), std::string::npos) << st;
}

TEST_F(DenseOpsTest, LinearRejectsBadScaleShapeAndDtype) {
  StoredTensor w = Store(RandomFloats(rng_, 130 * 10), DType::kF8E4M3, {130, 10});
  StoredTensor s = Store({1.0f}, DType::kF32, {1, 1});  // needs [2, 1]
  std::vector<float> x(10), y(130);
  absl::Status st = backend_->Linear(
      {.x = x.data(), .rows = 1, .weight = {w.view, s.view, 128, 128}, .y = y.data()});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  st = backend_->Linear({.x = x.data(), .rows = 1, .weight = Unscaled(w.view), .y = y.data()});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
}

TEST_F(DenseOpsTest, RopeRotatesInterleavedPairs) {
  const int64_t rows = 6, heads = 3, rope_dim = 10, head_stride = 14, token_stride = 50;
  std::vector<double> inv_freq = {1.0, 0.31, 0.07, 0.002, 1e-5};
  RopeTable table = BuildRopeTable(inv_freq, 300, 1.0);
  std::vector<float> x = RandomFloats(rng_, rows * token_stride);
  const std::vector<float> x0 = x;
  const std::vector<int32_t> positions = {0, 1, 2, 77, 299, 150};
  ASSERT_TRUE(backend_
                  ->Rope({.x = x.data() + 4,
                          .rows = rows,
                          .heads = heads,
                          .token_stride = token_stride,
                          .head_stride = head_stride,
                          .rope_dim = rope_dim,
                          .positions = positions.data(),
                          .cos = table.cos.data(),
                          .sin = table.sin.data(),
                          .max_positions = 300})
                  .ok());
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = t * token_stride + 4 + h * head_stride;
      for (int64_t i = 0; i < rope_dim / 2; ++i) {
        const double a = positions[t] * inv_freq[i];
        const double x0e = x0[base + 2 * i], x0o = x0[base + 2 * i + 1];
        EXPECT_NEAR(x[base + 2 * i], x0e * std::cos(a) - x0o * std::sin(a), 1e-5);
        EXPECT_NEAR(x[base + 2 * i + 1], x0e * std::sin(a) + x0o * std::cos(a), 1e-5);
      }
    }
  }
  const int32_t bad = 300;
  absl::Status s = backend_->Rope({.x = x.data(),
                                   .rows = 1,
                                   .heads = 1,
                                   .rope_dim = 10,
                                   .positions = &bad,
                                   .cos = table.cos.data(),
                                   .sin = table.sin.data(),
                                   .max_positions = 300});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DenseOpsTest, SiluMulAddGatherScatter) {
  const int64_t rows = 5, dim = 17;
  std::vector<float> a = RandomFloats(rng_, rows * dim, 4.0f), b = RandomFloats(rng_, rows * dim);
  std::vector<float> out(rows * dim);
  ASSERT_TRUE(
      backend_
          ->SiluMul({.gate = a.data(), .up = b.data(), .out = out.data(), .rows = rows, .dim = dim})
          .ok());
  for (int64_t i = 0; i < rows * dim; ++i) {
    EXPECT_NEAR(out[i], a[i] / (1.0 + std::exp(-double(a[i]))) * b[i], 1e-5);
  }
  ASSERT_TRUE(
      backend_->Add({.a = a.data(), .b = b.data(), .out = out.data(), .rows = rows, .dim = dim})
          .ok());
  for (int64_t i = 0; i < rows * dim; ++i) EXPECT_EQ(out[i], a[i] + b[i]);

  const std::vector<int32_t> index = {4, 0, 4};
  std::vector<float> gathered(3 * dim);
  ASSERT_TRUE(backend_
                  ->GatherRows({.x = a.data(),
                                .x_rows = rows,
                                .index = index.data(),
                                .rows = 3,
                                .dim = dim,
                                .out = gathered.data()})
                  .ok());
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < dim; ++j) EXPECT_EQ(gathered[i * dim + j], a[index[i] * dim + j]);
  }
  const std::vector<float> scale = {0.5f, 2.0f, -1.0f};
  std::vector<float> acc(rows * dim, 1.0f);
  ASSERT_TRUE(backend_
                  ->ScatterAddRows({.x = gathered.data(),
                                    .index = index.data(),
                                    .scale = scale.data(),
                                    .rows = 3,
                                    .dim = dim,
                                    .out = acc.data(),
                                    .out_rows = rows})
                  .ok());
  for (int64_t j = 0; j < dim; ++j) {
    EXPECT_NEAR(acc[4 * dim + j], 1.0 + 0.5 * a[4 * dim + j] - a[4 * dim + j], 1e-6);
    EXPECT_NEAR(acc[0 * dim + j], 1.0 + 2.0 * a[0 * dim + j], 1e-6);
    EXPECT_EQ(acc[2 * dim + j], 1.0f);
  }
  const int32_t bad = rows;
  EXPECT_FALSE(backend_
                   ->GatherRows({.x = a.data(),
                                 .x_rows = rows,
                                 .index = &bad,
                                 .rows = 1,
                                 .dim = dim,
                                 .out = gathered.data()})
                   .ok());
}

}  // namespace
}  // namespace r2

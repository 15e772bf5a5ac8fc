// The optimized CPU MoeExperts (kernels/cpu/opt_moe_experts.cc) given expert weight views in
// every format its Linear takes (bf16, f32, block-scaled fp8, I8 W8A8, U4 W4A16), on every
// instruction set this machine supports, against the experts run one pair at a time through the
// reference backend's Linear (the oracle) and combined in the op's order. Bounds are
// max |opt - ref| / max |ref|: 1e-5 for float weights and U4 (summation order, vector exp in
// SiLU); 5e-3 for I8, where the SiLU output is requantized per token and an activation within
// rounding distance of a quantization step can land one step away (one step is 1/127 of the
// row's largest value).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
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

// One expert matrix [out, in] in a format, with its storage.
struct Matrix {
  std::vector<uint8_t> data, scale;
  std::vector<int32_t> zero;
  std::vector<float> scale_inv;
  WeightView view;
};

Matrix MakeMatrix(std::mt19937& rng, DType dtype, int64_t out, int64_t in) {
  Matrix m;
  const std::vector<float> values = RandomFloats(rng, out * in, 1.0f / std::sqrt(float(in)));
  if (dtype == DType::kI8) {
    m.data.resize(out * in);
    std::vector<float> s(out);
    for (int64_t o = 0; o < out; ++o) {
      s[o] = QuantizeInt8Row(&values[o * in], in, reinterpret_cast<int8_t*>(&m.data[o * in]));
    }
    m.scale.resize(out * 4);
    std::memcpy(m.scale.data(), s.data(), out * 4);
    m.view.weight = TensorView{DType::kI8, {out, in}, m.data.data()};
    m.view.scale = TensorView{DType::kF32, {out, 1}, m.scale.data()};
    m.view.group_size = in;
    return m;
  }
  if (dtype == DType::kU4) {
    const int64_t group = 32, groups = QuantGroups(in, group), row_bytes = PackedU4RowBytes(in);
    m.data.assign(out * row_bytes, 0);
    m.zero.assign(((out + 7) / 8) * groups, 0);
    std::vector<float> s(out * groups);
    std::vector<int32_t> q(group);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t j0 = g * group, n = std::min(group, in - j0);
        const Int4Group qg = QuantizeInt4Group(&values[o * in + j0], n, false, q.data());
        s[o * groups + g] = qg.scale;
        for (int64_t j = 0; j < n; ++j) PackU4(&m.data[o * row_bytes], j0 + j, q[j]);
        m.zero[(o / 8) * groups + g] |= (qg.zero + 8) << (4 * (o % 8));
      }
    }
    m.scale.resize(s.size() * 4);
    std::memcpy(m.scale.data(), s.data(), m.scale.size());
    m.view.weight = TensorView{DType::kU4, {out, in}, m.data.data()};
    m.view.scale = TensorView{DType::kF32, {out, groups}, m.scale.data()};
    m.view.zero_point = TensorView{DType::kI32, {(out + 7) / 8, groups}, m.zero.data()};
    m.view.group_size = group;
    return m;
  }
  std::vector<float> v = values;
  if (dtype == DType::kF8E4M3) {
    for (float& x : v) x *= 16.0f * std::sqrt(float(in));
  }
  testing::StoredTensor t = testing::Store(v, dtype, {out, in});
  m.data = t.bytes;
  m.view.weight = TensorView{dtype, {out, in}, m.data.data()};
  if (dtype == DType::kF8E4M3) {
    m.view.block_out = 32;
    m.view.block_in = 16;
    const int64_t rows = (out + 31) / 32, cols = (in + 15) / 16;
    std::uniform_real_distribution<float> dist(0.5f, 2.0f);
    m.scale_inv.resize(rows * cols);
    for (float& s : m.scale_inv) s = dist(rng) / (16.0f * std::sqrt(float(in)));
    m.view.scale_inv = TensorView{DType::kF32, {rows, cols}, m.scale_inv.data()};
  }
  return m;
}

struct Experts {
  int64_t hidden, width, count;
  std::vector<Matrix> matrices;  // gate of each expert, then up, then down
  std::vector<WeightView> views;
};

Experts MakeExperts(std::mt19937& rng, DType dtype, int64_t hidden, int64_t width, int64_t count) {
  Experts e{hidden, width, count, {}, {}};
  for (int m = 0; m < 3; ++m) {
    for (int64_t i = 0; i < count; ++i) {
      e.matrices.push_back(m < 2 ? MakeMatrix(rng, dtype, width, hidden)
                                 : MakeMatrix(rng, dtype, hidden, width));
    }
  }
  for (const Matrix& m : e.matrices) e.views.push_back(m.view);
  return e;
}

// The oracle: per (token, j) pair, reference Linear/SiLU/Linear, then h += sum_j w_j y_j.
std::vector<float> PairByPair(const Experts& e, const std::vector<float>& x, int64_t xs,
                              std::vector<float> h, int64_t hs, const std::vector<int32_t>& ids,
                              const std::vector<float>& weights, int64_t rows, int64_t k) {
  auto ref = MakeCpuReferenceBackend();
  std::vector<float> g(e.width), u(e.width), y(e.hidden), acc(e.hidden);
  for (int64_t t = 0; t < rows; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t id = ids[t * k + j];
      EXPECT_TRUE(
          ref->Linear({.x = &x[t * xs], .rows = 1, .weight = e.views[id], .y = g.data()}).ok());
      EXPECT_TRUE(
          ref->Linear({.x = &x[t * xs], .rows = 1, .weight = e.views[e.count + id], .y = u.data()})
              .ok());
      for (int64_t i = 0; i < e.width; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      EXPECT_TRUE(
          ref->Linear(
                 {.x = g.data(), .rows = 1, .weight = e.views[2 * e.count + id], .y = y.data()})
              .ok());
      for (int64_t o = 0; o < e.hidden; ++o) acc[o] += weights[t * k + j] * y[o];
    }
    for (int64_t o = 0; o < e.hidden; ++o) h[t * hs + o] += acc[o];
  }
  return h;
}

class OptMoeExpertsTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    auto made = MakeCpuOptimizedBackend(GetParam());
    ASSERT_TRUE(made.ok()) << made.status();
    opt_ = *std::move(made);
  }
  std::unique_ptr<Backend> opt_;
  std::mt19937 rng_{77};
};

TEST_P(OptMoeExpertsTest, ViewsInEveryFormatMatchThePairByPairReference) {
  const int64_t hidden = 96, width = 40, count = 7, k = 3;
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF8E4M3, DType::kI8, DType::kU4}) {
    const Experts e = MakeExperts(rng_, dtype, hidden, width, count);
    for (int64_t rows : {1, 2, 5, 33, 97}) {  // 97: ~40 rows per expert (the packed GEMM)
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " rows " + std::to_string(rows));
      const int64_t xs = hidden + 5, hs = hidden + 3;
      const std::vector<float> x = RandomFloats(rng_, rows * xs);
      const std::vector<float> h0 = RandomFloats(rng_, rows * hs);
      std::vector<int32_t> ids, all(count);
      std::vector<float> weights;
      std::iota(all.begin(), all.end(), 0);
      std::uniform_real_distribution<float> wd(0.1f, 1.5f);
      for (int64_t t = 0; t < rows; ++t) {
        std::shuffle(all.begin(), all.end(), rng_);
        for (int64_t j = 0; j < k; ++j) {
          ids.push_back(all[j]);
          weights.push_back(wd(rng_));
        }
      }
      std::vector<float> h = h0;
      const absl::Status s = opt_->MoeExperts({.x = x.data(),
                                               .x_stride = xs,
                                               .rows = rows,
                                               .hidden = hidden,
                                               .width = width,
                                               .num_experts = count,
                                               .top_k = k,
                                               .expert_ids = ids.data(),
                                               .expert_weights = weights.data(),
                                               .h = h.data(),
                                               .h_stride = hs,
                                               .expert_views = e.views.data()});
      ASSERT_TRUE(s.ok()) << s;
      const std::vector<float> want = PairByPair(e, x, xs, h0, hs, ids, weights, rows, k);
      double diff = 0, mag = 0;
      for (int64_t t = 0; t < rows; ++t) {
        for (int64_t o = 0; o < hs; ++o) {
          const size_t i = t * hs + o;
          if (o >= hidden) {
            ASSERT_EQ(h[i], h0[i]) << "padding written";
            continue;
          }
          diff = std::max(diff, double(std::fabs(h[i] - want[i])));
          mag = std::max(mag, double(std::fabs(want[i] - h0[i])));
        }
      }
      EXPECT_LE(diff / mag, dtype == DType::kI8 ? 5e-3 : 1e-5);
    }
  }
}

// The gate/up blocks and the down blocks run in one parallel loop, a down block waiting for its
// expert's gate/up (opt_moe_experts.cc, step 2). Repeated threaded calls must give bit-identical
// results that match the oracle: a decode batch (many experts of one or two rows each), and one
// token whose two experts are cut into several gate/up and down blocks each.
TEST_P(OptMoeExpertsTest, RepeatedThreadedCallsAreBitIdentical) {
  struct Case {
    int64_t rows, hidden, width, count, k;
  };
  for (const Case c : {Case{8, 256, 64, 64, 6}, Case{1, 256, 256, 4, 2}}) {
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " width " + std::to_string(c.width));
    const Experts e = MakeExperts(rng_, DType::kBF16, c.hidden, c.width, c.count);
    const std::vector<float> x = RandomFloats(rng_, c.rows * c.hidden);
    const std::vector<float> h0 = RandomFloats(rng_, c.rows * c.hidden);
    std::vector<int32_t> ids, all(c.count);
    std::vector<float> weights;
    std::iota(all.begin(), all.end(), 0);
    for (int64_t t = 0; t < c.rows; ++t) {
      std::shuffle(all.begin(), all.end(), rng_);
      for (int64_t j = 0; j < c.k; ++j) {
        ids.push_back(all[j]);
        weights.push_back(0.25f + 0.1f * static_cast<float>(j));
      }
    }
    auto run = [&] {
      std::vector<float> h = h0;
      const absl::Status s = opt_->MoeExperts({.x = x.data(),
                                               .rows = c.rows,
                                               .hidden = c.hidden,
                                               .width = c.width,
                                               .num_experts = c.count,
                                               .top_k = c.k,
                                               .expert_ids = ids.data(),
                                               .expert_weights = weights.data(),
                                               .h = h.data(),
                                               .expert_views = e.views.data()});
      EXPECT_TRUE(s.ok()) << s;
      return h;
    };
    const std::vector<float> first = run();
    const std::vector<float> want =
        PairByPair(e, x, c.hidden, h0, c.hidden, ids, weights, c.rows, c.k);
    double diff = 0, mag = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      diff = std::max(diff, double(std::fabs(first[i] - want[i])));
      mag = std::max(mag, double(std::fabs(want[i] - h0[i])));
    }
    EXPECT_LE(diff / mag, 1e-5);
    for (int rep = 0; rep < 300; ++rep) {
      const std::vector<float> again = run();
      ASSERT_EQ(std::memcmp(again.data(), first.data(), first.size() * sizeof(float)), 0)
          << "call " << rep << " differs";
    }
  }
}

TEST_P(OptMoeExpertsTest, ViewErrors) {
  const int64_t hidden = 64, width = 32, count = 3;
  Experts e = MakeExperts(rng_, DType::kBF16, hidden, width, count);
  std::vector<float> x(2 * hidden, 0.5f), h(2 * hidden, 0.0f), w = {1.0f, 1.0f};
  std::vector<int32_t> ids = {0, 2};
  MoeExpertsParams p{.x = x.data(),
                     .rows = 2,
                     .hidden = hidden,
                     .width = width,
                     .num_experts = count,
                     .top_k = 1,
                     .expert_ids = ids.data(),
                     .expert_weights = w.data(),
                     .h = h.data(),
                     .expert_views = e.views.data()};
  ASSERT_TRUE(opt_->MoeExperts(p).ok());
  ids[1] = 3;
  absl::Status s = opt_->MoeExperts(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("expert id 3"), std::string::npos) << s;
  ids[1] = 2;
  e.views[2 * count + 2].weight.shape = {hidden, width + 1};  // expert 2's down
  s = opt_->MoeExperts(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("expert 2 down weight must be [64, 32]"), std::string::npos) << s;
  // Formats mixed across experts: the caller runs the experts one by one instead.
  Experts f = MakeExperts(rng_, DType::kF32, hidden, width, count);
  e.views[2 * count + 2] = f.views[2 * count + 2];
  s = opt_->MoeExperts(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  // The reference backends do not take views.
  auto ref = MakeCpuReferenceBackend();
  EXPECT_EQ(ref->MoeExperts(p).code(), absl::StatusCode::kUnimplemented);
}

INSTANTIATE_TEST_SUITE_P(Isas, OptMoeExpertsTest, ::testing::ValuesIn(SupportedIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

}  // namespace
}  // namespace r2

// The optimized CPU MoeExperts on bf16 experts where some experts have the AMX tiles' row counts
// (kAmxMinRows-15: a shared expert every token takes, routed experts many tokens chose) beside
// experts of 1-4 rows and of 16+ (the packed GEMM), on odd hidden sizes and widths (whole and
// partial groups of 16 outputs, inputs that are not whole chunks of 32) and weights at several
// offsets from a 64-byte boundary (gate and up of one expert at different leads too), with the
// AMX path allowed and turned off, on the backend's threads (rows prepared for one lead and read
// at another would be wrong sums, not just slow ones). Oracle: float64 sums of the same
// bf16 weights. Bound: max |opt - ref| / max |ref| < 1e-5 (float32 summation order and the
// vector exp of SiLU; the AMX path's three-part split of the activations is exact).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/opt_amx.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/numeric.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;

constexpr double kBound = 1e-5;

// Experts whose gate, up and down weights sit in one 64-byte-aligned buffer, each matrix at a
// chosen byte offset (even) past a 64-byte boundary.
struct PlacedExperts {
  int64_t hidden = 0, width = 0, count = 0;
  std::vector<uint8_t> storage;
  std::vector<std::vector<float>> values;  // the bf16 values as float: [3 * count][out * in]
  std::vector<WeightView> views;           // gate of each expert, then up, then down
};

PlacedExperts MakePlacedExperts(std::mt19937& rng, int64_t hidden, int64_t width, int64_t count,
                                const std::vector<int64_t>& offsets) {
  PlacedExperts e;
  e.hidden = hidden;
  e.width = width;
  e.count = count;
  const int64_t matrix_bytes = 2 * hidden * width;
  const int64_t slot = (matrix_bytes + 64 + 63) / 64 * 64;  // room for any offset below 64
  e.storage.assign(3 * count * slot + 64, 0);
  uint8_t* base = e.storage.data();
  base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
  for (int64_t i = 0; i < 3 * count; ++i) {
    const bool down = i >= 2 * count;
    const int64_t out = down ? hidden : width, in = down ? width : hidden;
    const std::vector<float> v = RandomFloats(rng, out * in, 1.0f / std::sqrt(float(in)));
    uint8_t* at = base + i * slot + offsets[i % offsets.size()];
    std::vector<float> rounded(out * in);
    for (int64_t j = 0; j < out * in; ++j) {
      const uint16_t b = FloatToBF16(v[j]);
      std::memcpy(at + 2 * j, &b, 2);
      rounded[j] = BF16ToFloat(b);
    }
    e.values.push_back(std::move(rounded));
    WeightView view;
    view.weight = TensorView{DType::kBF16, {out, in}, at};
    e.views.push_back(view);
  }
  return e;
}

// h0 + sum_j w_j * down(silu(gate x) * up x), in float64.
std::vector<double> Oracle(const PlacedExperts& e, const std::vector<float>& x,
                           const std::vector<float>& h0, const std::vector<int32_t>& ids,
                           const std::vector<float>& weights, int64_t rows, int64_t k) {
  const int64_t d = e.hidden, width = e.width;
  std::vector<double> h(h0.begin(), h0.end()), act(width);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t id = ids[t * k + j];
      const std::vector<float>&gate = e.values[id], &up = e.values[e.count + id],
            &down = e.values[2 * e.count + id];
      for (int64_t o = 0; o < width; ++o) {
        double g = 0, u = 0;
        for (int64_t i = 0; i < d; ++i) {
          g += double(gate[o * d + i]) * x[t * d + i];
          u += double(up[o * d + i]) * x[t * d + i];
        }
        act[o] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int64_t o = 0; o < d; ++o) {
        double y = 0;
        for (int64_t i = 0; i < width; ++i) y += double(down[o * width + i]) * act[i];
        h[t * d + o] += weights[t * k + j] * y;
      }
    }
  }
  return h;
}

// A routing of `rows` tokens over k = 3 choices: choice 0 is expert 1 for `hot` tokens, the even
// ones first (then expert 3 + t % 3), choice 1 is expert 2 for the last `warm` tokens (then
// 6 + t % 2), choice 2 the "shared" expert 0 for every token. Expert counts: 0: rows, 1: hot, 2:
// warm, the rest a few each; experts 0 and 2 have consecutive tokens, 1 (hot < rows) does not.
void Route(int64_t rows, int64_t hot, int64_t warm, std::vector<int32_t>& ids,
           std::vector<float>& weights, std::mt19937& rng) {
  std::uniform_real_distribution<float> wd(0.1f, 1.5f);
  ids.clear();
  weights.clear();
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t rank = t % 2 == 0 ? t / 2 : (rows + 1) / 2 + t / 2;  // evens, then odds
    ids.push_back(rank < hot ? 1 : static_cast<int32_t>(3 + t % 3));
    ids.push_back(t >= rows - warm ? 2 : static_cast<int32_t>(6 + t % 2));
    ids.push_back(0);
    for (int j = 0; j < 2; ++j) weights.push_back(wd(rng));
    weights.push_back(1.0f);
  }
}

struct Case {
  int64_t hidden, width;
  std::vector<int64_t> offsets;  // byte offsets of the matrices from 64, cycled
};

class OptMoeAmxTest : public ::testing::TestWithParam<bool> {};

TEST_P(OptMoeAmxTest, BatchesWithExpertsOfEveryRowCountMatchTheOracle) {
  const bool amx = GetParam();
  if (amx && !cpu::AmxBf16Usable()) GTEST_SKIP() << "no AMX-BF16 on this machine or build";
  if (!CpuIsaSupported(CpuIsa::kAvx512)) GTEST_SKIP() << "no AVX-512";
  auto made = MakeCpuOptimizedBackend(CpuIsa::kAvx512);
  ASSERT_TRUE(made.ok()) << made.status();
  const std::unique_ptr<Backend> opt = *std::move(made);
  std::mt19937 rng(20261129);
  const std::vector<Case> cases = {
      {1024, 128, {0, 8, 48, 56, 2, 62, 30}},  // the small model's experts; leads 0-31
      {256, 48, {56, 0, 8}},                   // down too narrow for the tiles
      {160, 200, {48, 8}},                     // gate/up: 12 groups of 16 and a tail of 8
      {200, 160, {8, 8, 24}},                  // gate/up not whole chunks; down's tail of 8
      {416, 256, {0, 0}},                      // every weight at a 64-byte boundary
  };
  const int64_t count = 8, k = 3;
  for (const Case& c : cases) {
    const PlacedExperts e = MakePlacedExperts(rng, c.hidden, c.width, count, c.offsets);
    // rows, then how many take experts 1 and 2: 5-15-row experts beside 1-4 and 16+ ones.
    for (const auto& [rows, hot, warm] : std::vector<std::array<int64_t, 3>>{
             {8, 5, 2}, {12, 9, 15}, {15, 15, 4}, {21, 16, 7}, {4, 4, 1}}) {
      SCOPED_TRACE("hidden " + std::to_string(c.hidden) + " width " + std::to_string(c.width) +
                   " rows " + std::to_string(rows) + (amx ? " amx" : " register tiles"));
      std::vector<int32_t> ids;
      std::vector<float> weights;
      Route(rows, hot, std::min(warm, rows), ids, weights, rng);
      const std::vector<float> x = RandomFloats(rng, rows * c.hidden);
      const std::vector<float> h0 = RandomFloats(rng, rows * c.hidden);
      std::vector<float> h = h0;
      const bool was = cpu::SetAmxAllowed(amx);
      const absl::Status s = opt->MoeExperts({.x = x.data(),
                                              .rows = rows,
                                              .hidden = c.hidden,
                                              .width = c.width,
                                              .num_experts = count,
                                              .top_k = k,
                                              .expert_ids = ids.data(),
                                              .expert_weights = weights.data(),
                                              .h = h.data(),
                                              .expert_views = e.views.data()});
      cpu::SetAmxAllowed(was);
      ASSERT_TRUE(s.ok()) << s;
      const std::vector<double> want = Oracle(e, x, h0, ids, weights, rows, k);
      double diff = 0, mag = 0;
      for (size_t i = 0; i < h.size(); ++i) {
        diff = std::max(diff, std::fabs(h[i] - want[i]));
        mag = std::max(mag, std::fabs(want[i] - h0[i]));
      }
      EXPECT_LE(diff / mag, kBound);
    }
  }
}

// The AMX path runs where it should: on and off give (slightly) different sums for a batch whose
// shared expert has 8 rows, and the same sums where no expert has 5-15 rows.
TEST(OptMoeAmxPathTest, TakesTheTilesOnlyForExpertsOfFiveToFifteenRows) {
  if (!cpu::AmxBf16Usable() || !CpuIsaSupported(CpuIsa::kAvx512)) {
    GTEST_SKIP() << "no AMX-BF16 on this machine or build";
  }
  auto made = MakeCpuOptimizedBackend(CpuIsa::kAvx512);
  ASSERT_TRUE(made.ok()) << made.status();
  const std::unique_ptr<Backend> opt = *std::move(made);
  std::mt19937 rng(7);
  const int64_t count = 8, k = 3, d = 1024, width = 128;
  const PlacedExperts e = MakePlacedExperts(rng, d, width, count, {8, 48, 56});
  for (const auto& [rows, hot, warm, tiles] :
       std::vector<std::array<int64_t, 4>>{{8, 2, 2, 1}, {4, 4, 4, 0}, {3, 3, 1, 0}}) {
    SCOPED_TRACE("rows " + std::to_string(rows));
    std::vector<int32_t> ids;
    std::vector<float> weights;
    Route(rows, hot, warm, ids, weights, rng);
    const std::vector<float> x = RandomFloats(rng, rows * d);
    std::vector<float> on(rows * d, 0.0f), off(rows * d, 0.0f);
    for (bool amx : {true, false}) {
      const bool was = cpu::SetAmxAllowed(amx);
      const absl::Status s = opt->MoeExperts({.x = x.data(),
                                              .rows = rows,
                                              .hidden = d,
                                              .width = width,
                                              .num_experts = count,
                                              .top_k = k,
                                              .expert_ids = ids.data(),
                                              .expert_weights = weights.data(),
                                              .h = (amx ? on : off).data(),
                                              .expert_views = e.views.data()});
      cpu::SetAmxAllowed(was);
      ASSERT_TRUE(s.ok()) << s;
    }
    EXPECT_EQ(on != off, tiles == 1);
    EXPECT_LT(testing::RelativeError(on, off), kBound);
  }
}

INSTANTIATE_TEST_SUITE_P(AmxOnAndOff, OptMoeAmxTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "Amx" : "RegisterTiles");
                         });

}  // namespace
}  // namespace r2

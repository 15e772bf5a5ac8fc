#include "engine/sampling/filtered_distribution.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/sampling_simd.h"

namespace r2::sampling {
namespace {

namespace simd = cpu::sampling_simd;

using ::testing::ElementsAre;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<int32_t> KeptIds(const std::vector<float>& logits, const FilterParams& params) {
  FilteredDistribution distribution;
  distribution.Build(logits, params);
  std::vector<int32_t> ids;
  for (const auto& [id, p] : distribution.KeptProbabilities()) ids.push_back(id);
  return ids;
}

// Logits whose softmax is `probs` (temperature 1).
std::vector<float> LogitsOf(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

TEST(FilteredDistributionTest, TemperatureScalesBeforeSoftmax) {
  const std::vector<float> logits = {0, 1, 2};
  FilteredDistribution distribution;
  distribution.Build(logits, {.temperature = 0.5f});
  const double z = std::exp(-4.0) + std::exp(-2.0) + 1.0;
  const auto kept = distribution.KeptProbabilities();
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_NEAR(kept[0].second, std::exp(-4.0) / z, 1e-7);
  EXPECT_NEAR(kept[1].second, std::exp(-2.0) / z, 1e-7);
  EXPECT_NEAR(kept[2].second, 1.0 / z, 1e-7);
}

TEST(FilteredDistributionTest, TopKKeepsTheKLargest) {
  EXPECT_THAT(KeptIds({1, 3, 2, 0}, {.top_k = 2}), ElementsAre(1, 2));
  EXPECT_THAT(KeptIds({1, 3, 2, 0}, {.top_k = 1}), ElementsAre(1));
  EXPECT_THAT(KeptIds({1, 3, 2, 0}, {.top_k = 4}), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(KeptIds({1, 3, 2, 0}, {.top_k = 0}), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(KeptIds({1, 3, 2, 0}, {.top_k = -1}), ElementsAre(0, 1, 2, 3));
}

TEST(FilteredDistributionTest, TopKKeepsEveryTieAtTheBoundary) {
  // The 2nd largest logit is 2, shared by ids 2 and 3: both stay, so 3 tokens are kept.
  EXPECT_THAT(KeptIds({1, 3, 2, 2, 0}, {.top_k = 2}), ElementsAre(1, 2, 3));
  EXPECT_THAT(KeptIds({3, 1, 3}, {.top_k = 1}), ElementsAre(0, 2));
}

TEST(FilteredDistributionTest, TopKWithLargeKMatchesSorting) {
  constexpr int32_t kVocab = 3000, kK = 1500;  // k above the heap limit: nth_element
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = normal(rng);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  std::vector<int32_t> expected;
  for (int32_t i = 0; i < kVocab; ++i) {
    if (logits[i] >= sorted[kK - 1]) expected.push_back(i);
  }
  EXPECT_EQ(expected.size(), static_cast<size_t>(kK));
  EXPECT_EQ(KeptIds(logits, {.top_k = kK}), expected);
  EXPECT_EQ(KeptIds(logits, {.top_k = 10}).size(), 10u);
}

TEST(FilteredDistributionTest, TopPKeepsTheShortestPrefixReachingP) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  EXPECT_THAT(KeptIds(logits, {.top_p = 0.45f}), ElementsAre(0));
  EXPECT_THAT(KeptIds(logits, {.top_p = 0.75f}), ElementsAre(0, 1));
  EXPECT_THAT(KeptIds(logits, {.top_p = 0.81f}), ElementsAre(0, 1, 2));
  EXPECT_THAT(KeptIds(logits, {.top_p = 0.96f}), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(KeptIds(logits, {.top_p = 1.0f}), ElementsAre(0, 1, 2, 3));
}

TEST(FilteredDistributionTest, TopPKeepsEveryTieOfTheLastKeptToken) {
  // 0.4 alone is short of 0.5; the next weight (0.2) is shared by ids 1, 2, 3: all are kept.
  EXPECT_THAT(KeptIds(LogitsOf({0.2, 0.4, 0.2, 0.2}), {.top_p = 0.5f}), ElementsAre(0, 1, 2, 3));
  // Uniform: everything ties.
  EXPECT_THAT(KeptIds({0, 0, 0, 0, 0}, {.top_p = 0.1f}), ElementsAre(0, 1, 2, 3, 4));
}

TEST(FilteredDistributionTest, MinPKeepsTokensAboveAFractionOfTheBest) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.149, 0.05, 0.001});
  EXPECT_THAT(KeptIds(logits, {.min_p = 0.3f}), ElementsAre(0, 1));  // p >= 0.15
  EXPECT_THAT(KeptIds(logits, {.min_p = 0.2f}), ElementsAre(0, 1, 2));
  EXPECT_THAT(KeptIds(logits, {.min_p = 1.0f}), ElementsAre(0));
  EXPECT_THAT(KeptIds(logits, {.min_p = 0.0f}), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(KeptIds({2, 2, 1}, {.min_p = 1.0f}), ElementsAre(0, 1));  // ties with the best
}

TEST(FilteredDistributionTest, TopPActsOnTheTopKDistribution) {
  const std::vector<float> logits = LogitsOf({0.4, 0.3, 0.2, 0.1});
  EXPECT_THAT(KeptIds(logits, {.top_p = 0.5f}), ElementsAre(0, 1));
  // After top_k = 2 the mass is {4/7, 3/7}: 4/7 alone reaches 0.5.
  EXPECT_THAT(KeptIds(logits, {.top_k = 2, .top_p = 0.5f}), ElementsAre(0));
}

TEST(FilteredDistributionTest, TemperatureChangesTheTopPSet) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  // Sharper at 0.5: p ~ {0.69, 0.25, 0.06, 0.007}; 0.69 alone falls short of 0.7.
  EXPECT_THAT(KeptIds(logits, {.temperature = 0.5f, .top_p = 0.7f}), ElementsAre(0, 1));
  EXPECT_THAT(KeptIds(logits, {.temperature = 0.5f, .top_p = 0.6f}), ElementsAre(0));
}

TEST(FilteredDistributionTest, KeptProbabilitiesAreRenormalized) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.15, 0.05});
  FilteredDistribution distribution;
  distribution.Build(logits, {.top_p = 0.75f});
  const auto kept = distribution.KeptProbabilities();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_NEAR(kept[0].second, 0.625, 1e-6);
  EXPECT_NEAR(kept[1].second, 0.375, 1e-6);
}

// Reference top_p: the same weights, a full sort by (w desc, id asc), cumulative in double, ties
// kept.
std::vector<int32_t> ReferenceTopP(const std::vector<float>& logits, float temperature,
                                   float top_p) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<std::pair<float, int32_t>> order;
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float w = simd::ExpNonPositive((logits[i] - max_logit) / temperature);
    order.emplace_back(w, static_cast<int32_t>(i));
    z += w;
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  double cumulative = 0.0;
  float last = 0.0f;
  for (const auto& [w, id] : order) {
    cumulative += w;
    last = w;
    if (cumulative >= static_cast<double>(top_p) * z) break;
  }
  std::vector<int32_t> kept;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (simd::ExpNonPositive((logits[i] - max_logit) / temperature) >= last) {
      kept.push_back(static_cast<int32_t>(i));
    }
  }
  return kept;
}

// Rows that take each of top_p's paths: few heavy tokens (sorted directly), many tokens near the
// best (histogram), and a heavy tail of tokens below 2^-12 of the best (histogram).
std::vector<float> ShapedRow(int shape, std::mt19937& rng) {
  constexpr int32_t kVocab = 4000;
  std::vector<float> row(kVocab);
  std::normal_distribution<float> normal(0.0f, shape == 1 ? 0.3f : 2.5f);
  for (float& x : row) x = normal(rng);
  if (shape == 2) {
    for (int i = 0; i < 20; ++i) row[rng() % kVocab] += 15.0f + static_cast<float>(i);
  }
  if (shape == 3) {
    std::fill(row.begin(), row.end(), -9.0f);  // each w = e^-9 < 2^-12, together most of Z
    row[17] = 0.0f;
  }
  return row;
}

TEST(FilteredDistributionTest, TopPMatchesAFullSortOnRandomRows) {
  std::mt19937 rng(11);
  for (int shape = 0; shape < 4; ++shape) {
    for (int trial = 0; trial < 2; ++trial) {
      const std::vector<float> logits = ShapedRow(shape, rng);
      for (float top_p : {0.05f, 0.5f, 0.9f, 0.99f}) {
        for (float temperature : {0.3f, 0.7f, 1.5f}) {
          EXPECT_EQ(KeptIds(logits, {.temperature = temperature, .top_p = top_p}),
                    ReferenceTopP(logits, temperature, top_p))
              << "shape " << shape << " top_p " << top_p << " temperature " << temperature;
        }
      }
    }
  }
}

TEST(FilteredDistributionTest, SampleInvertsTheCdfInIdOrder) {
  const std::vector<float> logits = LogitsOf({0.5, 0.3, 0.2});
  FilteredDistribution distribution;
  distribution.Build(logits, {});
  EXPECT_EQ(distribution.Sample(0.0), 0);
  EXPECT_EQ(distribution.Sample(0.49), 0);
  EXPECT_EQ(distribution.Sample(0.51), 1);
  EXPECT_EQ(distribution.Sample(0.79), 1);
  EXPECT_EQ(distribution.Sample(0.81), 2);
  EXPECT_EQ(distribution.Sample(std::nextafter(1.0, 0.0)), 2);
}

TEST(FilteredDistributionTest, SampleNeverReturnsAFilteredToken) {
  const std::vector<float> logits = LogitsOf({0.05, 0.5, 0.3, 0.15});
  FilteredDistribution distribution;
  distribution.Build(logits, {.top_k = 2});
  for (double u = 0.0; u < 1.0; u += 0.01) {
    const int32_t token = distribution.Sample(u);
    EXPECT_TRUE(token == 1 || token == 2) << u;
  }
}

TEST(FilteredDistributionTest, MaskedTokensAreNeverSampled) {
  const std::vector<float> logits = {-kInf, 0.0f, -kInf};
  FilteredDistribution distribution;
  distribution.Build(logits, {});
  EXPECT_EQ(distribution.Sample(0.0), 1);
  EXPECT_EQ(distribution.Sample(0.999), 1);
}

TEST(FilteredDistributionTest, DegenerateRowsFallBackToTheLargestLogit) {
  const std::vector<float> masked = {-kInf, -kInf, -kInf};
  FilteredDistribution distribution;
  distribution.Build(masked, {});
  EXPECT_EQ(distribution.Sample(0.5), 0);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> with_nan = {nan, 1.0f, 1.0f};
  distribution.Build(with_nan, {.top_p = 0.5f});
  EXPECT_EQ(distribution.Sample(0.5), 1);
}

}  // namespace
}  // namespace r2::sampling

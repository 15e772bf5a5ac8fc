#include "engine/sampling/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

std::vector<double> ReferenceLogSoftmax(const std::vector<float>& logits) {
  double max_logit = -INFINITY;
  for (float x : logits) max_logit = std::max<double>(max_logit, x);
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  std::vector<double> out;
  for (float x : logits) out.push_back(static_cast<double>(x) - max_logit - std::log(sum));
  return out;
}

// Ids by logit descending, then id ascending.
std::vector<int32_t> ReferenceOrder(const std::vector<float>& logits) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  return ids;
}

TEST(LogprobsTest, MatchLogSoftmaxAndRankOnARandomRow) {
  constexpr int32_t kVocab = 5000;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = normal(rng);
  const std::vector<double> expected = ReferenceLogSoftmax(logits);
  const std::vector<int32_t> order = ReferenceOrder(logits);

  for (int32_t position : {0, 1, 19, 20, 777, kVocab - 1}) {
    const int32_t token = order[position];
    Logprobs out;
    ComputeLogprobs(logits, token, kMaxTopLogprobs, &out);
    EXPECT_NEAR(out.logprob, expected[token], 1e-5);
    EXPECT_EQ(out.rank, position + 1);
    ASSERT_EQ(out.num_top, kMaxTopLogprobs);
    for (int32_t i = 0; i < kMaxTopLogprobs; ++i) {
      EXPECT_EQ(out.top[i].token, order[i]) << i;
      EXPECT_NEAR(out.top[i].logprob, expected[order[i]], 1e-5) << i;
      if (i > 0) {
        EXPECT_GE(out.top[i - 1].logprob, out.top[i].logprob);
      }
    }
  }
}

TEST(LogprobsTest, TiesGoToTheLowerId) {
  const std::vector<float> logits = {1, 3, 3, 2, 3};
  Logprobs out;
  ComputeLogprobs(logits, 2, 5, &out);
  EXPECT_EQ(out.rank, 2);
  ASSERT_EQ(out.num_top, 5);
  const int32_t expected_order[] = {1, 2, 4, 3, 0};
  for (int32_t i = 0; i < 5; ++i) EXPECT_EQ(out.top[i].token, expected_order[i]);
  EXPECT_FLOAT_EQ(out.top[0].logprob, out.top[1].logprob);
  ComputeLogprobs(logits, 4, 0, &out);
  EXPECT_EQ(out.rank, 3);
  EXPECT_EQ(out.num_top, 0);
  EXPECT_TRUE(out.top_logprobs().empty());
}

TEST(LogprobsTest, FewerTokensThanRequested) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};
  Logprobs out;
  ComputeLogprobs(logits, 0, 20, &out);
  EXPECT_EQ(out.num_top, 2);
  EXPECT_NEAR(out.logprob, std::log(0.25), 1e-6);
  EXPECT_NEAR(out.top[0].logprob, std::log(0.75), 1e-6);
  EXPECT_EQ(out.rank, 2);
}

TEST(LogprobsTest, ExtremeLogitsStayFinite) {
  const std::vector<float> logits = {1000.0f, -1000.0f, 999.0f};
  Logprobs out;
  ComputeLogprobs(logits, 1, 3, &out);
  EXPECT_NEAR(out.top[0].logprob, -std::log1p(std::exp(-1.0)), 1e-5);
  EXPECT_NEAR(out.logprob, -2000.0 - std::log1p(std::exp(-1.0)), 1e-3);
  EXPECT_EQ(out.rank, 3);
}

}  // namespace
}  // namespace r2::sampling

// The reference MoE router against a hand-worked case and a naive repeated-argmax selection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

// Naive router for one token: repeated argmax over groups, then over allowed experts.
std::map<int32_t, double> NaiveRoute(const MoeRouteParams& p, const float* logits) {
  const int64_t e = p.num_experts, gs = e / p.n_group;
  std::vector<double> s(e), c(e);
  double denom = 0, max = -1e30;
  for (int64_t i = 0; i < e; ++i) max = std::max(max, double(logits[i]));
  for (int64_t i = 0; i < e; ++i) denom += std::exp(logits[i] - max);
  for (int64_t i = 0; i < e; ++i) {
    s[i] = p.scoring == MoeScoring::kSigmoid ? 1.0 / (1.0 + std::exp(-double(logits[i])))
                                             : std::exp(logits[i] - max) / denom;
    c[i] = s[i] + (p.bias ? p.bias[i] : 0.0);
  }
  std::vector<double> group(p.n_group);
  for (int64_t g = 0; g < p.n_group; ++g) {
    double first = -1e30, second = -1e30;
    for (int64_t i = g * gs; i < (g + 1) * gs; ++i) {
      if (c[i] > first) {
        second = first;
        first = c[i];
      } else if (c[i] > second) {
        second = c[i];
      }
    }
    group[g] = p.group_score == MoeGroupScore::kMax ? first : first + second;
  }
  std::vector<bool> allowed(e, false);
  for (int64_t k = 0; k < p.topk_group; ++k) {
    const int64_t g = std::max_element(group.begin(), group.end()) - group.begin();
    group[g] = -1e300;
    for (int64_t i = g * gs; i < (g + 1) * gs; ++i) allowed[i] = true;
  }
  std::map<int32_t, double> chosen;
  for (int64_t k = 0; k < p.top_k; ++k) {
    int64_t best = -1;
    for (int64_t i = 0; i < e; ++i) {
      if (allowed[i] && !chosen.count(i) && (best < 0 || c[i] > c[best])) best = i;
    }
    chosen[best] = s[best];
  }
  double sum = 0;
  for (auto& [id, w] : chosen) sum += w;
  for (auto& [id, w] : chosen) w = (p.norm_topk_prob ? w / sum : w) * p.scaling_factor;
  return chosen;
}

TEST(MoeRouteTest, HandWorkedGroupLimitedSigmoid) {
  // 8 experts in 4 groups of 2; keep 2 groups; pick 2 experts. Logits chosen so that the best
  // single expert (id 6) sits in a group whose top-2 sum loses.
  const std::vector<float> logits = {1.0f, 1.0f, -3.0f, -3.0f, 0.5f, 0.6f, 3.0f, -5.0f};
  std::vector<int32_t> ids(2);
  std::vector<float> weights(2);
  auto backend = MakeCpuReferenceBackend();
  ASSERT_TRUE(backend
                  ->MoeRoute({.logits = logits.data(),
                              .rows = 1,
                              .num_experts = 8,
                              .n_group = 4,
                              .topk_group = 2,
                              .top_k = 2,
                              .norm_topk_prob = true,
                              .scaling_factor = 2.5f,
                              .expert_ids = ids.data(),
                              .expert_weights = weights.data()})
                  .ok());
  // Group sums: g0 = 2*sig(1) = 1.462, g1 = 0.095, g2 = sig(.5)+sig(.6) = 1.268,
  // g3 = sig(3)+sig(-5) = 0.959. Kept: g0, g2. Best experts there: 0 and 1 (tie -> lower first).
  EXPECT_EQ(ids, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(weights[0], 1.25f, 1e-6);
  EXPECT_NEAR(weights[1], 1.25f, 1e-6);
}

struct RouteCase {
  MoeScoring scoring;
  MoeGroupScore group_score;
  int64_t experts, n_group, topk_group, top_k;
  bool norm, bias;
};

TEST(MoeRouteTest, MatchesNaiveSelectionOnRandomLogits) {
  std::mt19937 rng(7);
  auto backend = MakeCpuReferenceBackend();
  for (RouteCase rc :
       {RouteCase{MoeScoring::kSigmoid, MoeGroupScore::kTop2Sum, 16, 2, 1, 4, true, true},
        RouteCase{MoeScoring::kSigmoid, MoeGroupScore::kTop2Sum, 256, 8, 4, 8, true, true},
        RouteCase{MoeScoring::kSoftmax, MoeGroupScore::kMax, 24, 3, 2, 5, false, false},
        RouteCase{MoeScoring::kSoftmax, MoeGroupScore::kMax, 9, 1, 1, 3, true, false}}) {
    const int64_t rows = 13;
    std::vector<float> logits = testing::RandomFloats(rng, rows * rc.experts, 2.0f);
    std::vector<float> bias = testing::RandomFloats(rng, rc.experts, 0.3f);
    std::vector<int32_t> ids(rows * rc.top_k);
    std::vector<float> weights(rows * rc.top_k);
    MoeRouteParams p{.logits = logits.data(),
                     .rows = rows,
                     .num_experts = rc.experts,
                     .bias = rc.bias ? bias.data() : nullptr,
                     .scoring = rc.scoring,
                     .group_score = rc.group_score,
                     .n_group = rc.n_group,
                     .topk_group = rc.topk_group,
                     .top_k = rc.top_k,
                     .norm_topk_prob = rc.norm,
                     .scaling_factor = 2.5f,
                     .expert_ids = ids.data(),
                     .expert_weights = weights.data()};
    ASSERT_TRUE(backend->MoeRoute(p).ok());
    for (int64_t t = 0; t < rows; ++t) {
      std::map<int32_t, double> want = NaiveRoute(p, logits.data() + t * rc.experts);
      std::map<int32_t, double> got;
      for (int64_t k = 0; k < rc.top_k; ++k) {
        got[ids[t * rc.top_k + k]] = weights[t * rc.top_k + k];
      }
      ASSERT_EQ(got.size(), want.size()) << "row " << t;
      for (auto& [id, w] : want) {
        ASSERT_TRUE(got.count(id)) << "row " << t << " misses expert " << id;
        EXPECT_NEAR(got[id], w, 1e-5 * std::max(1.0, std::fabs(w)));
      }
    }
  }
}

TEST(MoeRouteTest, RejectsInconsistentGrouping) {
  auto backend = MakeCpuReferenceBackend();
  std::vector<float> logits(10);
  std::vector<int32_t> ids(4);
  std::vector<float> w(4);
  MoeRouteParams p{.logits = logits.data(),
                   .rows = 1,
                   .num_experts = 10,
                   .n_group = 3,
                   .topk_group = 1,
                   .top_k = 2,
                   .expert_ids = ids.data(),
                   .expert_weights = w.data()};
  EXPECT_EQ(backend->MoeRoute(p).code(), absl::StatusCode::kInvalidArgument);  // 3 !| 10
  p.n_group = 5;
  p.top_k = 3;  // only 2 experts in one kept group
  EXPECT_EQ(backend->MoeRoute(p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace r2

// Reference MoE router: scoring, group-limited top-k selection, weight normalisation.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

absl::Status CheckRoute(const MoeRouteParams& p) {
  if (p.rows < 0 || p.num_experts <= 0) return Invalid("MoeRoute", "bad rows or num_experts");
  if (p.n_group <= 0 || p.num_experts % p.n_group != 0) {
    return Invalid("MoeRoute", "n_group must divide num_experts");
  }
  if (p.topk_group < 1 || p.topk_group > p.n_group) {
    return Invalid("MoeRoute", "topk_group must be in [1, n_group]");
  }
  const int64_t group_size = p.num_experts / p.n_group;
  if (p.n_group > 1 && p.group_score == MoeGroupScore::kTop2Sum && group_size < 2) {
    return Invalid("MoeRoute", "top-2 group scores need at least 2 experts per group");
  }
  if (p.top_k < 1 || p.top_k > p.topk_group * group_size) {
    return Invalid("MoeRoute", "top_k must be in [1, experts in the kept groups]");
  }
  if (p.rows > 0 &&
      (p.logits == nullptr || p.expert_ids == nullptr || p.expert_weights == nullptr)) {
    return Invalid("MoeRoute", "null logits or outputs");
  }
  return absl::OkStatus();
}

void Score(const MoeRouteParams& p, const float* logits, float* s) {
  const int64_t e = p.num_experts;
  if (p.scoring == MoeScoring::kSigmoid) {
    for (int64_t i = 0; i < e; ++i) s[i] = 1.0f / (1.0f + std::exp(-logits[i]));
    return;
  }
  const float max = *std::max_element(logits, logits + e);
  float sum = 0.0f;
  for (int64_t i = 0; i < e; ++i) sum += s[i] = std::exp(logits[i] - max);
  for (int64_t i = 0; i < e; ++i) s[i] /= sum;
}

// Indices of the k largest values, largest first, lower index first on ties.
std::vector<int32_t> TopK(const std::vector<float>& v, int64_t k) {
  std::vector<int32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  idx.resize(k);
  return idx;
}

float GroupScore(MoeGroupScore kind, const float* c, int64_t n) {
  std::vector<float> g(c, c + n);
  std::sort(g.begin(), g.end(), std::greater<float>());
  return kind == MoeGroupScore::kMax ? g[0] : g[0] + g[1];
}

// Masks experts outside the topk_group best groups to -inf.
void MaskGroups(const MoeRouteParams& p, std::vector<float>& c) {
  if (p.topk_group == p.n_group) return;
  const int64_t group_size = p.num_experts / p.n_group;
  std::vector<float> group_scores(p.n_group);
  for (int64_t g = 0; g < p.n_group; ++g) {
    group_scores[g] = GroupScore(p.group_score, c.data() + g * group_size, group_size);
  }
  std::vector<bool> keep(p.n_group, false);
  for (int32_t g : TopK(group_scores, p.topk_group)) keep[g] = true;
  for (int64_t g = 0; g < p.n_group; ++g) {
    if (keep[g]) continue;
    std::fill(c.begin() + g * group_size, c.begin() + (g + 1) * group_size,
              -std::numeric_limits<float>::infinity());
  }
}

}  // namespace

absl::Status MoeRoute(const MoeRouteParams& p) {
  if (absl::Status s = CheckRoute(p); !s.ok()) return s;
  const int64_t ls = Stride(p.logits_stride, p.num_experts);
#pragma omp parallel for if (p.rows * p.num_experts * 16 >= kParallelWork)
  for (int64_t t = 0; t < p.rows; ++t) {
    std::vector<float> s(p.num_experts), c(p.num_experts);
    Score(p, p.logits + t * ls, s.data());
    for (int64_t e = 0; e < p.num_experts; ++e) c[e] = s[e] + (p.bias ? p.bias[e] : 0.0f);
    MaskGroups(p, c);
    const std::vector<int32_t> ids = TopK(c, p.top_k);
    float sum = 0.0f;
    for (int32_t id : ids) sum += s[id];
    const float norm = p.norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
    for (int64_t k = 0; k < p.top_k; ++k) {
      p.expert_ids[t * p.top_k + k] = ids[k];
      p.expert_weights[t * p.top_k + k] = s[ids[k]] * norm * p.scaling_factor;
    }
  }
  return absl::OkStatus();
}

}  // namespace r2::cpu

#pragma once
// FilteredDistribution: the probability distribution one token is drawn from, built from a row of
// processed logits (after LogitsProcessor) by temperature, top_k, top_p and min_p, in that order
// (vLLM's), and the draw itself.
//
// Definitions (l = processed logits, all ids in [0, V)):
//   candidates  top_k off (0, -1 or >= V): every id. Else every id whose logit is >= the k-th
//               largest logit (counted with multiplicity), so ties at the boundary are all kept
//               and the set can exceed k (as vLLM and Hugging Face do).
//   weights     m = max candidate logit; w[i] = float(exp(float((l[i] - m) / temperature)))
//               (glibc expf). The best token has w = 1 exactly. Z = sum of w in id order, in
//               double. Probability p[i] = w[i] / Z.
//   top_p       order the candidates by (w descending, id ascending) and keep the shortest
//               prefix whose cumulative weight reaches top_p * Z (double accumulation in that
//               order); the kept set is then every candidate with w >= the last kept weight, so
//               tokens of equal weight are never separated. top_p = 1 keeps all.
//   min_p       keep w >= min_p (that is p >= min_p * p_max, since the best w is 1).
//   draw        kept = candidates passing both thresholds; Zk = sum of kept w in id order
//               (double). With u uniform in [0, 1), the token is the first kept id, in id order,
//               whose running sum (double) exceeds u * Zk: inverse-CDF sampling over token ids,
//               exact up to double rounding (the last kept id if rounding leaves none).
//
// Every rule above acts on a threshold, so equal weights are treated alike and results do not
// depend on how sorts break ties. Cost: O(V) per row (a k-heap or nth_element for top_k, a
// 32-buckets-per-octave histogram of weights for top_p, then a sort of the one bucket that
// crosses top_p * Z). Degenerate rows (every logit -inf, or NaN) fall back to the lowest id with
// the largest logit. Scratch is reused across rows; one instance per thread.
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"

namespace r2::sampling {

struct FilterParams {
  float temperature = 1.0f;  // > 0
  int32_t top_k = 0;         // <= 0 or >= V: off
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
};

class FilteredDistribution {
 public:
  // Builds the distribution for `logits`, which must outlive the calls that follow.
  void Build(absl::Span<const float> logits, const FilterParams& params);

  // The token drawn for uniform `u` in [0, 1).
  int32_t Sample(double u) const;

  // Every kept token with its probability, in id order (for tests and diagnostics).
  std::vector<std::pair<int32_t, double>> KeptProbabilities() const;

 private:
  int32_t id_at(size_t i) const { return dense_ ? static_cast<int32_t>(i) : ids_[i]; }
  size_t size() const { return dense_ ? logits_.size() : ids_.size(); }
  bool kept(size_t i) const { return weights_[i] > 0.0f && weights_[i] >= threshold_; }
  void SelectTopK(int32_t k);
  float KthLargest(int32_t k);
  float MaxCandidateLogit();  // also sets fallback_token_
  double ComputeWeights(float max_logit, float temperature, bool fill_buckets);
  float TopPThreshold(double z, float top_p);

  absl::Span<const float> logits_;
  bool dense_ = true;                                // candidates are all ids (else ids_)
  bool degenerate_ = false;                          // no finite positive total weight
  int32_t fallback_token_ = 0;                       // the token drawn when degenerate
  float threshold_ = 0.0f;                           // kept iff w >= threshold_ (and w > 0)
  double kept_weight_ = 0.0;                         // Zk
  std::vector<int32_t> ids_;                         // candidate ids when !dense_
  std::vector<float> weights_;                       // w per candidate
  std::vector<float> heap_;                          // top_k selection scratch
  std::vector<double> bucket_mass_;                  // top_p histogram
  std::vector<std::pair<float, int32_t>> crossing_;  // the bucket that crosses top_p * Z
};

}  // namespace r2::sampling

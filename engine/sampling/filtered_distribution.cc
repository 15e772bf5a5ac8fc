#include "engine/sampling/filtered_distribution.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <functional>
#include <limits>

namespace r2::sampling {
namespace {

// top_p histogram: weights are in [0, 1]; a positive float's bit pattern grows with its value,
// so (bits(1) - bits(w)) >> 18 indexes buckets of 32 per octave (5 mantissa bits), monotone
// (non-increasing weights give non-decreasing indices). Weights under 2^-64 share the last one.
constexpr uint32_t kOneBits = 0x3F800000u;
constexpr int kMantissaShift = 18;
constexpr uint32_t kNumOctaves = 64;
constexpr uint32_t kNumBuckets = (kNumOctaves << (23 - kMantissaShift)) + 1;

// Above this k, top_k selects with nth_element on a copy instead of a k-element heap.
constexpr int32_t kMaxHeapK = 1024;

uint32_t BucketOf(float w) {
  const uint32_t bits = std::bit_cast<uint32_t>(w);
  if (bits >= kOneBits) return 0;
  return std::min((kOneBits - bits) >> kMantissaShift, kNumBuckets - 1);
}

// Orders (weight, id) pairs by weight descending, then id ascending.
bool HeavierFirst(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

}  // namespace

void FilteredDistribution::Build(absl::Span<const float> logits, const FilterParams& params) {
  assert(params.temperature > 0.0f);
  logits_ = logits;
  dense_ = true;
  degenerate_ = false;
  threshold_ = 0.0f;
  const auto vocab = static_cast<int64_t>(logits.size());
  if (params.top_k > 0 && params.top_k < vocab) SelectTopK(params.top_k);

  const float max_logit = MaxCandidateLogit();
  const bool top_p_on = params.top_p < 1.0f;
  const double z = std::isfinite(max_logit)
                       ? ComputeWeights(max_logit, params.temperature, top_p_on)
                       : std::numeric_limits<double>::quiet_NaN();
  if (!(z > 0.0) || !std::isfinite(z)) {
    degenerate_ = true;
    return;
  }
  const float top_p_threshold = top_p_on ? TopPThreshold(z, params.top_p) : 0.0f;
  threshold_ = std::max(top_p_threshold, params.min_p);
  if (threshold_ == 0.0f) {
    kept_weight_ = z;  // the same sum in the same order
    return;
  }
  kept_weight_ = 0.0;
  for (size_t i = 0; i < size(); ++i) {
    if (kept(i)) kept_weight_ += weights_[i];
  }
}

float FilteredDistribution::KthLargest(int32_t k) {
  if (k > kMaxHeapK) {
    heap_.assign(logits_.begin(), logits_.end());
    auto kth = heap_.begin() + (k - 1);
    std::nth_element(heap_.begin(), kth, heap_.end(), std::greater<float>());
    return *kth;
  }
  // A min-heap of the k largest so far: its top is the k-th largest.
  heap_.assign(logits_.begin(), logits_.begin() + k);
  std::make_heap(heap_.begin(), heap_.end(), std::greater<float>());
  for (size_t i = k; i < logits_.size(); ++i) {
    if (logits_[i] > heap_.front()) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
      heap_.back() = logits_[i];
      std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
    }
  }
  return heap_.front();
}

void FilteredDistribution::SelectTopK(int32_t k) {
  const float kth = KthLargest(k);
  ids_.clear();
  for (size_t i = 0; i < logits_.size(); ++i) {
    if (logits_[i] >= kth) ids_.push_back(static_cast<int32_t>(i));
  }
  dense_ = false;
  if (ids_.empty()) ids_.push_back(0);  // NaN logits only; Build() then finds it degenerate
}

float FilteredDistribution::MaxCandidateLogit() {
  // The degenerate fallback is the lowest id with the largest logit (NaN never compares larger).
  float best = -std::numeric_limits<float>::infinity();
  size_t best_index = 0;
  for (size_t i = 0; i < size(); ++i) {
    const float value = logits_[id_at(i)];
    if (value > best) {
      best = value;
      best_index = i;
    }
  }
  fallback_token_ = id_at(best_index);
  return best;
}

double FilteredDistribution::ComputeWeights(float max_logit, float temperature, bool fill_buckets) {
  const size_t n = size();
  weights_.resize(n);
  double z = 0.0;
  if (!fill_buckets) {
    for (size_t i = 0; i < n; ++i) {
      const float w = std::exp((logits_[id_at(i)] - max_logit) / temperature);
      weights_[i] = w;
      z += w;
    }
    return z;
  }
  bucket_mass_.assign(kNumBuckets, 0.0);
  for (size_t i = 0; i < n; ++i) {
    const float w = std::exp((logits_[id_at(i)] - max_logit) / temperature);
    weights_[i] = w;
    z += w;
    bucket_mass_[BucketOf(w)] += w;
  }
  return z;
}

float FilteredDistribution::TopPThreshold(double z, float top_p) {
  const double target = static_cast<double>(top_p) * z;
  double cumulative = 0.0;
  uint32_t bucket = 0;
  while (bucket < kNumBuckets && cumulative + bucket_mass_[bucket] < target) {
    cumulative += bucket_mass_[bucket++];
  }
  if (bucket == kNumBuckets) return 0.0f;  // rounding: the whole mass is below the target
  crossing_.clear();
  for (size_t i = 0; i < size(); ++i) {
    const float w = weights_[i];
    if (w > 0.0f && BucketOf(w) == bucket) crossing_.emplace_back(w, id_at(i));
  }
  std::sort(crossing_.begin(), crossing_.end(), HeavierFirst);
  for (const auto& [w, id] : crossing_) {
    cumulative += w;
    if (cumulative >= target) return w;
  }
  return crossing_.empty() ? 0.0f : crossing_.back().first;
}

int32_t FilteredDistribution::Sample(double u) const {
  if (degenerate_) return fallback_token_;
  const double target = u * kept_weight_;
  double cumulative = 0.0;
  size_t last = 0;
  for (size_t i = 0; i < size(); ++i) {
    if (!kept(i)) continue;
    cumulative += weights_[i];
    if (cumulative > target) return id_at(i);
    last = i;
  }
  return id_at(last);
}

std::vector<std::pair<int32_t, double>> FilteredDistribution::KeptProbabilities() const {
  std::vector<std::pair<int32_t, double>> kept_tokens;
  if (degenerate_) {
    kept_tokens.emplace_back(fallback_token_, 1.0);
    return kept_tokens;
  }
  for (size_t i = 0; i < size(); ++i) {
    if (kept(i)) kept_tokens.emplace_back(id_at(i), weights_[i] / kept_weight_);
  }
  return kept_tokens;
}

}  // namespace r2::sampling

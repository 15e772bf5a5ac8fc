// Host sampling (host_sampling.h): the logit edits, the greedy choice, the filtered distribution
// and the raw logprobs, on the vector math of sampling_simd.h.
#include "kernels/cpu/host_sampling.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <functional>
#include <limits>

#include "kernels/cpu/sampling_simd.h"

namespace r2::cpu {
namespace {
namespace simd = sampling_simd;
using simd::F4;
using simd::I4;
using simd::kBlock;
using simd::kLanes;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// top_p's first try: the tokens at least 2^-12 as likely as the best, when few enough to sort.
constexpr float kTopPGuess = 0x1.0p-12f;
constexpr int64_t kMaxSortedCandidates = 2048;

// top_p histogram: weights are in [0, 1]; a positive float's bit pattern grows with its value,
// so (bits(1) - bits(w)) >> 18 indexes buckets of 32 per octave (5 mantissa bits), monotone
// (non-increasing weights give non-decreasing indices). Weights under 2^-64 share the last one.
constexpr uint32_t kOneBits = 0x3F800000u;
constexpr int kMantissaShift = 18;
constexpr uint32_t kNumOctaves = 64;
constexpr uint32_t kNumBuckets = (kNumOctaves << (23 - kMantissaShift)) + 1;

// Above this k, top_k selects with nth_element on a copy instead of a k-element heap.
constexpr int32_t kMaxHeapK = 1024;

// BucketOf for four weights in [0, 1] (lanes with w <= 0 give meaningless buckets; callers mask
// them): bits(w) >= bits(1) gives 0, else min((bits(1) - bits(w)) >> 18, last).
I4 BucketsOf(F4 w, I4 one_bits, I4 last_bucket, I4 zero) {
  const I4 below_one = one_bits - std::bit_cast<I4>(w);
  const I4 positive = below_one > zero;
  const I4 bucket = (positive ? below_one : zero) >> kMantissaShift;
  return bucket < last_bucket ? bucket : last_bucket;
}

// Orders (weight, id) pairs by weight descending, then id ascending.
bool HeavierFirst(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

// Values [i, i + 4) of `values`, padded with -inf past the end.
F4 LoadLogits(absl::Span<const float> values, size_t i) {
  if (i + kLanes <= values.size()) return simd::Load(values.data() + i);
  const size_t n = i < values.size() ? values.size() - i : 0;
  return simd::LoadPartial(values.data() + i, n, kNegInf);
}

// True when (value_a, id_a) comes before (value_b, id_b): larger logit first, then lower id.
bool RanksBefore(float value_a, int32_t id_a, float value_b, int32_t id_b) {
  return value_a > value_b || (value_a == value_b && id_a < id_b);
}

// The best `capacity` (id, raw logit) pairs seen so far, sorted; ids arrive in increasing order.
class TopList {
 public:
  TopList(SampleTopLogprob* entries, int32_t capacity) : entries_(entries), capacity_(capacity) {}

  // The smallest logit that can still enter (strictly above it, since later ids lose ties).
  bool full() const { return count_ == capacity_; }
  float worst() const { return entries_[capacity_ - 1].logprob; }
  int32_t count() const { return count_; }

  void Offer(int32_t id, float value) {
    if (full()) {
      if (capacity_ == 0 || !(value > worst())) return;
      --count_;
    }
    int32_t pos = count_;
    while (pos > 0 && RanksBefore(value, id, entries_[pos - 1].logprob, entries_[pos - 1].token)) {
      entries_[pos] = entries_[pos - 1];
      --pos;
    }
    entries_[pos] = {id, value};
    ++count_;
  }

 private:
  SampleTopLogprob* entries_;
  int32_t capacity_;
  int32_t count_ = 0;
};

// Pass 1: the rank of `token` and the top list, skipping blocks of 4 that cannot enter it.
int32_t RankAndTop(absl::Span<const float> raw, int32_t token, TopList* top) {
  const float token_logit = raw[token];
  const F4 token4 = simd::Broadcast(token_logit);
  const I4 token_id4 = simd::BroadcastInt(token);
  I4 ahead4 = simd::BroadcastInt(0);  // minus the tokens ranked before `token`, per lane
  size_t i = 0;
  for (; i + kLanes <= raw.size(); i += kLanes) {
    const F4 v = simd::Load(raw.data() + i);
    const auto base = static_cast<int32_t>(i);
    const I4 ids = simd::BroadcastInt(base) + I4{0, 1, 2, 3};
    ahead4 += (v > token4) | ((v == token4) & (ids < token_id4));
    if (top->full() && (top->count() == 0 || !simd::AnyLane(v > simd::Broadcast(top->worst())))) {
      continue;
    }
    for (size_t lane = 0; lane < kLanes; ++lane)
      top->Offer(base + static_cast<int32_t>(lane), v[lane]);
  }
  int32_t ahead = -simd::SumLanes(ahead4);
  for (; i < raw.size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    ahead += RanksBefore(raw[i], id, token_logit, token) ? 1 : 0;
    top->Offer(id, raw[i]);
  }
  return ahead + 1;
}

// Pass 2: sum of exp(l - max) in double, as BlockSums of 8.
double SumExp(absl::Span<const float> raw, float max_logit) {
  const F4 max4 = simd::Broadcast(max_logit);
  double sum = 0.0;
  for (size_t i = 0; i < raw.size(); i += kBlock) {
    sum += simd::BlockSum(simd::ExpNonPositive(LoadLogits(raw, i) - max4),
                          simd::ExpNonPositive(LoadLogits(raw, i + kLanes) - max4));
  }
  return sum;
}

}  // namespace

void LogitEdits::Set(absl::Span<float> row, int32_t token, float value) {
  assert(token >= 0 && static_cast<size_t>(token) < row.size());
  undo_.emplace_back(token, row[token]);
  row[token] = value;
}

void LogitEdits::AddBias(absl::Span<float> row, int32_t token, float bias) {
  Set(row, token, row[token] + bias);
}

void LogitEdits::Ban(absl::Span<float> row, int32_t token) { Set(row, token, kNegInf); }

void LogitEdits::Penalize(absl::Span<float> row, int32_t token, int32_t output_count,
                          float repetition, float frequency, float presence) {
  float value = row[token];
  if (repetition != 1.0f) value = value > 0.0f ? value / repetition : value * repetition;
  if (output_count > 0) value -= static_cast<float>(output_count) * frequency + presence;
  if (value != row[token]) Set(row, token, value);
}

void LogitEdits::Restore(absl::Span<float> row) {
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) row[it->first] = it->second;
  undo_.clear();
}

int32_t GreedyToken(absl::Span<const float> row) {
  size_t index = simd::ArgMax(row.data(), row.size());
  if (index >= row.size()) {  // no value above -inf: the first -inf, else 0 (all NaN)
    index = simd::FirstIndexOf(row.data(), row.size(), kNegInf);
  }
  return index < row.size() ? static_cast<int32_t>(index) : 0;
}

void FilteredDistribution::Build(absl::Span<const float> logits, const FilterParams& params) {
  assert(params.temperature > 0.0f);
  dense_ = true;
  degenerate_ = false;
  threshold_ = 0.0f;
  const auto vocab = static_cast<int64_t>(logits.size());
  if (params.top_k > 0 && params.top_k < vocab) SelectTopK(logits, params.top_k);
  const absl::Span<const float> values = dense_ ? logits : absl::MakeConstSpan(values_);
  size_ = values.size();

  const float max_logit = simd::Max(values.data(), values.size());
  WeightSums sums;
  const bool top_p_on = params.top_p < 1.0f;
  if (std::isfinite(max_logit)) {
    sums = top_p_on ? ComputeWeights<true>(values, max_logit, params.temperature)
                    : ComputeWeights<false>(values, max_logit, params.temperature);
  }
  if (!(sums.total > 0.0) || !std::isfinite(sums.total)) {
    degenerate_ = true;
    const size_t best = simd::FirstIndexOf(values.data(), values.size(), max_logit);
    fallback_token_ = id_at(best < values.size() ? best : 0);
    return;
  }
  const float top_p_threshold = top_p_on ? TopPThreshold(sums, params.top_p) : 0.0f;
  threshold_ = std::max(top_p_threshold, params.min_p);
  kept_weight_ = threshold_ == 0.0f ? sums.total : KeptWeight();
}

float FilteredDistribution::KthLargest(absl::Span<const float> logits, int32_t k) {
  if (k > kMaxHeapK) {
    heap_.assign(logits.begin(), logits.end());
    auto kth = heap_.begin() + (k - 1);
    std::nth_element(heap_.begin(), kth, heap_.end(), std::greater<float>());
    return *kth;
  }
  // A min-heap of the k largest so far: its top is the k-th largest. Blocks of 4 with nothing
  // above the top are skipped with one vector compare.
  heap_.assign(logits.begin(), logits.begin() + k);
  std::make_heap(heap_.begin(), heap_.end(), std::greater<float>());
  auto offer = [&](float value) {
    if (!(value > heap_.front())) return;
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<float>());
    heap_.back() = value;
    std::push_heap(heap_.begin(), heap_.end(), std::greater<float>());
  };
  size_t i = static_cast<size_t>(k);
  for (; i < logits.size() && i % kLanes != 0; ++i) offer(logits[i]);
  for (; i + kLanes <= logits.size(); i += kLanes) {
    if (!simd::AnyLane(simd::Load(logits.data() + i) > simd::Broadcast(heap_.front()))) continue;
    for (size_t lane = 0; lane < kLanes; ++lane) offer(logits[i + lane]);
  }
  for (; i < logits.size(); ++i) offer(logits[i]);
  return heap_.front();
}

void FilteredDistribution::SelectTopK(absl::Span<const float> logits, int32_t k) {
  const float kth = KthLargest(logits, k);
  ids_.clear();
  values_.clear();
  const F4 kth4 = simd::Broadcast(kth);
  for (size_t i = 0; i < logits.size(); i += kLanes) {
    if (!simd::AnyLane(LoadLogits(logits, i) >= kth4)) continue;
    for (size_t j = i; j < std::min(i + kLanes, logits.size()); ++j) {
      if (logits[j] >= kth) {
        ids_.push_back(static_cast<int32_t>(j));
        values_.push_back(logits[j]);
      }
    }
  }
  dense_ = false;
  if (ids_.empty()) {  // NaN logits only; Build() then finds the row degenerate
    ids_.push_back(0);
    values_.push_back(logits[0]);
  }
}

template <bool kSumAboveGuess>
FilteredDistribution::WeightSums FilteredDistribution::ComputeWeights(
    absl::Span<const float> values, float max_logit, float temperature) {
  const size_t padded = (values.size() + kBlock - 1) / kBlock * kBlock;
  weights_.resize(padded);
  block_sums_.resize(padded / kBlock);
  const F4 max4 = simd::Broadcast(max_logit);
  const F4 temperature4 = simd::Broadcast(temperature);
  const F4 guess4 = simd::Broadcast(kTopPGuess);
  const F4 zero4 = simd::Broadcast(0.0f);
  WeightSums sums;
  simd::I4 num_above = simd::BroadcastInt(0);  // minus the count per lane
  F4 above4 = zero4;                           // the weight above the guess, per lane
  for (size_t i = 0; i < padded; i += kBlock) {
    const F4 lo = simd::ExpNonPositive((LoadLogits(values, i) - max4) / temperature4);
    const F4 hi = simd::ExpNonPositive((LoadLogits(values, i + kLanes) - max4) / temperature4);
    simd::Store(&weights_[i], lo);
    simd::Store(&weights_[i + kLanes], hi);
    const double block_sum = simd::BlockSum(lo, hi);
    block_sums_[i / kBlock] = block_sum;
    sums.total += block_sum;
    if constexpr (!kSumAboveGuess) continue;
    const auto lo_above = lo >= guess4;
    const auto hi_above = hi >= guess4;
    above4 += (lo_above ? lo : zero4) + (hi_above ? hi : zero4);
    num_above += lo_above + hi_above;
  }
  // A float sum, used only to choose top_p's path; that path needs at most kMaxSortedCandidates
  // terms, 512 per lane, so its relative error is then under 512 * 2^-24 = 3.1e-5.
  sums.above_guess = (static_cast<double>(above4[0]) + above4[1]) + (above4[2] + above4[3]);
  sums.num_above_guess = -simd::SumLanes(num_above);
  return sums;
}

float FilteredDistribution::TopPThreshold(const WeightSums& sums, float top_p) {
  const double target = static_cast<double>(top_p) * sums.total;
  // The guess path needs the tokens above the guess to carry the target; their float sum is
  // trusted only with a margin (else the histogram decides).
  if (sums.above_guess < target * (1.0 + 1e-4) || sums.num_above_guess > kMaxSortedCandidates) {
    return HistogramThreshold(target);
  }
  // The prefix that reaches the target lies among the tokens with w >= kTopPGuess.
  crossing_.clear();
  const F4 guess4 = simd::Broadcast(kTopPGuess);
  for (size_t i = 0; i < weights_.size(); i += kLanes) {
    if (!simd::AnyLane(simd::Load(&weights_[i]) >= guess4)) continue;
    for (size_t j = i; j < i + kLanes; ++j) {
      if (weights_[j] >= kTopPGuess) crossing_.emplace_back(weights_[j], id_at(j));
    }
  }
  std::sort(crossing_.begin(), crossing_.end(), HeavierFirst);
  double cumulative = 0.0;
  for (const auto& [w, id] : crossing_) {
    cumulative += w;
    if (cumulative >= target) return w;
  }
  return crossing_.back().first;  // rounding: they carry the target by the blocked sum
}

float FilteredDistribution::HistogramThreshold(double target) {
  // Pass 1: bucket indices four at a time (integer vector ops), masses added to two interleaved
  // histograms so that neighbouring tokens rarely wait on the same bucket's last add.
  bucket_mass_.assign(2 * kNumBuckets, 0.0);
  const I4 one_bits = simd::BroadcastInt(static_cast<int32_t>(kOneBits));
  const I4 last_bucket = simd::BroadcastInt(static_cast<int32_t>(kNumBuckets - 1));
  const I4 zero_i = simd::BroadcastInt(0);
  const F4 zero4 = simd::Broadcast(0.0f);
  for (size_t i = 0; i < weights_.size(); i += kLanes) {
    const F4 w = simd::Load(&weights_[i]);
    const I4 positive = w > zero4;
    if (!simd::AnyLane(positive)) continue;
    const I4 buckets = BucketsOf(w, one_bits, last_bucket, zero_i);
    for (size_t lane = 0; lane < kLanes; ++lane) {
      if (positive[lane]) bucket_mass_[(lane & 1) * kNumBuckets + buckets[lane]] += w[lane];
    }
  }
  double cumulative = 0.0;
  uint32_t bucket = 0;
  auto mass = [&](uint32_t b) { return bucket_mass_[b] + bucket_mass_[kNumBuckets + b]; };
  while (bucket < kNumBuckets && cumulative + mass(bucket) < target) cumulative += mass(bucket++);
  if (bucket == kNumBuckets) return 0.0f;  // rounding: the whole mass is below the target
  // Pass 2: the crossing bucket's tokens, skipping blocks of 4 with none in it.
  crossing_.clear();
  const I4 wanted = simd::BroadcastInt(static_cast<int32_t>(bucket));
  for (size_t i = 0; i < weights_.size(); i += kLanes) {
    const F4 w = simd::Load(&weights_[i]);
    const I4 in_bucket = (w > zero4) & (BucketsOf(w, one_bits, last_bucket, zero_i) == wanted);
    if (!simd::AnyLane(in_bucket)) continue;
    for (size_t lane = 0; lane < kLanes; ++lane) {
      if (in_bucket[lane]) crossing_.emplace_back(w[lane], id_at(i + lane));
    }
  }
  std::sort(crossing_.begin(), crossing_.end(), HeavierFirst);
  for (const auto& [w, id] : crossing_) {
    cumulative += w;
    if (cumulative >= target) return w;
  }
  return crossing_.empty() ? 0.0f : crossing_.back().first;
}

void FilteredDistribution::KeptBlock(size_t i, float out[8]) const {
  const F4 threshold4 = simd::Broadcast(threshold_);
  const F4 zero4 = simd::Broadcast(0.0f);
  const F4 lo = simd::Load(&weights_[i]);
  const F4 hi = simd::Load(&weights_[i + kLanes]);
  simd::Store(out, lo >= threshold4 ? lo : zero4);
  simd::Store(out + kLanes, hi >= threshold4 ? hi : zero4);
}

double FilteredDistribution::KeptWeight() {
  double total = 0.0;
  float block[kBlock];
  for (size_t i = 0; i < weights_.size(); i += kBlock) {
    KeptBlock(i, block);
    const double block_sum = simd::BlockSum(simd::Load(block), simd::Load(block + kLanes));
    block_sums_[i / kBlock] = block_sum;
    total += block_sum;
  }
  return total;
}

int32_t FilteredDistribution::Sample(double u) const {
  if (degenerate_) return fallback_token_;
  const double target = u * kept_weight_;
  // The blocks' kept sums were stored when kept_weight_ was summed (the same values, in the same
  // order), so the walk to the crossing block reads 1/8 of the row.
  double cumulative = 0.0;
  size_t last_kept_block = 0;
  bool any_kept = false;
  bool crossed = false;
  for (size_t b = 0; b < block_sums_.size(); ++b) {
    const double block_sum = block_sums_[b];
    if (block_sum == 0.0) continue;
    any_kept = true;
    last_kept_block = b;
    if (cumulative + block_sum > target) {
      crossed = true;
      break;
    }
    cumulative += block_sum;
  }
  if (!any_kept) return id_at(0);
  float block[kBlock];
  const size_t i = last_kept_block * kBlock;
  KeptBlock(i, block);
  if (!crossed) {  // rounding left no block past the target: the row's last kept token
    size_t j = kBlock;
    while (j > 0 && block[j - 1] == 0.0f) --j;
    return id_at(j > 0 ? i + j - 1 : i);
  }
  // In the crossing block: the first kept token that takes the running sum past the target
  // (rounding: else the block's last kept token).
  double running = cumulative;
  size_t last_kept = i;
  for (size_t j = 0; j < kBlock; ++j) {
    if (block[j] == 0.0f) continue;
    running += block[j];
    last_kept = i + j;
    if (running > target) break;
  }
  return id_at(last_kept);
}

std::vector<std::pair<int32_t, double>> FilteredDistribution::KeptProbabilities() const {
  std::vector<std::pair<int32_t, double>> kept_tokens;
  if (degenerate_) {
    kept_tokens.emplace_back(fallback_token_, 1.0);
    return kept_tokens;
  }
  for (size_t i = 0; i < size_; ++i) {
    if (kept(i)) kept_tokens.emplace_back(id_at(i), weights_[i] / kept_weight_);
  }
  return kept_tokens;
}

RawLogprobs ComputeRawLogprobs(absl::Span<const float> raw_logits, int32_t token, int32_t num_top,
                               SampleTopLogprob* top) {
  assert(token >= 0 && static_cast<size_t>(token) < raw_logits.size());
  assert(num_top >= 0 && num_top <= kMaxSampleTopLogprobs);
  RawLogprobs out;
  TopList top_list(top, num_top);
  out.rank = RankAndTop(raw_logits, token, &top_list);
  out.num_top = top_list.count();
  const float max_logit = simd::Max(raw_logits.data(), raw_logits.size());
  const double log_sum = std::log(SumExp(raw_logits, max_logit));
  auto log_softmax = [&](float value) {
    return static_cast<float>(static_cast<double>(value - max_logit) - log_sum);
  };
  out.logprob = log_softmax(raw_logits[token]);
  for (int32_t i = 0; i < out.num_top; ++i) top[i].logprob = log_softmax(top[i].logprob);
  return out;
}

}  // namespace r2::cpu

// SampleRowsOnHost: the reference of the SampleRows op (kernels/sample_rows.h), in plain scalar
// code that performs the engine sampler's floating-point operations in the sampler's order, so
// its tokens and logprobs are the engine's bit for bit:
//  - the exponential is ExpNonPositive's polynomial with every product rounded before it is
//    added (an empty asm keeps the compiler from fusing them), as in engine/sampling/simd_math.h;
//  - long sums are sequential double sums of blocks of 8 added pairwise, over the candidates in
//    id order, padded with zero weights to a multiple of 8;
//  - top_p takes the sampler's two paths (the tokens with w >= 2^-12 when their 4-lane float sum
//    carries the target with a 1e-4 margin and they are at most 2048, else a 32-buckets-per-
//    octave histogram summed in two interleaved halves), because their roundings differ.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/sample_rows.h"

namespace r2 {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr size_t kBlock = 8;
constexpr size_t kLanes = 4;
constexpr float kTopPGuess = 0x1.0p-12f;
constexpr int64_t kMaxSortedCandidates = 2048;
constexpr int32_t kOneBits = 0x3F800000;
constexpr int kMantissaShift = 18;
constexpr int32_t kNumBuckets = (64 << (23 - kMantissaShift)) + 1;

// A float passed through an empty asm: the product feeding it is rounded on its own.
inline float Unfused(float v) {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+x"(v));
#elif defined(__aarch64__) || defined(__arm__)
  asm("" : "+w"(v));
#else
  asm("" : "+m"(v));
#endif
  return v;
}

// e^x for x <= 0, the engine sampler's polynomial (simd_math.h), one lane.
float ExpNonPositive(float x) {
  if (x < -87.0f) return 0.0f;
  const float magic = 12582912.0f;
  const float shifted = Unfused(x * 1.44269504088896341f) + magic;
  const int32_t n = std::bit_cast<int32_t>(shifted) - 0x4B400000;
  const float nf = shifted - magic;
  float r = x - Unfused(nf * 0.693359375f);
  r = r - Unfused(nf * -2.12194440e-4f);
  float p = 1.0f / 5040.0f;
  p = Unfused(p * r) + 1.0f / 720.0f;
  p = Unfused(p * r) + 1.0f / 120.0f;
  p = Unfused(p * r) + 1.0f / 24.0f;
  p = Unfused(p * r) + 1.0f / 6.0f;
  p = Unfused(p * r) + 0.5f;
  p = Unfused(p * r) + 1.0f;
  p = Unfused(p * r) + 1.0f;
  return Unfused(p * std::bit_cast<float>((n + 127) << 23));
}

double BlockSum(const float* w) {
  const double a = static_cast<double>(w[0]) + w[1], b = static_cast<double>(w[2]) + w[3];
  const double c = static_cast<double>(w[4]) + w[5], d = static_cast<double>(w[6]) + w[7];
  return (a + b) + (c + d);
}

// The largest value; NaN never wins; -inf when there is none.
float MaxOf(const float* p, size_t n) {
  float best = kNegInf;
  for (size_t i = 0; i < n; ++i) best = p[i] > best ? p[i] : best;
  return best;
}

size_t FirstIndexOf(const float* p, size_t n, float value) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] == value) return i;
  }
  return n;
}

int32_t Greedy(const float* row, size_t n) {
  size_t best = n;
  float best_value = kNegInf;
  for (size_t i = 0; i < n; ++i) {
    if (row[i] > best_value) {
      best_value = row[i];
      best = i;
    }
  }
  if (best == n) best = FirstIndexOf(row, n, kNegInf);
  return best < n ? static_cast<int32_t>(best) : 0;
}

bool HeavierFirst(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

int32_t BucketOf(float w) {
  const int32_t below_one = kOneBits - std::bit_cast<int32_t>(w);
  const int32_t bucket = (below_one > 0 ? below_one : 0) >> kMantissaShift;
  return std::min(bucket, kNumBuckets - 1);
}

// One row's distribution (FilteredDistribution's definitions), scratch reused across rows.
class RowDistribution {
 public:
  // The token for the edited row `logits` under the spec's filters and uniform.
  int32_t Draw(const float* logits, size_t vocab, const SampleRowSpec& spec) {
    SelectCandidates(logits, vocab, spec.top_k);
    const float* values = dense_ ? logits : values_.data();
    const float max_logit = MaxOf(values, size_);
    Sums sums;
    if (std::isfinite(max_logit)) sums = ComputeWeights(values, max_logit, spec.temperature);
    if (!(sums.total > 0.0) || !std::isfinite(sums.total)) {
      const size_t best = FirstIndexOf(values, size_, max_logit);
      return id_at(best < size_ ? best : 0);
    }
    const float top_p_threshold = spec.top_p < 1.0f ? TopPThreshold(sums, spec.top_p) : 0.0f;
    threshold_ = std::max(top_p_threshold, spec.min_p);
    const double kept = threshold_ == 0.0f ? sums.total : KeptWeight();
    return Sample(spec.uniform * kept);
  }

 private:
  struct Sums {
    double total = 0.0;
    double above_guess = 0.0;
    int64_t num_above_guess = 0;
  };

  int32_t id_at(size_t i) const { return dense_ ? static_cast<int32_t>(i) : ids_[i]; }

  void SelectCandidates(const float* logits, size_t vocab, int32_t top_k) {
    dense_ = true;
    size_ = vocab;
    if (top_k <= 0 || static_cast<size_t>(top_k) >= vocab) return;
    scratch_.assign(logits, logits + vocab);
    auto kth_it = scratch_.begin() + (top_k - 1);
    std::nth_element(scratch_.begin(), kth_it, scratch_.end(), std::greater<float>());
    const float kth = *kth_it;
    ids_.clear();
    values_.clear();
    for (size_t i = 0; i < vocab; ++i) {
      if (logits[i] >= kth) {
        ids_.push_back(static_cast<int32_t>(i));
        values_.push_back(logits[i]);
      }
    }
    if (ids_.empty()) {
      ids_.push_back(0);
      values_.push_back(logits[0]);
    }
    dense_ = false;
    size_ = ids_.size();
  }

  Sums ComputeWeights(const float* values, float max_logit, float temperature) {
    const size_t padded = (size_ + kBlock - 1) / kBlock * kBlock;
    weights_.assign(padded, 0.0f);
    block_sums_.assign(padded / kBlock, 0.0);
    Sums sums;
    float above[kLanes] = {0, 0, 0, 0};
    for (size_t i = 0; i < padded; ++i) {
      const float l = i < size_ ? values[i] : kNegInf;
      weights_[i] = ExpNonPositive((l - max_logit) / temperature);
    }
    for (size_t i = 0; i < padded; i += kBlock) {
      const double block_sum = BlockSum(&weights_[i]);
      block_sums_[i / kBlock] = block_sum;
      sums.total += block_sum;
      for (size_t lane = 0; lane < kLanes; ++lane) {
        const float lo = weights_[i + lane], hi = weights_[i + kLanes + lane];
        above[lane] += (lo >= kTopPGuess ? lo : 0.0f) + (hi >= kTopPGuess ? hi : 0.0f);
        sums.num_above_guess += (lo >= kTopPGuess) + (hi >= kTopPGuess);
      }
    }
    sums.above_guess =
        (static_cast<double>(above[0]) + above[1]) + static_cast<double>(above[2] + above[3]);
    return sums;
  }

  float TopPThreshold(const Sums& sums, float top_p) {
    const double target = static_cast<double>(top_p) * sums.total;
    if (sums.above_guess < target * (1.0 + 1e-4) || sums.num_above_guess > kMaxSortedCandidates) {
      return HistogramThreshold(target);
    }
    crossing_.clear();
    for (size_t i = 0; i < weights_.size(); ++i) {
      if (weights_[i] >= kTopPGuess) crossing_.emplace_back(weights_[i], id_at(i));
    }
    std::sort(crossing_.begin(), crossing_.end(), HeavierFirst);
    double cumulative = 0.0;
    for (const auto& [w, id] : crossing_) {
      cumulative += w;
      if (cumulative >= target) return w;
    }
    return crossing_.back().first;
  }

  float HistogramThreshold(double target) {
    mass_.assign(2 * kNumBuckets, 0.0);
    for (size_t i = 0; i < weights_.size(); ++i) {
      const float w = weights_[i];
      if (w > 0.0f) mass_[(i & 1) * kNumBuckets + BucketOf(w)] += w;
    }
    double cumulative = 0.0;
    int32_t bucket = 0;
    auto mass = [&](int32_t b) { return mass_[b] + mass_[kNumBuckets + b]; };
    while (bucket < kNumBuckets && cumulative + mass(bucket) < target) {
      cumulative += mass(bucket++);
    }
    if (bucket == kNumBuckets) return 0.0f;
    crossing_.clear();
    for (size_t i = 0; i < weights_.size(); ++i) {
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

  float KeptAt(size_t i) const { return weights_[i] >= threshold_ ? weights_[i] : 0.0f; }

  double KeptWeight() {
    double total = 0.0;
    float block[kBlock];
    for (size_t i = 0; i < weights_.size(); i += kBlock) {
      for (size_t j = 0; j < kBlock; ++j) block[j] = KeptAt(i + j);
      block_sums_[i / kBlock] = BlockSum(block);
      total += block_sums_[i / kBlock];
    }
    return total;
  }

  int32_t Sample(double target) const {
    double cumulative = 0.0;
    size_t last_kept_block = 0;
    bool any_kept = false, crossed = false;
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
    const size_t i = last_kept_block * kBlock;
    if (!crossed) {
      size_t j = kBlock;
      while (j > 0 && KeptAt(i + j - 1) == 0.0f) --j;
      return id_at(j > 0 ? i + j - 1 : i);
    }
    double running = cumulative;
    size_t last_kept = i;
    for (size_t j = 0; j < kBlock; ++j) {
      const float w = KeptAt(i + j);
      if (w == 0.0f) continue;
      running += w;
      last_kept = i + j;
      if (running > target) break;
    }
    return id_at(last_kept);
  }

  bool dense_ = true;
  size_t size_ = 0;
  float threshold_ = 0.0f;
  std::vector<int32_t> ids_;
  std::vector<float> values_;
  std::vector<float> scratch_;
  std::vector<float> weights_;
  std::vector<double> block_sums_;
  std::vector<double> mass_;
  std::vector<std::pair<float, int32_t>> crossing_;
};

bool RanksBefore(float value_a, int32_t id_a, float value_b, int32_t id_b) {
  return value_a > value_b || (value_a == value_b && id_a < id_b);
}

// Logprobs of the raw row (engine/sampling/logprobs.h).
void RawLogprobs(const float* raw, size_t vocab, int32_t token, int32_t num_top,
                 SampleRowResult* out) {
  const float token_logit = raw[token];
  int32_t ahead = 0;
  int32_t count = 0;
  auto& top = out->top;
  for (size_t i = 0; i < vocab; ++i) {
    const auto id = static_cast<int32_t>(i);
    const float v = raw[i];
    ahead += RanksBefore(v, id, token_logit, token) ? 1 : 0;
    if (num_top == 0) continue;
    if (count == num_top) {
      if (!(v > top[num_top - 1].logprob)) continue;
      --count;
    }
    int32_t pos = count;
    while (pos > 0 && RanksBefore(v, id, top[pos - 1].logprob, top[pos - 1].token)) {
      top[pos] = top[pos - 1];
      --pos;
    }
    top[pos] = {id, v};
    ++count;
  }
  out->rank = ahead + 1;
  out->num_top = count;
  const float max_logit = MaxOf(raw, vocab);
  double sum = 0.0;
  float block[kBlock];
  for (size_t i = 0; i < vocab; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) {
      block[j] = ExpNonPositive((i + j < vocab ? raw[i + j] : kNegInf) - max_logit);
    }
    sum += BlockSum(block);
  }
  const double log_sum = std::log(sum);
  auto log_softmax = [&](float value) {
    return static_cast<float>(static_cast<double>(value - max_logit) - log_sum);
  };
  out->logprob = log_softmax(token_logit);
  for (int32_t i = 0; i < count; ++i) top[i].logprob = log_softmax(top[i].logprob);
}

// The edits of steps 1-3, remembered for undoing (newest last).
void ApplyEdits(const SampleRowSpec& s, float* row, std::vector<std::pair<int32_t, float>>* undo) {
  auto set = [&](int32_t token, float value) {
    undo->emplace_back(token, row[token]);
    row[token] = value;
  };
  for (int32_t i = 0; i < s.num_logit_bias; ++i) {
    const SampleLogitBias& e = s.logit_bias[i];
    set(e.token, row[e.token] + e.bias);
  }
  for (int32_t i = 0; i < s.num_banned; ++i) set(s.banned[i], kNegInf);
  const float repetition = s.repetition_penalty;
  for (int32_t i = 0; i < s.num_history; ++i) {
    const SampleTokenCount& h = s.history[i];
    float value = row[h.token];
    if (repetition != 1.0f) value = value > 0.0f ? value / repetition : value * repetition;
    if (h.output_count > 0) {
      value -= static_cast<float>(h.output_count) * s.frequency_penalty + s.presence_penalty;
    }
    if (value != row[h.token]) set(h.token, value);
  }
}

absl::Status CheckTokens(int64_t spec, const char* field, int64_t vocab, int32_t n,
                         auto&& token_at) {
  if (n < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: spec ", spec, " ", field, " count ", n, " is negative"));
  for (int32_t i = 0; i < n; ++i) {
    const int32_t t = token_at(i);
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("SampleRows: spec ", spec, " ", field,
                                                     " token ", t, " is outside [0, ", vocab, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSpec(const SampleRowsParams& p, int64_t i) {
  const SampleRowSpec& s = p.specs[i];
  auto bad = [&](const char* field, auto value, const char* want) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: spec ", i, " ", field, " is ", value, ", must be ", want));
  };
  if (s.row < 0 || s.row >= p.num_rows) return bad("row", s.row, "in [0, num_rows)");
  if (!(s.temperature >= 0.0f) || !std::isfinite(s.temperature)) {
    return bad("temperature", s.temperature, "finite and >= 0");
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) return bad("top_p", s.top_p, "in (0, 1]");
  if (!(s.min_p >= 0.0f && s.min_p <= 1.0f)) return bad("min_p", s.min_p, "in [0, 1]");
  if (!(s.uniform >= 0.0 && s.uniform < 1.0)) return bad("uniform", s.uniform, "in [0, 1)");
  if (!(s.repetition_penalty > 0.0f) || !std::isfinite(s.repetition_penalty)) {
    return bad("repetition_penalty", s.repetition_penalty, "finite and > 0");
  }
  if (s.top_logprobs < 0 || s.top_logprobs > kMaxSampleTopLogprobs) {
    return bad("top_logprobs", s.top_logprobs, "in [0, 20]");
  }
  if (s.top_logprobs > 0 && !s.logprobs)
    return bad("top_logprobs", s.top_logprobs, "0 without logprobs");
  if ((s.num_logit_bias > 0 && s.logit_bias == nullptr) ||
      (s.num_banned > 0 && s.banned == nullptr) || (s.num_history > 0 && s.history == nullptr)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SampleRows: spec ", i, " has a null edit list with entries"));
  }
  const int64_t v = p.vocab_size;
  if (absl::Status st = CheckTokens(i, "logit_bias", v, s.num_logit_bias,
                                    [&](int32_t k) { return s.logit_bias[k].token; });
      !st.ok()) {
    return st;
  }
  if (absl::Status st =
          CheckTokens(i, "banned", v, s.num_banned, [&](int32_t k) { return s.banned[k]; });
      !st.ok()) {
    return st;
  }
  return CheckTokens(i, "history", v, s.num_history, [&](int32_t k) { return s.history[k].token; });
}

}  // namespace

absl::Status CheckSampleRows(const SampleRowsParams& p) {
  if (p.vocab_size <= 0 || p.num_rows < 0 || p.num_specs < 0) {
    return absl::InvalidArgumentError(absl::StrCat("SampleRows: vocab_size ", p.vocab_size,
                                                   ", num_rows ", p.num_rows, ", num_specs ",
                                                   p.num_specs, " (need vocab > 0, counts >= 0)"));
  }
  if (p.row_stride != 0 && p.row_stride < p.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("SampleRows: row_stride ", p.row_stride,
                                                   " is below vocab_size ", p.vocab_size));
  }
  if (p.num_specs == 0) return absl::OkStatus();
  if (p.logits == nullptr || p.specs == nullptr || p.results == nullptr) {
    return absl::InvalidArgumentError("SampleRows: null logits, specs or results");
  }
  std::vector<int64_t> rows;
  rows.reserve(p.num_specs);
  for (int64_t i = 0; i < p.num_specs; ++i) {
    if (absl::Status s = CheckSpec(p, i); !s.ok()) return s;
    rows.push_back(p.specs[i].row);
  }
  std::sort(rows.begin(), rows.end());
  if (std::adjacent_find(rows.begin(), rows.end()) != rows.end()) {
    return absl::InvalidArgumentError("SampleRows: a logits row is named by two specs");
  }
  return absl::OkStatus();
}

absl::Status SampleRowsOnHost(const SampleRowsParams& p) {
  if (absl::Status s = CheckSampleRows(p); !s.ok()) return s;
  const int64_t stride = p.row_stride == 0 ? p.vocab_size : p.row_stride;
  const auto vocab = static_cast<size_t>(p.vocab_size);
  RowDistribution distribution;
  std::vector<std::pair<int32_t, float>> undo;
  for (int64_t i = 0; i < p.num_specs; ++i) {
    const SampleRowSpec& spec = p.specs[i];
    float* row = p.logits + spec.row * stride;
    SampleRowResult& result = p.results[i];
    undo.clear();
    ApplyEdits(spec, row, &undo);
    result.token =
        spec.temperature == 0.0f ? Greedy(row, vocab) : distribution.Draw(row, vocab, spec);
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) row[it->first] = it->second;
    result.num_top = 0;
    result.rank = 0;
    result.logprob = 0.0f;
    if (spec.logprobs) RawLogprobs(row, vocab, result.token, spec.top_logprobs, &result);
  }
  return absl::OkStatus();
}

}  // namespace r2

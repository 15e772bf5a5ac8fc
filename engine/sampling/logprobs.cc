#include "engine/sampling/logprobs.h"

#include <cassert>
#include <cmath>
#include <limits>

#include "engine/sampling/simd_math.h"

namespace r2::sampling {
namespace {

using simd::F4;
using simd::I4;
using simd::kLanes;

// True when (value_a, id_a) comes before (value_b, id_b): larger logit first, then lower id.
bool RanksBefore(float value_a, int32_t id_a, float value_b, int32_t id_b) {
  return value_a > value_b || (value_a == value_b && id_a < id_b);
}

// The best `capacity` (id, raw logit) pairs seen so far, sorted; ids arrive in increasing order.
class TopList {
 public:
  TopList(TokenLogprob* entries, int32_t capacity) : entries_(entries), capacity_(capacity) {}

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
  TokenLogprob* entries_;
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
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const F4 max4 = simd::Broadcast(max_logit);
  auto load = [&](size_t i) {
    if (i + kLanes <= raw.size()) return simd::Load(raw.data() + i);
    const size_t n = i < raw.size() ? raw.size() - i : 0;
    return simd::LoadPartial(raw.data() + i, n, kNegInf);
  };
  double sum = 0.0;
  for (size_t i = 0; i < raw.size(); i += simd::kBlock) {
    sum += simd::BlockSum(simd::ExpNonPositive(load(i) - max4),
                          simd::ExpNonPositive(load(i + kLanes) - max4));
  }
  return sum;
}

}  // namespace

void ComputeLogprobs(absl::Span<const float> raw_logits, int32_t token, int32_t num_top,
                     Logprobs* out) {
  assert(token >= 0 && static_cast<size_t>(token) < raw_logits.size());
  assert(num_top >= 0 && num_top <= kMaxTopLogprobs);
  TopList top(out->top.data(), num_top);
  out->rank = RankAndTop(raw_logits, token, &top);
  out->num_top = top.count();
  const float max_logit = simd::Max(raw_logits.data(), raw_logits.size());
  const double log_sum = std::log(SumExp(raw_logits, max_logit));
  auto log_softmax = [&](float value) {
    return static_cast<float>(static_cast<double>(value - max_logit) - log_sum);
  };
  out->logprob = log_softmax(raw_logits[token]);
  for (int32_t i = 0; i < out->num_top; ++i) {
    out->top[i].logprob = log_softmax(out->top[i].logprob);
  }
}

}  // namespace r2::sampling

#include "engine/sampling/logprobs.h"

#include <cassert>
#include <cmath>
#include <limits>

namespace r2::sampling {
namespace {

// True when (value_a, id_a) comes before (value_b, id_b): larger logit first, then lower id.
bool RanksBefore(float value_a, int32_t id_a, float value_b, int32_t id_b) {
  return value_a > value_b || (value_a == value_b && id_a < id_b);
}

// Inserts (id, value) into the sorted list top[0, count), capacity `capacity`, when it ranks
// before the last entry; values are raw logits here. Ids arrive in increasing order.
void OfferTop(int32_t id, float value, int32_t capacity, TokenLogprob* top, int32_t* count) {
  if (*count == capacity) {
    if (capacity == 0 || !(value > top[capacity - 1].logprob)) return;
    --*count;  // drop the last entry
  }
  int32_t pos = *count;
  while (pos > 0 && RanksBefore(value, id, top[pos - 1].logprob, top[pos - 1].token)) {
    top[pos] = top[pos - 1];
    --pos;
  }
  top[pos] = {id, value};
  ++*count;
}

}  // namespace

void ComputeLogprobs(absl::Span<const float> raw_logits, int32_t token, int32_t num_top,
                     Logprobs* out) {
  assert(token >= 0 && static_cast<size_t>(token) < raw_logits.size());
  assert(num_top >= 0 && num_top <= kMaxTopLogprobs);
  const float token_logit = raw_logits[token];
  float max_logit = -std::numeric_limits<float>::infinity();
  int32_t ahead = 0;  // tokens ranked before `token`
  int32_t count = 0;
  for (size_t i = 0; i < raw_logits.size(); ++i) {
    const float value = raw_logits[i];
    const auto id = static_cast<int32_t>(i);
    max_logit = value > max_logit ? value : max_logit;
    ahead += RanksBefore(value, id, token_logit, token) ? 1 : 0;
    OfferTop(id, value, num_top, out->top.data(), &count);
  }
  double sum = 0.0;
  for (float value : raw_logits) sum += std::exp(value - max_logit);
  const double log_sum = std::log(sum);
  auto log_softmax = [&](float value) {
    return static_cast<float>(static_cast<double>(value - max_logit) - log_sum);
  };
  out->logprob = log_softmax(token_logit);
  out->rank = ahead + 1;
  out->num_top = count;
  for (int32_t i = 0; i < count; ++i) out->top[i].logprob = log_softmax(out->top[i].logprob);
}

}  // namespace r2::sampling

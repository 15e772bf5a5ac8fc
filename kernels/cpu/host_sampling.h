#pragma once
// Host sampling: the one implementation of the arithmetic that turns a row of float32 logits into
// a token on the CPU. Both host paths run it: the engine Sampler (engine/sampling/, which adds
// requests, seeds and threads around it) and SampleRowsOnHost (kernels/cpu/reference_sampling.cc,
// the SampleRows reference that the CUDA kernel is tested against), so the two give the same
// tokens and logprobs bit for bit by construction. The vector math under it is sampling_simd.h.
//
// Per row, in vLLM's order:
//   LogitEdits           the sparse edits (logit_bias, bans, penalties), each undone by Restore()
//   GreedyToken          temperature 0: the first id of the largest edited logit
//   FilteredDistribution temperature > 0: temperature -> top_k -> top_p -> min_p -> draw
//   ComputeRawLogprobs   log_softmax of the raw row (after Restore) for the sampled token
//
// FilteredDistribution's definitions (l = processed logits, ids in [0, V); ExpNonPositive and
// BlockSum in sampling_simd.h):
//   candidates  top_k off (0, -1 or >= V): every id. Else every id whose logit is >= the k-th
//               largest logit (counted with multiplicity), so ties at the boundary are all kept
//               and the set can exceed k (as vLLM and Hugging Face do).
//   weights     m = max candidate logit; w[i] = ExpNonPositive((l[i] - m) / temperature) in
//               float. The best token has w = 1 exactly; -inf logits have w = 0. Z = the sum of
//               the candidates' w in id order, as a sequential double sum of BlockSums of 8.
//               Probability p[i] = w[i] / Z.
//   top_p       order the candidates by (w descending, id ascending) and keep the shortest
//               prefix whose cumulative weight (double, in that order) reaches top_p * Z; the
//               kept set is then every candidate with w >= the last kept weight, so tokens of
//               equal weight are never separated. top_p = 1 keeps all.
//   min_p       keep w >= min_p (that is p >= min_p * p_max, since the best w is 1).
//   draw        kept = candidates with w > 0 passing both thresholds; Zk = their weights' sum,
//               as Z. With u uniform in [0, 1): walk the blocks of 8 candidates in id order,
//               adding each block's BlockSum of kept weights, to the first block that takes the
//               running sum past u * Zk; in it, add kept weights one by one (double) to the
//               first that passes u * Zk. That is inverse-CDF sampling over token ids, exact up
//               to double rounding (when rounding leaves no such token: the block's, or the
//               row's, last kept token).
//
// Every rule acts on a threshold, so equal weights are treated alike and results do not depend
// on how a sort breaks ties. Cost: O(V) per row in vectorized passes. top_k uses a k-heap (or
// nth_element for k > 1024) that skips blocks below its minimum. top_p first tries the tokens
// with w >= 2^-12: when they carry top_p * Z and number at most 2048, it sorts just them; else a
// 32-buckets-per-octave histogram of weights finds the bucket that crosses top_p * Z and only
// that bucket is sorted. Degenerate rows (every logit -inf, or NaN) fall back to the lowest id
// with the largest logit. Scratch is reused across rows; one instance per thread.
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "kernels/sample_rows.h"

namespace r2::cpu {

// The sparse edits of one row, each remembered so that Restore() puts the row back exactly (the
// raw logprobs are computed from the restored row). Cost: O(number of edits). Tokens must be in
// [0, row.size()) (callers check them).
class LogitEdits {
 public:
  // row[token] = value.
  void Set(absl::Span<float> row, int32_t token, float value);
  // row[token] += bias.
  void AddBias(absl::Span<float> row, int32_t token, float bias);
  // row[token] = -inf.
  void Ban(absl::Span<float> row, int32_t token);
  // One token seen in the prompt or output, `output_count` times in the output: if repetition
  // != 1, l = l > 0 ? l / repetition : l * repetition; then if output_count > 0,
  // l -= output_count * frequency + presence. No edit when the value is unchanged.
  void Penalize(absl::Span<float> row, int32_t token, int32_t output_count, float repetition,
                float frequency, float presence);
  // Undoes every edit since the last Restore(), newest first.
  void Restore(absl::Span<float> row);

  size_t size() const { return undo_.size(); }

 private:
  std::vector<std::pair<int32_t, float>> undo_;  // (token, value before the edit)
};

// The greedy choice: the index of the largest value, the lowest index among equal ones (NaN is
// never chosen over a number; no value above -inf: the first -inf; all NaN or empty: 0).
int32_t GreedyToken(absl::Span<const float> row);

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
  // The weights' sums that ComputeWeights gathers in the same pass.
  struct WeightSums {
    double total = 0.0;        // Z
    double above_guess = 0.0;  // the weight of tokens with w >= kTopPGuess
    int64_t num_above_guess = 0;
  };

  int32_t id_at(size_t i) const { return dense_ ? static_cast<int32_t>(i) : ids_[i]; }
  bool kept(size_t i) const { return weights_[i] > 0.0f && weights_[i] >= threshold_; }
  float KthLargest(absl::Span<const float> logits, int32_t k);
  void SelectTopK(absl::Span<const float> logits, int32_t k);
  // Fills weights_; sums above kTopPGuess only when asked (top_p on).
  template <bool kSumAboveGuess>
  WeightSums ComputeWeights(absl::Span<const float> values, float max_logit, float temperature);
  float TopPThreshold(const WeightSums& sums, float top_p);
  float HistogramThreshold(double target);
  // Zk, storing each block's kept sum in block_sums_.
  double KeptWeight();
  // The block of 8 weights at `i` with the rejected ones zeroed.
  void KeptBlock(size_t i, float out[8]) const;

  size_t size_ = 0;                  // number of candidates
  bool dense_ = true;                // candidates are all ids (else ids_)
  bool degenerate_ = false;          // no finite positive total weight
  int32_t fallback_token_ = 0;       // the token drawn when degenerate
  float threshold_ = 0.0f;           // kept iff w >= threshold_ (and w > 0)
  double kept_weight_ = 0.0;         // Zk
  std::vector<int32_t> ids_;         // candidate ids when !dense_
  std::vector<float> values_;        // candidate logits when !dense_
  std::vector<float> weights_;       // w per candidate, zero-padded to a multiple of 8
  std::vector<double> block_sums_;   // per block of 8: the BlockSum of its kept weights
  std::vector<float> heap_;          // top_k selection scratch
  std::vector<double> bucket_mass_;  // top_p histogram
  std::vector<std::pair<float, int32_t>> crossing_;  // the tokens sorted for top_p
};

// What ComputeRawLogprobs returns besides the top list.
struct RawLogprobs {
  float logprob = 0.0f;  // of the sampled token
  int32_t rank = 0;      // of the sampled token, 1-based
  int32_t num_top = 0;   // entries of the top list filled
};

// Log-probabilities of the raw model output (before any edit) for `token` and the best `num_top`
// (0..kMaxSampleTopLogprobs) tokens, written to top[0, num_top): log_softmax(l)[i] = (l[i] - max)
// - log(sum_j ExpNonPositive(l[j] - max)), the sum in double as BlockSums of 8. Tokens are ranked
// by raw logit descending, ties to the lower id; rank is the sampled token's 1-based position in
// that order and the top list is its first entries. Three vectorized passes over the row (rank
// and top list, max, sum), no allocation.
RawLogprobs ComputeRawLogprobs(absl::Span<const float> raw_logits, int32_t token, int32_t num_top,
                               SampleTopLogprob* top);

}  // namespace r2::cpu

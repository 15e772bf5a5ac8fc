#pragma once
// StepBudget: what one scheduling step may still hand out. Made fresh by every Schedule call from
// max_num_batched_tokens and max_num_seqs; each scheduled chunk takes its tokens and one sequence
// slot. Decodes come first: running prefills and admissions get what the decodes leave.
#include <algorithm>
#include <cassert>
#include <cstdint>

namespace r2::scheduler {

class StepBudget {
 public:
  StepBudget(int32_t max_tokens, int32_t max_seqs)
      : tokens_left_(max_tokens), seqs_left_(max_seqs) {}

  int32_t tokens_left() const { return tokens_left_; }
  int32_t seqs_left() const { return seqs_left_; }
  bool exhausted() const { return tokens_left_ <= 0 || seqs_left_ <= 0; }
  // How many of want tokens one more chunk could get now, keeping reserved tokens and sequence
  // slots for chunks still to come (the decodes a prefill chunk must not crowd out).
  int32_t Available(int32_t want, int32_t reserved = 0) const {
    if (tokens_left_ - reserved <= 0 || seqs_left_ - reserved <= 0) return 0;
    return std::min(want, tokens_left_ - reserved);
  }
  // Records one chunk of tokens (<= Available(tokens)).
  void Take(int32_t tokens) {
    assert(tokens > 0 && tokens <= tokens_left_ && seqs_left_ > 0);
    tokens_left_ -= tokens;
    --seqs_left_;
  }

 private:
  int32_t tokens_left_;
  int32_t seqs_left_;
};

}  // namespace r2::scheduler

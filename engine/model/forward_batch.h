#pragma once
// What one forward pass takes and returns. A batch is a list of sequences, each with its new
// tokens, the position of the first one (= tokens of the sequence already in the KV cache) and the
// block table covering every position up to the last new token. Sequences may mix prefill
// (start_pos 0), chunked prefill (start_pos > 0, many tokens) and decode (start_pos > 0, few).
// A sequence appears at most once per batch. Spans are borrowed for the duration of the call.
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace r2::model {

struct SequenceInput {
  absl::Span<const int32_t> token_ids;    // new tokens, at least one
  int64_t start_pos = 0;                  // position of token_ids[0]
  absl::Span<const int32_t> block_table;  // >= ceil((start_pos + n) / block_size) block ids
};

enum class LogitsMode {
  kNone,             // hidden states only
  kLastPerSequence,  // one row per sequence: its last new token
  kAll,              // one row per new token
};

struct ForwardOutput {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  // [rows, vocab_size]; rows in batch order (sequence by sequence, tokens in order).
  std::vector<float> logits;
  // [num_tokens, hidden_size]: every new token's final hidden state (after the final norm; for
  // MTP after shared_head.norm), in batch order.
  std::vector<float> hidden;

  // Device backends with DeepseekModel::set_outputs_stay_on_device(true): the logits stay in
  // backend memory ([device_logit_rows, vocab_size], valid until the next forward), `logits`
  // and `hidden` are left empty and nothing is copied to the host.
  float* device_logits = nullptr;
  int64_t device_logit_rows = 0;

  int64_t logit_rows() const {
    if (device_logits != nullptr) return device_logit_rows;
    return vocab_size ? logits.size() / vocab_size : 0;
  }
  absl::Span<const float> logits_row(int64_t i) const {
    return absl::MakeConstSpan(logits.data() + i * vocab_size, vocab_size);
  }
};

}  // namespace r2::model

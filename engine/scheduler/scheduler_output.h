#pragma once
// What one Scheduler::Schedule step tells the model runner, and what the runner hands back to
// Scheduler::Postprocess. Plain data; spans point into the scheduler's sequences and stay valid
// until the next Postprocess or Schedule call.
//
// The runner's order of work for one step:
//   1. apply block_copies (copy-on-write; every src stays allocated until Postprocess, and every
//   dst
//      is a fresh block, so the copies are independent and may run in any order or in parallel);
//   2. one forward pass over chunks: chunk c computes KV for token positions [start, end) of its
//      sequence, writing position p into block_table[p / block_size] at slot p % block_size, and
//      produces a logits row only when needs_logits;
//   3. sample one token per needs_logits chunk, in chunk order, and call Postprocess with them.
// preempted and aborted ids are informational: those sequences have no chunk in this step, and
// their blocks are already released.
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/scheduler/sequence.h"

namespace r2::scheduler {

struct ScheduledChunk {
  int64_t seq_id = 0;
  uint64_t request_id = 0;
  int32_t choice_index = 0;
  int32_t start = 0;                 // first token position computed in this step
  int32_t end = 0;                   // one past the last
  bool needs_logits = false;         // end is the sequence's last token: sample after this chunk
  bool is_decode = false;            // a one-token step of a decoding sequence
  absl::Span<const int32_t> tokens;  // token ids at positions [start, end)
  absl::Span<const int32_t> block_table;  // covers positions [0, end)

  int32_t num_tokens() const { return end - start; }
};

struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
};

struct SchedulerOutput {
  uint64_t step = 0;                    // 1-based step number
  std::vector<ScheduledChunk> chunks;   // decodes first (oldest admitted first), then prefills
  int32_t num_batched_tokens = 0;       // sum of chunk lengths
  std::vector<BlockCopy> block_copies;  // before the forward pass
  std::vector<int64_t> preempted;       // back to waiting; will recompute
  std::vector<int64_t> aborted;         // ended by Abort; each id ends exactly once

  void Clear() {
    chunks.clear();
    num_batched_tokens = 0;
    block_copies.clear();
    preempted.clear();
    aborted.clear();
  }
};

// One sampled token for one needs_logits chunk. stop: the caller's stop conditions (EOS, stop
// token or string) end the sequence with this token; length limits are the scheduler's own.
struct SampledToken {
  int64_t seq_id = 0;
  int32_t token = 0;
  bool stop = false;
};

// A sequence that ended in Postprocess. Its blocks are already released.
struct FinishedSequence {
  int64_t seq_id = 0;
  uint64_t request_id = 0;
  int32_t choice_index = 0;
  FinishReason reason = FinishReason::kNone;
  int32_t num_prompt_tokens = 0;
  int32_t num_output_tokens = 0;
  int32_t num_cached_tokens = 0;  // usage.prompt_tokens_details.cached_tokens
};

}  // namespace r2::scheduler

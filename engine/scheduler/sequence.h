#pragma once
// Sequence: one generated choice of one request, as the scheduler sees it: token ids, how many of
// them have KV computed, its block table, and its state. No tensors.
//
// State machine (SequenceState). Preemption is a transition back to kWaiting, not a state:
//
//   from \ to    | kWaiting      | kPrefilling | kDecoding        | kFinished          | kAborted
//   -------------+---------------+-------------+------------------+--------------------+---------
//   kWaiting     |               | admitted    |                  |                    | abort
//   kPrefilling  | preempted     |             | last chunk done, | first token stops  | abort
//                |               |             | token sampled    | or hits the length |
//   kDecoding    | preempted     |             |                  | stop or length     | abort
//   kFinished, kAborted: terminal (the sequence is dropped).
//
// kWaiting sequences hold no blocks and have num_computed == 0 (a preempted one recomputes prompt
// and generated tokens). kPrefilling and kDecoding sequences are "running": they hold blocks.
// kPrefilling computes chunks of [num_computed, compute_target()); kDecoding computes one token
// per step (the last sampled one).
//
// A request with n > 1 choices starts as one leader sequence with fork_width == n. The leader
// computes all prompt tokens but the last, then forks: n - 1 children share its block table
// (reference counts, no copies), and each of the n computes the last prompt token itself, so every
// choice gets its own logits row. The first one to write into the shared, partly filled last block
// copies it first (copy-on-write).
#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "engine/cache/block_hash.h"
#include "engine/cache/block_table.h"

namespace r2::scheduler {

enum class SequenceState : uint8_t { kWaiting, kPrefilling, kDecoding, kFinished, kAborted };

enum class FinishReason : uint8_t { kNone, kStop, kLength, kAbort };

std::string_view SequenceStateName(SequenceState state);
std::string_view FinishReasonName(FinishReason reason);
// True when the table above allows from -> to.
bool IsAllowedTransition(SequenceState from, SequenceState to);

struct Sequence {
  // Identity and request parameters (fixed).
  int64_t id = 0;
  uint64_t request_id = 0;
  int32_t choice_index = 0;  // 0 .. n-1 within the request
  int32_t priority = 0;      // lower runs first
  uint64_t arrival = 0;      // request arrival order (FCFS within a priority)
  int32_t max_tokens = 0;    // output tokens allowed
  int32_t num_prompt_tokens = 0;

  // Tokens: prompt, then outputs. block_hashes[i] is the chain hash of full block i of tokens.
  std::vector<int32_t> tokens;
  std::vector<cache::BlockHash> block_hashes;
  cache::BlockHash root_hash;  // from the request's cache salt

  // Cache state.
  cache::BlockTable table;
  int32_t num_computed = 0;        // tokens [0, num_computed) have KV in table's blocks
  int32_t num_cached_tokens = -1;  // prompt tokens found in the prefix cache at first admission

  // Scheduling state.
  SequenceState state = SequenceState::kWaiting;
  int32_t fork_width = 1;       // > 1: leader that still has to fork; also its max_num_seqs weight
  uint64_t admitted_order = 0;  // order of the last admission (preemption takes the newest)
  uint64_t scheduled_step = 0;  // last step (1-based) that scheduled this sequence
  int32_t num_preemptions = 0;
  bool abort_requested = false;

  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens to compute before the next sample (or the fork): a pending leader stops one short.
  int32_t compute_target() const { return fork_width > 1 ? num_tokens() - 1 : num_tokens(); }
  bool is_running() const {
    return state == SequenceState::kPrefilling || state == SequenceState::kDecoding;
  }
  absl::Span<const int32_t> block_tokens(int32_t block, int32_t block_size) const {
    return absl::MakeConstSpan(tokens).subspan(static_cast<size_t>(block) * block_size, block_size);
  }

  // Asserts that the move is in the transition table.
  void SetState(SequenceState next);
  // Appends a sampled token and hashes the block it completes, if any.
  void AppendToken(int32_t token, int32_t block_size);
  // Hashes every full block of tokens not hashed yet.
  void ExtendBlockHashes(int32_t block_size);
};

}  // namespace r2::scheduler

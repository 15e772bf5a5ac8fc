#pragma once
// Scheduler: iteration-level continuous batching over a paged KV cache with prefix caching. A pure
// state machine over sequence lengths and block ids: no tensors, no threads, no clocks. The
// engine's step loop drives it; tests drive it with fake tokens.
//
// Each step:
//   SchedulerOutput out;
//   RETURN_IF_ERROR(scheduler.Schedule(&out));      // pick this step's work
//   ... runner: out.block_copies, forward over out.chunks, sample one token per needs_logits ...
//   RETURN_IF_ERROR(scheduler.Postprocess(sampled, &finished));  // apply tokens, end sequences
// Schedule and Postprocess strictly alternate (FailedPrecondition otherwise). AddRequest and Abort
// may be called between any two calls; an abort takes effect at the next Schedule.
//
// Policy of Schedule, within max_num_batched_tokens tokens and max_num_seqs sequences (StepBudget):
//   1. running sequences, in one pass in admission order (oldest first): one decode token for each
//      decoding sequence, and the next chunk for each one still prefilling, sized to leave a token
//      for every decode later in the pass (decodes are never crowded out by prefill);
//   2. admission from the waiting queue (lowest priority value first, FCFS within a priority;
//      preempted sequences keep their place, which puts them ahead of later arrivals): the prompt
//      is matched against the prefix cache in full blocks (never all of it: at least the last token
//      is computed so its logits exist), and the first chunk of the rest is scheduled. Admission
//      stops at the first sequence that does not fit, and is skipped in a step that preempted.
// The output lists decode chunks first, then prefill chunks.
// When a running sequence cannot get a block, the most recently admitted running sequence (not
// yet visited in this pass) is preempted: its blocks are released, its full computed blocks stay
// in the prefix cache so its recompute finds them. If there is none, the sequence preempts itself.
// The oldest running sequence therefore always progresses, and AddRequest rejects anything that
// could not run alone in the whole pool, so no request is preempted forever.
//
// Invariants (CheckIntegrity; also run automatically whenever the scheduler becomes idle, and a
// violation is returned as an Internal status from that call): pool accounting, reference counts
// equal the references held by block tables (plus copy-on-write sources pinned for the step),
// waiting sequences hold no blocks, running sequences' weight <= max_num_seqs.
//
// Not thread-safe: one thread (the engine loop) owns it.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/cache/block_pool.h"
#include "engine/scheduler/scheduler_output.h"
#include "engine/scheduler/sequence.h"
#include "engine/scheduler/step_budget.h"

namespace r2::scheduler {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;             // running sequences (and chunks per step)
  int32_t max_num_batched_tokens = 8192;  // tokens per step; must be >= max_num_seqs
  int32_t max_model_len = 163840;         // prompt + max_tokens
  // Blocks kept available when admitting new work while others run, so decodes of admitted
  // sequences rarely need to preempt. Ignored when nothing runs.
  int32_t admission_watermark_blocks = 0;
  bool enable_prefix_caching = true;
};

struct SchedulerRequest {
  uint64_t request_id = 0;      // unique among live requests
  std::vector<int32_t> prompt;  // token ids, non-empty, each >= 0
  int32_t max_tokens = 16;      // output tokens per choice, >= 1
  int32_t n = 1;                // choices; they share the prompt's blocks
  int32_t priority = 0;         // lower value runs first
  std::string cache_salt;       // prefix-cache isolation (e.g. per tenant); empty = shared
};

struct SchedulerCounters {
  uint64_t steps = 0;
  uint64_t prefix_cache_queries = 0;  // tokens looked up at admissions
  uint64_t prefix_cache_hits = 0;     // of those, tokens found in the cache
  uint64_t preemptions = 0;
  uint64_t block_copies = 0;
};

class Scheduler {
 public:
  // Errors name the bad field: non-positive limits, max_num_batched_tokens < max_num_seqs.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerConfig& config,
                                                           cache::BlockPool pool);

  // Queues a request; returns the id of its first sequence (choice i has id first + i). Rejects,
  // with InvalidArgument naming the limit, a request that could never run: empty prompt, negative
  // token id, max_tokens < 1, n outside [1, max_num_seqs], prompt + max_tokens > max_model_len, or
  // one choice needing more blocks than the pool has. AlreadyExists for a live request_id.
  absl::StatusOr<int64_t> AddRequest(SchedulerRequest request);
  // Marks every live sequence of the request; they end at the next Schedule (listed in
  // SchedulerOutput::aborted, blocks released) unless Postprocess finishes them first. NotFound
  // when the request is unknown or already ended.
  absl::Status Abort(uint64_t request_id);
  // Abort of every live request (shutdown, engine failure): each one still ends exactly once.
  void AbortAll();

  absl::Status Schedule(SchedulerOutput* out);
  // sampled: one entry per needs_logits chunk of the last Schedule, in chunk order. Appends the
  // sequences that ended to *finished (cleared first). InvalidArgument, changing nothing, when
  // sampled does not match the chunks.
  absl::Status Postprocess(absl::Span<const SampledToken> sampled,
                           std::vector<FinishedSequence>* finished);

  absl::Status CheckIntegrity() const;

  bool idle() const { return waiting_.empty() && running_.empty(); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  const SchedulerCounters& counters() const { return counters_; }
  const SchedulerConfig& config() const { return config_; }
  const cache::BlockPool& pool() const { return pool_; }
  // nullptr when the sequence has ended (or never existed).
  const Sequence* FindSequence(int64_t seq_id) const;

 private:
  struct RequestRecord {
    int64_t first_seq_id = 0;
    int32_t n = 0;
    int32_t num_ended = 0;
  };
  struct PendingChunk {  // what Postprocess applies
    Sequence* seq;
    int32_t end;
    bool needs_logits;
  };
  struct RunningChunk {  // a running sequence's chunk, decided before it is emitted
    Sequence* seq;
    int32_t end;
    bool is_decode;
  };
  struct SlotRequest {  // how ReserveSlots may get blocks
    int32_t num_tokens = 0;
    bool allow_partial = false;  // fewer tokens when blocks run short
    bool allow_preempt = false;  // preempt newer running sequences for blocks
    int32_t keep_available = 0;  // blocks to leave in the pool
  };

  Scheduler(const SchedulerConfig& config, cache::BlockPool pool);
  absl::Status ValidateRequest(const SchedulerRequest& request) const;

  // Schedule's parts (scheduler.cc).
  void ProcessAborts(SchedulerOutput* out);
  void ScheduleRunning(StepBudget& budget, SchedulerOutput* out);
  void AdmitWaiting(StepBudget& budget, SchedulerOutput* out);
  int32_t ReserveSlots(Sequence& seq, const SlotRequest& request, SchedulerOutput* out);
  bool IsShared(int32_t block) const;
  void CopyOnWrite(Sequence& seq, SchedulerOutput* out);
  int32_t MatchPrefix(const Sequence& seq);
  bool PreemptNewestUnscheduled(const Sequence& requester, SchedulerOutput* out);
  void Preempt(Sequence& seq, SchedulerOutput* out);
  void EmitChunk(Sequence& seq, int32_t end, bool is_decode, SchedulerOutput* out);

  // Postprocess's parts and bookkeeping (scheduler_postprocess.cc).
  absl::Status ValidateSampled(absl::Span<const SampledToken> sampled) const;
  void RegisterFullBlocks(Sequence& seq);
  bool ApplyToken(Sequence& seq, const SampledToken& sampled, std::vector<FinishedSequence>* out);
  void Fork(Sequence& leader);
  void InsertWaiting(Sequence* seq);
  void RemoveFromWaiting(const Sequence* seq);
  void RemoveFromRunning(const Sequence* seq);
  void DropSequence(const Sequence* seq);
  void EndRequestSequences(uint64_t request_id, int32_t count);
  absl::Status IdleCheck() const;
  absl::Status CheckSequence(const Sequence& seq) const;

  SchedulerConfig config_;
  cache::BlockPool pool_;
  SchedulerCounters counters_;

  std::unordered_map<int64_t, std::unique_ptr<Sequence>> sequences_;
  std::unordered_map<uint64_t, RequestRecord> requests_;
  std::vector<Sequence*> waiting_;  // best last: sorted by (priority, arrival, choice) descending
  std::vector<Sequence*> running_;  // admission order, oldest first
  int32_t running_weight_ = 0;      // sum of fork_width over running_
  std::vector<int64_t> pending_aborts_;

  bool awaiting_postprocess_ = false;
  bool preempted_this_step_ = false;
  std::vector<PendingChunk> pending_;        // chunks of the step in flight
  std::vector<RunningChunk> decided_;        // scratch: running sequences' chunks, admission order
  int32_t unvisited_decodes_ = 0;            // decodes the running pass has still to visit
  std::vector<int32_t> pinned_cow_sources_;  // released at Postprocess
  std::vector<int32_t> matched_;             // scratch for MatchPrefix

  int64_t next_seq_id_ = 1;
  uint64_t next_arrival_ = 0;
  uint64_t next_admission_ = 0;
};

}  // namespace r2::scheduler

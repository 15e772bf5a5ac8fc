#pragma once
// EngineCore: one engine step, without threads. The engine thread (ThreadedEngine) feeds it the
// requests and aborts it took from the inbox and calls Step() while it is not idle; the step
// benchmark drives it directly with a runner that skips the forward pass.
//
// One Step():
//   1. Scheduler::Schedule -> chunks, block copies, preempted and aborted sequences
//      (aborted choices get their terminal abort event);
//   2. the before_forward hook, then ModelRunner::Run (block copies + one forward pass; one
//      logits row per needs_logits chunk);
//   3. Sampler::SampleRows over every needs_logits chunk's row with its choice's own state (rows
//      in parallel; see sampler.h for why the tokens do not depend on the threads), or, when the
//      runner left the logits in device memory, DeviceSampler (Backend::SampleRows: the same
//      tokens, only ids and logprobs cross to the host); then, in chunk order, the detokenizer
//      and stop checker (ActiveRequest::AddToken);
//   4. Scheduler::Postprocess with the stop flags -> finished choices get their terminal event;
//   5. every request touched in the step gets its deltas (and, when it has ended, its usage).
// Preempted sequences keep their output tokens in the scheduler and their states here; their
// recompute samples only the next, new token, so nothing is emitted twice.
//
// A non-OK Step (hook, forward, sampler, scheduler or integrity failure) is an engine fault: the
// caller ends everything with FailAll and never steps again.
//
// Not thread-safe: one thread owns it.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/active_request.h"
#include "engine/device_sampler.h"
#include "engine/engine.h"
#include "engine/engine_inbox.h"
#include "engine/model_runner.h"
#include "engine/sampling/sampler.h"
#include "engine/scheduler/scheduler.h"

namespace r2::engine {

struct EngineCoreOptions {
  scheduler::SchedulerConfig scheduler;
  int32_t num_blocks = 0;
  int32_t block_size = 64;
  OutputContext output;
  uint64_t seed = 0;  // the sampler's generator for unseeded requests
  // Threads that sample a step's rows (SamplerOptions::num_threads): 0 = OpenMP's default.
  int32_t sampler_threads = 0;
  std::function<absl::Status(uint64_t step)> before_forward;
};

// Where the host time of the last step went (seconds).
struct StepTimings {
  double schedule = 0;     // Schedule + abort events
  double forward = 0;      // hook + ModelRunner::Run
  double sample = 0;       // Sampler + detokenizer + stop checks
  double postprocess = 0;  // Postprocess + terminal events + delivery + stats
  double total = 0;
};

class EngineCore {
 public:
  static absl::StatusOr<std::unique_ptr<EngineCore>> Create(EngineCoreOptions options,
                                                            std::unique_ptr<ModelRunner> runner);

  // Hands a request to the scheduler. A request whose handle is already gone ends as aborted
  // without running; one the scheduler refuses ends with an error event.
  void Add(PendingRequest pending);
  // Aborts a live request at the next step (terminal abort events then); unknown ids are ignored.
  void Abort(uint64_t request_id);
  void AbortAll();
  absl::Status Step();
  // Engine fault: every live request ends with finish_reason error and `message`.
  void FailAll(const std::string& message);
  // After a fault: a request taken from the inbox ends with an error event without running
  // (counted in requests_finished_error like every other end).
  void FailUnstarted(const PendingRequest& pending, const std::string& message);

  // Called in each Step right after scheduling (before the forward pass) with the number of
  // requests still waiting, so admission control sees the queue as it is during the step.
  void set_on_scheduled(std::function<void(int32_t num_waiting)> on_scheduled) {
    on_scheduled_ = std::move(on_scheduled);
  }

  bool idle() const { return scheduler_->idle(); }
  int32_t num_waiting() const { return scheduler_->num_waiting(); }
  absl::Status CheckIntegrity() const { return scheduler_->CheckIntegrity(); }
  const EngineStats& stats() const { return stats_; }
  const StepTimings& last_step_timings() const { return timings_; }

 private:
  EngineCore(EngineCoreOptions options, std::unique_ptr<scheduler::Scheduler> scheduler,
             sampling::Sampler sampler, std::unique_ptr<ModelRunner> runner);
  absl::Status RunModelAndSample();
  absl::Status SampleChunks();
  void EndChoice(uint64_t request_id, int32_t choice, FinishReason reason);
  void EndAbortedSequences();
  void EndFinishedSequences();
  void DeliverTouched();
  void Retire(const ActiveRequest& request);
  void UpdateStats();
  ActiveRequest* Find(uint64_t request_id);

  EngineCoreOptions options_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  sampling::Sampler sampler_;
  DeviceSampler device_sampler_;  // for logits the runner leaves in device memory
  std::unique_ptr<ModelRunner> runner_;

  std::unordered_map<uint64_t, std::unique_ptr<ActiveRequest>> requests_;
  // Sequence id -> (request id, choice index), for the scheduler's aborted list.
  std::unordered_map<int64_t, std::pair<uint64_t, int32_t>> sequence_owner_;

  // Per-step buffers, reused.
  scheduler::SchedulerOutput plan_;
  StepLogits logits_;
  std::vector<scheduler::SampledToken> sampled_;
  std::vector<absl::Span<float>> batch_rows_;  // the step's sampling batch, in chunk order
  std::vector<int64_t> batch_row_ids_;         // the same rows as indices (device path)
  std::vector<sampling::SamplingState*> batch_states_;
  std::vector<const scheduler::ScheduledChunk*> batch_chunks_;
  std::vector<ActiveRequest*> batch_requests_;
  std::vector<sampling::SampleResult> batch_results_;
  std::vector<scheduler::FinishedSequence> finished_;
  std::vector<ActiveRequest*> touched_;      // requests with output this step (may repeat)
  std::vector<uint64_t> finished_requests_;  // of those, the ones that ended

  EngineStats stats_;
  StepTimings timings_;
  std::function<void(int32_t)> on_scheduled_;
};

}  // namespace r2::engine

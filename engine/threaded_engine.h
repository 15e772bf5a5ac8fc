#pragma once
// ThreadedEngine: the Engine (engine.h) that runs an EngineCore on one engine thread.
//
// The thread's loop, once per step: take everything posted to the EngineInbox (sleeping on its
// condition variable while the engine is idle), run posted tasks, add the new requests, apply the
// aborts, then Step() when there is work, and publish the statistics. Submit() only validates and
// pushes to the inbox; front ends never wait on a step.
//
// Faults: a failed step ends every live request with an error event, marks the engine unhealthy
// (Submit -> Unavailable) and leaves the thread running but idle: requests that were already in
// the inbox get error events, CheckIntegrity and Shutdown keep working.
// Shutdown: draining refuses new requests, lets in-flight ones run until the deadline, then
// aborts the rest through the scheduler (so the pool ends clean) and joins the thread.
//
// Watchdog (config.watchdog_timeout > 0): a second thread waits on a condition variable with the
// running step's deadline (step start + timeout); the engine thread stamps the start of each step
// and clears it at the end, so an idle engine has no deadline and nothing wakes. When the deadline
// passes with the step still running, the watchdog marks the engine faulted (/health 503, Submit
// -> Unavailable) and ends every live request with an error event itself, from a registry of the
// streams Submit handed out: the stuck engine thread is never waited for. Shutdown then returns
// without joining it; if the step ever returns, the thread takes the fault path (FailAll, whose
// events the already-ended streams ignore) and idles like after any fault.
//
// Shutdown, CheckIntegrity and the destructor wait for the engine thread, so they must not be
// called on it (from a notifier or the before_forward hook). The destructor of a stalled engine
// waits for the stuck step to return.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "engine/engine_core.h"
#include "engine/engine_inbox.h"
#include "engine/tokenizer/tokenizer.h"

namespace r2::engine {

// What Submit checks a request against; fixed when the engine is created.
struct RequestLimits {
  int32_t vocab_size = 0;
  int32_t max_model_len = 0;
  int32_t max_num_seqs = 0;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  bool has_tokenizer = false;
};

// Checks `request` against `limits` (engine.h's Submit contract) and resolves
// params.max_tokens (unset: the rest of the context). InvalidArgument naming the field.
absl::Status ValidateRequest(const RequestLimits& limits, Request& request);

class RequestStream;

class ThreadedEngine final : public Engine {
 public:
  // `config` has max_model_len resolved. Starts the engine thread.
  ThreadedEngine(const EngineConfig& config, const model::ModelConfig& model_config,
                 std::unique_ptr<tokenizer::Tokenizer> tokenizer, std::unique_ptr<EngineCore> core,
                 const RequestLimits& limits);
  ~ThreadedEngine() override;  // Shutdown(0)

  absl::StatusOr<std::shared_ptr<RequestHandle>> Submit(Request request) override;
  void Shutdown(absl::Duration timeout) override;
  bool healthy() const override { return inbox_->healthy(); }
  bool stalled() const override { return stalled_.load(std::memory_order_acquire); }
  EngineStats stats() const override { return inbox_->stats(); }
  const model::ModelConfig& model_config() const override { return model_config_; }
  const EngineConfig& config() const override { return config_; }
  const tokenizer::Tokenizer* tokenizer() const override { return tokenizer_.get(); }
  // Must not be called on the engine thread (e.g. from a notifier): it waits for that thread.
  absl::Status CheckIntegrity() override;

 private:
  void Loop();
  // One pass of the loop over what was taken from the inbox. False when the loop should end.
  bool Process(InboxBatch& batch);
  absl::Status StepCatchingExceptions();
  // StepCatchingExceptions with the step's start stamped for the watchdog.
  absl::Status WatchedStep();
  void Fault(const absl::Status& status);
  void Publish();
  void WatchdogLoop();
  // The watchdog's verdict: faulted, every registered request ended with `message`.
  void FailStuckEngine(const std::string& message);
  void RegisterLive(const std::shared_ptr<RequestStream>& stream, const Request& request);

  const EngineConfig config_;
  const model::ModelConfig model_config_;
  const RequestLimits limits_;
  const std::unique_ptr<tokenizer::Tokenizer> tokenizer_;  // outlives core_'s detokenizers
  const std::shared_ptr<EngineInbox> inbox_;
  std::unique_ptr<EngineCore> core_;
  const bool watchdog_enabled_;
  std::atomic<uint64_t> next_request_id_{1};

  // Engine thread only.
  bool faulted_ = false;
  std::string fault_message_;

  // Requests handed out, so the watchdog can end them without the engine thread. Entries whose
  // handle is gone are pruned as the list grows (amortized O(1) per Submit).
  struct LiveRequest {
    std::weak_ptr<RequestStream> stream;
    int32_t n = 1;
    int32_t prompt_tokens = 0;
  };
  std::mutex live_mu_;
  std::vector<LiveRequest> live_;
  size_t live_prune_at_ = 64;

  // Watchdog state, under watch_mu_ (watch_cv_ wakes the watchdog and Shutdown).
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  std::optional<std::chrono::steady_clock::time_point> step_started_;  // a step is running
  bool watch_stop_ = false;
  bool loop_exited_ = false;  // the engine thread has left Loop()
  std::atomic<bool> stalled_{false};
  std::thread watchdog_;

  std::mutex join_mu_;
  std::thread thread_;
};

}  // namespace r2::engine

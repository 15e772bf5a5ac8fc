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
// Shutdown, CheckIntegrity and the destructor wait for the engine thread, so they must not be
// called on it (from a notifier or the before_forward hook).
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

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
  void Fault(const absl::Status& status);
  void Publish();

  const EngineConfig config_;
  const model::ModelConfig model_config_;
  const RequestLimits limits_;
  const std::unique_ptr<tokenizer::Tokenizer> tokenizer_;  // outlives core_'s detokenizers
  const std::shared_ptr<EngineInbox> inbox_;
  std::unique_ptr<EngineCore> core_;
  std::atomic<uint64_t> next_request_id_{1};

  // Engine thread only.
  bool faulted_ = false;
  std::string fault_message_;

  std::mutex join_mu_;
  std::thread thread_;
};

}  // namespace r2::engine

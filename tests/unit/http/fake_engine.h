#pragma once
// A test double of engine::Engine: no model, one thread that every `step` emits one token per
// choice of every live request (token id = (prompt length + position) % vocab, text "tK ") until
// max_tokens (default 8), then finish_reason length with usage. Closing a handle ends its
// request with abort at the next step, as the real engine does. For server tests only.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace r2::server::testing {

class FakeHandle;

class FakeEngine : public engine::Engine {
 public:
  explicit FakeEngine(std::chrono::milliseconds step = std::chrono::milliseconds(2));
  ~FakeEngine() override;

  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> Submit(engine::Request request) override;
  void Shutdown(absl::Duration timeout) override;
  bool healthy() const override { return healthy_.load(); }
  engine::EngineStats stats() const override;
  const model::ModelConfig& model_config() const override { return model_config_; }
  const engine::EngineConfig& config() const override { return config_; }
  const tokenizer::Tokenizer* tokenizer() const override { return nullptr; }
  absl::Status CheckIntegrity() override { return absl::OkStatus(); }

  // Test controls.
  void set_healthy(bool healthy) { healthy_.store(healthy); }
  void set_reject(absl::Status status);  // Submit returns it while not OK
  int live_requests() const;
  int aborted() const { return aborted_.load(); }
  int submitted() const { return submitted_.load(); }
  engine::Request last_request() const;

 private:
  void Loop();
  bool Step();

  model::ModelConfig model_config_;
  engine::EngineConfig config_;
  std::chrono::milliseconds step_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<FakeHandle>> live_;
  engine::Request last_request_;
  absl::Status reject_;
  bool stop_ = false;
  std::atomic<bool> healthy_{true};
  std::atomic<int> aborted_{0};
  std::atomic<int> submitted_{0};
  std::thread thread_;
};

}  // namespace r2::server::testing

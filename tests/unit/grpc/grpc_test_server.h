#pragma once
// The gRPC tests' server: a real engine on a tiny random-weight model with the tiny BPE tokenizer
// and DeepSeek-R1's chat template (so Chat output starts inside the reasoning), the HTTP
// ServerContext the front ends share, and a GrpcServer on a free loopback port. The engine's
// forward pass can be held at a gate, so tests observe queued and cancelled requests without
// timing assumptions.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "server/grpc/client.h"
#include "server/grpc/grpc_server.h"
#include "server/http/server_context.h"
#include "server/openai_prompt.h"

namespace r2::server::grpc_api::testing {

// Generous: a wait that hits it is a failure, not a timing assumption.
inline absl::Duration WaitLimit() { return absl::Seconds(60); }

// Holds the engine thread before each forward pass while closed, except for the steps Allow()ed.
class StepGate {
 public:
  void Close();
  void Open();
  // Lets `steps` more forward passes through while closed.
  void Allow(int steps);
  // Called on the engine thread.
  void Pass();
  // Waits until the engine thread is held at the gate (false after `limit`).
  bool WaitUntilHeld(absl::Duration limit);

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  bool open_ = true;
  int allowed_ = 0;
  int held_ = 0;
};

struct TestServerOptions {
  std::vector<std::string> api_keys;
  int32_t max_queued_requests = 4096;
  int32_t max_num_seqs = 64;
  int64_t max_concurrent_streams = 1024;
  bool load = true;  // false: the context stays "loading" (no engine)
};

class TestServer {
 public:
  explicit TestServer(TestServerOptions options = {});
  ~TestServer();

  std::unique_ptr<InferenceClient> Client(const std::string& api_key = "") const;
  engine::Engine& engine() { return *engine_; }
  http::ServerContext& context() { return *context_; }
  GrpcServer& grpc() { return *grpc_; }
  StepGate& gate() { return *gate_; }
  // Waits until no KV block is held by a request and nothing runs or waits.
  bool WaitIdle(absl::Duration limit = WaitLimit());

  // The model directory (written once per process).
  static const std::string& ModelDir();

 private:
  std::shared_ptr<StepGate> gate_ = std::make_shared<StepGate>();
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<ServedModel> model_;
  std::unique_ptr<http::ServerContext> context_;
  std::unique_ptr<GrpcServer> grpc_;
};

// Polls `done` until it holds or `limit` passes (for state with no event to wait on).
template <typename F>
bool Eventually(F done, absl::Duration limit = WaitLimit()) {
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return done();
}

}  // namespace r2::server::grpc_api::testing

#pragma once
// What every connection of the HTTP server shares: options, the engine and served model (set
// once loading finished), auth, CORS and metrics. Handlers read it from the I/O threads.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "server/http/auth.h"
#include "server/http/cors.h"
#include "server/http/metrics.h"
#include "server/openai_prompt.h"

namespace r2::server::http {

struct HttpOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;
  int threads = 2;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 4 * 1024 * 1024;
  std::chrono::milliseconds header_timeout{10'000};  // first request's header
  std::chrono::milliseconds idle_timeout{30'000};    // keep-alive wait for the next request
  std::chrono::milliseconds body_timeout{30'000};    // reading a request body
  std::chrono::milliseconds write_timeout{30'000};   // one write to a client that stopped reading
  size_t max_connections = 8192;
};

class ServerContext {
 public:
  ServerContext(HttpOptions options, ApiKeys keys, CorsPolicy cors, std::string model_name)
      : options_(std::move(options)),
        keys_(std::move(keys)),
        cors_(std::move(cors)),
        metrics_(model_name),
        model_name_(std::move(model_name)) {}

  const HttpOptions& options() const { return options_; }
  const ApiKeys& keys() const { return keys_; }
  const CorsPolicy& cors() const { return cors_; }
  ServerMetrics& metrics() { return metrics_; }
  const std::string& model_name() const { return model_name_; }

  // Set once, after loading; null before. `engine` and `model` must outlive the server.
  void SetReady(engine::Engine* engine, const ServedModel* model) {
    engine_.store(engine, std::memory_order_release);
    model_.store(model, std::memory_order_release);
  }
  engine::Engine* engine() const { return engine_.load(std::memory_order_acquire); }
  const ServedModel* model() const { return model_.load(std::memory_order_acquire); }

  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  // Ready for generation requests: loaded, healthy, not draining.
  bool ready() const {
    engine::Engine* e = engine();
    return e != nullptr && model() != nullptr && !draining() && e->healthy();
  }

  std::atomic<int64_t>& active_generations() { return active_generations_; }
  std::atomic<int64_t>& open_connections() { return open_connections_; }
  int64_t started_unix() const { return started_unix_; }

 private:
  HttpOptions options_;
  ApiKeys keys_;
  CorsPolicy cors_;
  ServerMetrics metrics_;
  std::string model_name_;
  std::atomic<engine::Engine*> engine_{nullptr};
  std::atomic<const ServedModel*> model_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> active_generations_{0};
  std::atomic<int64_t> open_connections_{0};
  int64_t started_unix_ = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
};

}  // namespace r2::server::http

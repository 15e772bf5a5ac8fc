#pragma once
// Prometheus metrics for GET /metrics (text format 0.0.4), under vLLM's names with the label
// model_name (the de-facto standard gateways read), plus r2serve_* series of the HTTP layer.
//
// Engine gauges and counters are read from Engine::stats() at scrape time. The latency
// histograms are measured here, on the front end: time to first token, inter-token latency
// (per token: the gap between output events divided by the tokens they carried; also under the
// older name vllm:time_per_output_token_seconds) and end-to-end latency. The per-request phase
// histograms come from the engine's timestamps in the final Usage (ObserveFinished): queue time
// (arrival at the front end to the engine's first step with the request), prefill time (that step
// to the first token sampled) and decode time (first to last token sampled), plus the prompt and
// generation token counts per request. Speculative-decoding series (vllm:spec_decode_*) are not
// exported: the engine does no speculative decoding (vLLM exports them only when it does).
// Thread-safe.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "engine/engine.h"

namespace r2::server::http {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends _bucket/_sum/_count lines.
  void Render(const std::string& name, const std::string& labels, std::string* out) const;

 private:
  std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(std::string model_name);

  void ObserveTimeToFirstToken(double seconds) { ttft_.Observe(seconds); }
  void ObserveInterTokenLatency(double seconds) { itl_.Observe(seconds); }
  void ObserveEndToEnd(double seconds) { e2e_.Observe(seconds); }
  // A request that ended with usage: its phase times (from `arrival`, when the front end submitted
  // it, and the engine's timestamps in `usage`; a phase the request never reached is skipped) and
  // its token counts.
  void ObserveFinished(absl::Time arrival, const engine::Usage& usage);
  // vllm:iteration_tokens_total is sampled: at each scrape, the last step's token count when the
  // engine ran steps since the previous scrape (the engine reports only its last step).
  void SampleIteration(const engine::EngineStats& stats);
  void CountHttpRequest(const std::string& method, const std::string& route, int status);
  void CountClientGone();

  // The whole exposition; `stats` null while the engine is loading.
  std::string Render(const engine::EngineStats* stats, bool healthy) const;

 private:
  void RenderEngine(const engine::EngineStats& s, std::string* out) const;
  void RenderHttp(std::string* out) const;

  std::string labels_;  // model_name="..."
  Histogram ttft_;
  Histogram itl_;
  Histogram e2e_;
  Histogram queue_;
  Histogram prefill_;
  Histogram decode_;
  Histogram prompt_tokens_;
  Histogram generation_tokens_;
  Histogram iteration_tokens_;
  mutable absl::Mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> http_ ABSL_GUARDED_BY(mu_);
  uint64_t client_gone_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_steps_ ABSL_GUARDED_BY(mu_) = 0;
};

// A Prometheus label value with \, " and newlines escaped.
std::string EscapeLabelValue(const std::string& value);

}  // namespace r2::server::http

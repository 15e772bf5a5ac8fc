#include "server/http/metrics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace r2::server::http {
namespace {

std::string Num(double v) { return absl::StrFormat("%.17g", v); }

void Header(std::string* out, const std::string& name, const char* type, const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Sample(std::string* out, const std::string& name, const std::string& labels, double v) {
  absl::StrAppend(out, name, "{", labels, "} ", Num(v), "\n");
}

void Metric(std::string* out, const std::string& name, const char* type, const char* help,
            const std::string& labels, double v) {
  Header(out, name, type, help);
  Sample(out, name, labels, v);
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
          0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0};
}

// vLLM's 1-2-5 series up to 10^6 tokens.
std::vector<double> TokenCountBuckets() {
  std::vector<double> bounds;
  for (double decade = 1; decade <= 1e6; decade *= 10) {
    for (double m : {1.0, 2.0, 5.0}) bounds.push_back(m * decade);
  }
  return bounds;
}

double SecondsBetween(absl::Time from, absl::Time to) {
  return std::max(0.0, absl::ToDoubleSeconds(to - from));
}

}  // namespace

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  absl::MutexLock lock(&mu_);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? Num(bounds_[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, ",le=\"", le, "\"} ", cumulative, "\n");
  }
  absl::StrAppend(out, name, "_sum{", labels, "} ", Num(sum_), "\n");
  absl::StrAppend(out, name, "_count{", labels, "} ", count_, "\n");
}

ServerMetrics::ServerMetrics(std::string model_name)
    : labels_(absl::StrCat("model_name=\"", EscapeLabelValue(model_name), "\"")),
      ttft_(LatencyBuckets()),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
            1.0, 2.5, 5.0, 10.0}),
      e2e_(LatencyBuckets()),
      queue_(LatencyBuckets()),
      prefill_(LatencyBuckets()),
      decode_(LatencyBuckets()),
      prompt_tokens_(TokenCountBuckets()),
      generation_tokens_(TokenCountBuckets()),
      iteration_tokens_({1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}) {}

void ServerMetrics::CountHttpRequest(const std::string& method, const std::string& route,
                                     int status) {
  absl::MutexLock lock(&mu_);
  ++http_[{method, route, status}];
}

void ServerMetrics::SampleIteration(const engine::EngineStats& stats) {
  {
    absl::MutexLock lock(&mu_);
    if (stats.steps <= last_steps_) return;
    last_steps_ = stats.steps;
  }
  iteration_tokens_.Observe(stats.last_step_tokens);
}

void ServerMetrics::ObserveFinished(absl::Time arrival, const engine::Usage& usage) {
  prompt_tokens_.Observe(usage.prompt_tokens);
  generation_tokens_.Observe(usage.completion_tokens);
  if (usage.scheduled_at == absl::InfinitePast()) return;
  queue_.Observe(SecondsBetween(arrival, usage.scheduled_at));
  if (usage.first_token_at == absl::InfinitePast()) return;
  prefill_.Observe(SecondsBetween(usage.scheduled_at, usage.first_token_at));
  decode_.Observe(SecondsBetween(usage.first_token_at, usage.last_token_at));
}

void ServerMetrics::CountClientGone() {
  absl::MutexLock lock(&mu_);
  ++client_gone_;
}

void ServerMetrics::RenderEngine(const engine::EngineStats& s, std::string* out) const {
  const std::string& l = labels_;
  Metric(out, "vllm:num_requests_running", "gauge", "Requests in model execution batches.", l,
         s.num_running);
  Metric(out, "vllm:num_requests_waiting", "gauge", "Requests waiting to be processed.", l,
         s.num_waiting);
  const double usage =
      s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / s.kv_blocks_total : 0.0;
  Metric(out, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", l,
         usage);
  Metric(out, "vllm:gpu_cache_usage_perc", "gauge",
         "KV-cache usage (the legacy name of vllm:kv_cache_usage_perc).", l, usage);
  Metric(out, "vllm:prefix_cache_queries_total", "counter",
         "Prefix cache queries, in terms of number of queried tokens.", l,
         static_cast<double>(s.prefix_cache_queries));
  Metric(out, "vllm:prefix_cache_hits_total", "counter",
         "Prefix cache hits, in terms of number of cached tokens.", l,
         static_cast<double>(s.prefix_cache_hits));
  Metric(out, "vllm:num_preemptions_total", "counter", "Cumulative number of preemptions.", l,
         static_cast<double>(s.preemptions));
  Metric(out, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", l,
         static_cast<double>(s.prompt_tokens_total));
  Metric(out, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
         l, static_cast<double>(s.generation_tokens_total));
  Header(out, "vllm:request_success_total", "counter", "Count of finished requests by reason.");
  const std::pair<const char*, uint64_t> reasons[] = {{"stop", s.requests_finished_stop},
                                                      {"length", s.requests_finished_length},
                                                      {"abort", s.requests_finished_abort},
                                                      {"error", s.requests_finished_error}};
  for (const auto& [reason, n] : reasons) {
    Sample(out, "vllm:request_success_total", absl::StrCat(l, ",finished_reason=\"", reason, "\""),
           static_cast<double>(n));
  }
  Metric(out, "r2serve_kv_blocks_total", "gauge", "KV blocks in the pool.", l, s.kv_blocks_total);
  Metric(out, "r2serve_kv_blocks_used", "gauge", "KV blocks referenced by running sequences.", l,
         s.kv_blocks_used);
  Metric(out, "r2serve_kv_blocks_cached", "gauge", "Free KV blocks holding a cached prefix.", l,
         s.kv_blocks_cached);
  Metric(out, "r2serve_engine_steps_total", "counter", "Engine steps run.", l,
         static_cast<double>(s.steps));
  // Request accounting: once every accepted request has ended,
  // accepted == completed + aborted + errored.
  Metric(out, "r2serve_requests_accepted_total", "counter",
         "Requests the engine accepted (queued for scheduling).", l,
         static_cast<double>(s.requests_accepted));
  Metric(out, "r2serve_requests_completed_total", "counter",
         "Accepted requests that ended with finish_reason stop or length.", l,
         static_cast<double>(s.requests_finished_stop + s.requests_finished_length));
  Metric(out, "r2serve_requests_aborted_total", "counter",
         "Accepted requests that ended aborted (client gone, shutdown timeout).", l,
         static_cast<double>(s.requests_finished_abort));
  Metric(out, "r2serve_requests_errored_total", "counter",
         "Accepted requests that ended with an error (engine fault, refused by the scheduler).", l,
         static_cast<double>(s.requests_finished_error));
  Metric(out, "r2serve_kv_pool_integrity_checks_total", "counter",
         "KV pool self-checks, run each time the scheduler turns idle.", l,
         static_cast<double>(s.integrity_checks));
  Metric(out, "r2serve_kv_pool_integrity_failures_total", "counter",
         "KV pool self-checks that failed (each one is an engine fault).", l,
         static_cast<double>(s.integrity_failures));
}

void ServerMetrics::RenderHttp(std::string* out) const {
  absl::MutexLock lock(&mu_);
  Header(out, "r2serve_http_requests_total", "counter", "HTTP requests by method, route, status.");
  for (const auto& [key, n] : http_) {
    const auto& [method, route, status] = key;
    Sample(out, "r2serve_http_requests_total",
           absl::StrCat(labels_, ",method=\"", EscapeLabelValue(method), "\",route=\"",
                        EscapeLabelValue(route), "\",status=\"", status, "\""),
           static_cast<double>(n));
  }
  Metric(out, "r2serve_requests_client_gone_total", "counter",
         "Generations aborted because the client disconnected.", labels_,
         static_cast<double>(client_gone_));
}

std::string ServerMetrics::Render(const engine::EngineStats* stats, bool healthy) const {
  std::string out;
  if (stats != nullptr) RenderEngine(*stats, &out);
  Metric(&out, "r2serve_ready", "gauge", "1 when the server accepts generation requests.", labels_,
         healthy ? 1 : 0);
  Header(&out, "vllm:time_to_first_token_seconds", "histogram", "Time to first token.");
  ttft_.Render("vllm:time_to_first_token_seconds", labels_, &out);
  Header(&out, "vllm:inter_token_latency_seconds", "histogram", "Inter-token latency.");
  itl_.Render("vllm:inter_token_latency_seconds", labels_, &out);
  Header(&out, "vllm:time_per_output_token_seconds", "histogram",
         "Inter-token latency (the older name of vllm:inter_token_latency_seconds).");
  itl_.Render("vllm:time_per_output_token_seconds", labels_, &out);
  Header(&out, "vllm:e2e_request_latency_seconds", "histogram", "End-to-end request latency.");
  e2e_.Render("vllm:e2e_request_latency_seconds", labels_, &out);
  Header(&out, "vllm:request_queue_time_seconds", "histogram",
         "Time from arrival to the first engine step that scheduled the request.");
  queue_.Render("vllm:request_queue_time_seconds", labels_, &out);
  Header(&out, "vllm:request_prefill_time_seconds", "histogram",
         "Time from the first scheduled step to the first token sampled.");
  prefill_.Render("vllm:request_prefill_time_seconds", labels_, &out);
  Header(&out, "vllm:request_decode_time_seconds", "histogram",
         "Time from the first to the last token sampled.");
  decode_.Render("vllm:request_decode_time_seconds", labels_, &out);
  Header(&out, "vllm:request_prompt_tokens", "histogram", "Prompt tokens per finished request.");
  prompt_tokens_.Render("vllm:request_prompt_tokens", labels_, &out);
  Header(&out, "vllm:request_generation_tokens", "histogram",
         "Generated tokens per finished request (all choices).");
  generation_tokens_.Render("vllm:request_generation_tokens", labels_, &out);
  Header(&out, "vllm:iteration_tokens_total", "histogram", "Tokens per engine step.");
  iteration_tokens_.Render("vllm:iteration_tokens_total", labels_, &out);
  RenderHttp(&out);
  return out;
}

}  // namespace r2::server::http

// ServerMetrics: the per-request phase histograms from the engine's timestamps, and the vllm:*
// names API.md lists.
#include "server/http/metrics.h"

#include <map>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace r2::server::http {
namespace {

// "name{labels} value" lines -> value, keyed by "name{labels}".
std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

double Value(const std::map<std::string, double>& samples, const std::string& name,
             const std::string& extra_labels = "") {
  const std::string key = absl::StrCat(name, "{model_name=\"tiny\"", extra_labels, "}");
  auto it = samples.find(key);
  EXPECT_NE(it, samples.end()) << key;
  return it == samples.end() ? -1 : it->second;
}

TEST(ServerMetricsTest, PhaseTimesComeFromTheEngineTimestamps) {
  ServerMetrics metrics("tiny");
  const absl::Time arrival = absl::FromUnixSeconds(1000);
  engine::Usage usage{.prompt_tokens = 12, .completion_tokens = 30, .cached_tokens = 0};
  usage.scheduled_at = arrival + absl::Milliseconds(500);
  usage.first_token_at = arrival + absl::Milliseconds(750);
  usage.last_token_at = arrival + absl::Milliseconds(2750);
  metrics.ObserveFinished(arrival, usage);
  // Never scheduled (aborted while waiting): only the token counts are observed.
  metrics.ObserveFinished(arrival, engine::Usage{.prompt_tokens = 7});

  engine::EngineStats stats;
  const auto samples = Samples(metrics.Render(&stats, true));
  EXPECT_EQ(Value(samples, "vllm:request_queue_time_seconds_count"), 1);
  EXPECT_DOUBLE_EQ(Value(samples, "vllm:request_queue_time_seconds_sum"), 0.5);
  EXPECT_DOUBLE_EQ(Value(samples, "vllm:request_prefill_time_seconds_sum"), 0.25);
  EXPECT_DOUBLE_EQ(Value(samples, "vllm:request_decode_time_seconds_sum"), 2.0);
  EXPECT_EQ(Value(samples, "vllm:request_queue_time_seconds_bucket", ",le=\"0.25\""), 0);
  EXPECT_EQ(Value(samples, "vllm:request_queue_time_seconds_bucket", ",le=\"0.5\""), 1);
  EXPECT_EQ(Value(samples, "vllm:request_queue_time_seconds_bucket", ",le=\"+Inf\""), 1);
  EXPECT_EQ(Value(samples, "vllm:request_prompt_tokens_count"), 2);
  EXPECT_EQ(Value(samples, "vllm:request_prompt_tokens_sum"), 19);
  EXPECT_EQ(Value(samples, "vllm:request_generation_tokens_sum"), 30);
  EXPECT_EQ(Value(samples, "vllm:request_generation_tokens_bucket", ",le=\"20\""), 1);
  EXPECT_EQ(Value(samples, "vllm:request_generation_tokens_bucket", ",le=\"50\""), 2);
}

TEST(ServerMetricsTest, ClockSkewNeverGivesNegativeTimes) {
  ServerMetrics metrics("tiny");
  const absl::Time arrival = absl::FromUnixSeconds(1000);
  engine::Usage usage;
  usage.scheduled_at = arrival - absl::Milliseconds(3);  // scheduled before the front end noted it
  usage.first_token_at = usage.scheduled_at;
  usage.last_token_at = usage.scheduled_at;
  metrics.ObserveFinished(arrival, usage);
  engine::EngineStats stats;
  const auto samples = Samples(metrics.Render(&stats, true));
  EXPECT_EQ(Value(samples, "vllm:request_queue_time_seconds_sum"), 0);
  EXPECT_EQ(Value(samples, "vllm:request_queue_time_seconds_count"), 1);
}

TEST(ServerMetricsTest, EveryVllmNameOfApiMdIsExported) {
  ServerMetrics metrics("tiny");
  engine::EngineStats stats;
  const std::string text = metrics.Render(&stats, true);
  for (const char* name :
       {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc", "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
        "vllm:request_success_total", "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds", "vllm:request_decode_time_seconds",
        "vllm:request_prompt_tokens", "vllm:request_generation_tokens",
        "vllm:iteration_tokens_total"}) {
    EXPECT_NE(text.find(absl::StrCat("# TYPE ", name, " ")), std::string::npos) << name;
  }
  for (const char* histogram :
       {"vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds", "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens", "vllm:time_per_output_token_seconds"}) {
    EXPECT_NE(text.find(absl::StrCat("# TYPE ", histogram, " histogram")), std::string::npos)
        << histogram;
  }
}

}  // namespace
}  // namespace r2::server::http

// Statistics, arrival times, the summary block and the result file of r2serve bench.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/bench/bench.h"

namespace r2::server::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

double StdDev(const std::vector<double>& values) {
  if (values.empty()) return 0;
  const double mean = Mean(values);
  double sum = 0;
  for (double v : values) sum += (v - mean) * (v - mean);
  return std::sqrt(sum / static_cast<double>(values.size()));
}

Distribution Summarize(const std::vector<double>& seconds, const std::vector<double>& ps) {
  Distribution d;
  d.mean = Mean(seconds) * 1000;
  d.median = Percentile(seconds, 50) * 1000;
  d.std = StdDev(seconds) * 1000;
  for (double p : ps) d.percentiles.emplace_back(p, Percentile(seconds, p) * 1000);
  return d;
}

double Tpot(const RequestResult& r) {
  if (r.output_len <= 1) return 0;
  return (r.latency - r.ttft) / static_cast<double>(r.output_len - 1);
}

bool MeetsSlos(const RequestResult& r, const GoodputSlos& slos) {
  if (!r.success) return false;
  if (slos.ttft_ms && r.ttft * 1000 > *slos.ttft_ms) return false;
  if (slos.tpot_ms && Tpot(r) * 1000 > *slos.tpot_ms) return false;
  if (slos.e2el_ms && r.latency * 1000 > *slos.e2el_ms) return false;
  return true;
}

BenchMetrics ComputeMetrics(const std::vector<RequestResult>& results, double duration,
                            const GoodputSlos& slos, const std::vector<double>& percentiles) {
  BenchMetrics m;
  m.duration = duration;
  std::vector<double> ttfts, tpots, itls, e2els;
  int good = 0;
  std::map<int64_t, int64_t> tokens_per_second;  // second since start -> tokens that arrived
  std::map<int64_t, int> active_per_second;      // second since start -> requests in flight
  // Seconds are counted from the first successful request's start (as vllm bench serve does).
  double t0 = std::numeric_limits<double>::infinity();
  for (const RequestResult& r : results) {
    if (r.success) t0 = std::min(t0, r.start_time);
  }
  for (const RequestResult& r : results) {
    if (!r.success) {
      ++m.failed;
      continue;
    }
    ++m.completed;
    m.total_input += r.prompt_len;
    m.total_output += r.output_len;
    ttfts.push_back(r.ttft);
    if (r.output_len > 1) tpots.push_back(Tpot(r));
    itls.insert(itls.end(), r.itl.begin(), r.itl.end());
    e2els.push_back(r.latency);
    if (slos.any() && MeetsSlos(r, slos)) ++good;
    // Token arrival times: the first at ttft, then one per ITL gap. When chunks carried several
    // tokens the rest of output_len is counted at the last chunk.
    double t = r.start_time - t0 + r.ttft;
    int64_t counted = 0;
    if (r.output_len > 0) {
      ++tokens_per_second[static_cast<int64_t>(std::floor(t))];
      ++counted;
    }
    for (double gap : r.itl) {
      t += gap;
      if (counted < r.output_len) {
        ++tokens_per_second[static_cast<int64_t>(std::floor(t))];
        ++counted;
      }
    }
    if (counted < r.output_len) {
      tokens_per_second[static_cast<int64_t>(std::floor(t))] += r.output_len - counted;
    }
    // Peak concurrency: the most requests active during any one second (a request counts in
    // every second it overlaps, so with short requests this exceeds the concurrency cap).
    const int64_t first = static_cast<int64_t>(std::floor(r.start_time - t0));
    const int64_t last = static_cast<int64_t>(std::floor(r.start_time - t0 + r.latency));
    for (int64_t s = first; s <= last; ++s) ++active_per_second[s];
  }
  for (const auto& [s, n] : tokens_per_second) {
    m.max_output_tokens_per_s = std::max(m.max_output_tokens_per_s, static_cast<double>(n));
  }
  for (const auto& [s, n] : active_per_second) {
    m.max_concurrent_requests = std::max(m.max_concurrent_requests, n);
  }
  if (duration > 0) {
    m.request_throughput = m.completed / duration;
    m.request_goodput = good / duration;
    m.output_throughput = static_cast<double>(m.total_output) / duration;
    m.total_token_throughput = static_cast<double>(m.total_input + m.total_output) / duration;
  }
  m.ttft = Summarize(ttfts, percentiles);
  m.tpot = Summarize(tpots, percentiles);
  m.itl = Summarize(itls, percentiles);
  m.e2el = Summarize(e2els, percentiles);
  return m;
}

std::vector<double> ArrivalOffsets(int n, double rate, double burstiness, uint64_t seed) {
  std::vector<double> offsets(std::max(n, 0), 0.0);
  if (n <= 0 || !(rate > 0) || std::isinf(rate)) return offsets;
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gap(burstiness, 1.0 / (rate * burstiness));
  double t = 0;
  for (int i = 1; i < n; ++i) {
    t += gap(rng);
    offsets[i] = t;
  }
  return offsets;
}

namespace {

// "99" for 99, "99.9" for 99.9 (the key and label spelling of vllm bench serve).
std::string PercentileWord(double p) {
  if (p == std::floor(p)) return absl::StrCat(static_cast<int64_t>(p));
  return absl::StrFormat("%g", p);
}

std::string Centered(const std::string& text, char fill) {
  constexpr size_t kWidth = 50;
  if (text.size() >= kWidth) return text;
  const size_t left = (kWidth - text.size()) / 2;
  return std::string(left, fill) + text + std::string(kWidth - text.size() - left, fill);
}

void Row(std::string* out, const std::string& name, const std::string& value) {
  absl::StrAppendFormat(out, "%-40s %-10s\n", name, value);
}
void Row(std::string* out, const std::string& name, double value) {
  Row(out, name, absl::StrFormat("%.2f", value));
}

void Section(std::string* out, const std::string& title, const std::string& abbrev,
             const Distribution& d) {
  absl::StrAppend(out, Centered(title, '-'), "\n");
  Row(out, absl::StrCat("Mean ", abbrev, " (ms):"), d.mean);
  Row(out, absl::StrCat("Median ", abbrev, " (ms):"), d.median);
  for (const auto& [p, v] : d.percentiles) {
    Row(out, absl::StrCat("P", PercentileWord(p), " ", abbrev, " (ms):"), v);
  }
}

void PutDistribution(nlohmann::ordered_json& j, const std::string& name, const Distribution& d) {
  j["mean_" + name + "_ms"] = d.mean;
  j["median_" + name + "_ms"] = d.median;
  j["std_" + name + "_ms"] = d.std;
  for (const auto& [p, v] : d.percentiles) j["p" + PercentileWord(p) + "_" + name + "_ms"] = v;
}

}  // namespace

std::string FormatSummary(const BenchMetrics& m, const BenchOptions& o) {
  std::string out;
  absl::StrAppend(&out, Centered(" Serving Benchmark Result ", '='), "\n");
  Row(&out, "Successful requests:", absl::StrCat(m.completed));
  Row(&out, "Failed requests:", absl::StrCat(m.failed));
  if (o.max_concurrency > 0) {
    Row(&out, "Maximum request concurrency:", absl::StrCat(o.max_concurrency));
  }
  if (o.request_rate > 0) Row(&out, "Request rate configured (RPS):", o.request_rate);
  Row(&out, "Benchmark duration (s):", m.duration);
  Row(&out, "Total input tokens:", absl::StrCat(m.total_input));
  Row(&out, "Total generated tokens:", absl::StrCat(m.total_output));
  Row(&out, "Request throughput (req/s):", m.request_throughput);
  if (o.goodput.any()) Row(&out, "Request goodput (req/s):", m.request_goodput);
  Row(&out, "Output token throughput (tok/s):", m.output_throughput);
  Row(&out, "Peak output token throughput (tok/s):", m.max_output_tokens_per_s);
  Row(&out, "Peak concurrent requests:", absl::StrCat(m.max_concurrent_requests));
  Row(&out, "Total Token throughput (tok/s):", m.total_token_throughput);
  Section(&out, "Time to First Token", "TTFT", m.ttft);
  Section(&out, "Time per Output Token (excl. 1st token)", "TPOT", m.tpot);
  Section(&out, "Inter-token Latency", "ITL", m.itl);
  Section(&out, "End-to-end Latency", "E2EL", m.e2el);
  absl::StrAppend(&out, std::string(50, '='), "\n");
  return out;
}

nlohmann::ordered_json ResultJson(const BenchMetrics& m, const std::vector<RequestResult>& results,
                                  const BenchOptions& o, const std::string& date) {
  nlohmann::ordered_json j;
  j["date"] = date;
  j["backend"] = o.endpoint == "/v1/chat/completions" ? "openai-chat" : "openai";
  j["endpoint_type"] = j["backend"];
  j["model_id"] = o.model;
  j["base_url"] = o.base_url;
  j["endpoint"] = o.endpoint;
  j["num_prompts"] = o.num_prompts;
  if (o.request_rate > 0) {
    j["request_rate"] = o.request_rate;
  } else {
    j["request_rate"] = "inf";
  }
  j["burstiness"] = o.burstiness;
  if (o.max_concurrency > 0) {
    j["max_concurrency"] = o.max_concurrency;
  } else {
    j["max_concurrency"] = nullptr;
  }
  j["seed"] = o.seed;
  j["num_warmups"] = o.warmup;
  j["dataset"] = o.dataset_path.empty() ? "random" : "sharegpt";
  j["random_input_len"] = o.random_input_len;
  j["random_output_len"] = o.random_output_len;
  j["prompt_kind"] = o.prompt_kind == PromptKind::kTokenIds ? "token_ids" : "words";
  if (o.goodput.any()) {
    nlohmann::ordered_json slos = nlohmann::ordered_json::object();
    if (o.goodput.ttft_ms) slos["ttft"] = *o.goodput.ttft_ms;
    if (o.goodput.tpot_ms) slos["tpot"] = *o.goodput.tpot_ms;
    if (o.goodput.e2el_ms) slos["e2el"] = *o.goodput.e2el_ms;
    j["goodput_slos_ms"] = slos;
  }
  j["duration"] = m.duration;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["total_input_tokens"] = m.total_input;
  j["total_output_tokens"] = m.total_output;
  j["request_throughput"] = m.request_throughput;
  if (o.goodput.any()) {
    j["request_goodput"] = m.request_goodput;
  } else {
    j["request_goodput"] = nullptr;
  }
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  auto per_request = [&](auto get) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const RequestResult& r : results) a.push_back(get(r));
    return a;
  };
  j["input_lens"] = per_request([](const RequestResult& r) { return r.prompt_len; });
  j["output_lens"] = per_request([](const RequestResult& r) { return r.output_len; });
  j["ttfts"] = per_request([](const RequestResult& r) { return r.ttft; });
  j["itls"] = per_request([](const RequestResult& r) { return r.itl; });
  j["latencies"] = per_request([](const RequestResult& r) { return r.latency; });
  j["start_times"] = per_request([](const RequestResult& r) { return r.start_time; });
  j["errors"] = per_request([](const RequestResult& r) { return r.error; });
  j["generated_texts"] = per_request([](const RequestResult& r) { return r.generated_text; });
  PutDistribution(j, "ttft", m.ttft);
  PutDistribution(j, "tpot", m.tpot);
  PutDistribution(j, "itl", m.itl);
  PutDistribution(j, "e2el", m.e2el);
  return j;
}

}  // namespace r2::server::bench

#pragma once
// r2serve bench: a load generator for OpenAI-compatible servers. It reproduces the metric
// definitions and result-file keys of `vllm bench serve` (../shared/API.md, section D1) so that
// numbers compare with published ones. This header holds the pieces that need no network (options,
// prompts, arrival times, SSE parsing, statistics, the summary and the result file); client.cc
// drives the requests on Boost.Asio.
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace r2::server::bench {

// ---- options ------------------------------------------------------------------------------------

enum class PromptKind { kTokenIds, kWords };

struct GoodputSlos {  // milliseconds; unset = not part of the goodput test
  std::optional<double> ttft_ms, tpot_ms, e2el_ms;
  bool any() const { return ttft_ms || tpot_ms || e2el_ms; }
};

struct BenchOptions {
  std::string base_url;  // http://host:port
  std::string endpoint = "/v1/completions";
  std::string model;  // empty: the first id of GET /v1/models
  int num_prompts = 1000;
  int max_concurrency = 0;      // 0 = no cap
  double request_rate = 0;      // requests/s; 0 = infinite (all at t=0)
  double burstiness = 1.0;      // gamma shape; 1 = Poisson
  int random_input_len = 1024;  // tokens (ids) or words
  int random_output_len = 128;  // max_tokens, with ignore_eos
  std::string dataset_path;     // ShareGPT json; empty = random prompts
  uint64_t seed = 0;
  int warmup = 0;
  std::string result_file;  // empty = no file
  std::string api_key;
  GoodputSlos goodput;
  std::vector<double> percentiles = {90, 99};  // --metric-percentiles
  PromptKind prompt_kind = PromptKind::kTokenIds;
  int token_id_low = 10, token_id_high = 1000;  // random ids drawn from [low, high)
  bool ignore_eos = true;
  double timeout_s = 600;  // per request
  bool progress = true;    // live line when stderr is a terminal
  // The PNG plot: --plot PATH, or beside the result file (out.json -> out.png) unless --no-plot.
  std::string plot_file;                     // empty = no plot
  int plot_width = 1280, plot_height = 900;  // --plot-size WxH, pixels
};

// argv[0] is the subcommand. Accepts --flag value and --flag=value, dashes or underscores;
// --goodput takes one or more KEY:MS words. Errors name the flag.
absl::StatusOr<BenchOptions> ParseBenchOptions(int argc, char** argv);
std::string BenchUsage();

// ---- prompts ------------------------------------------------------------------------------------

struct Prompt {
  nlohmann::json prompt;  // token-id array or string
  int input_len = 0;      // tokens (ids) or words (until the server's usage says)
  int output_len = 0;     // max_tokens
};

// num random prompts from `seed`: token ids uniform in [low, high) for kTokenIds, or words of a
// fixed list for kWords (the server's tokenizer decides their token count).
std::vector<Prompt> RandomPrompts(const BenchOptions& o, int num);
// ShareGPT format: [{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}].
// The first human turn is the prompt; output_len is the random output length. Entries in file
// order, cycled to `num`.
absl::StatusOr<std::vector<Prompt>> ShareGptPrompts(const std::string& path, const BenchOptions& o,
                                                    int num);

// The JSON body of one streaming request.
nlohmann::json RequestBody(const BenchOptions& o, const Prompt& p);

// ---- arrivals -----------------------------------------------------------------------------------

// Send offsets in seconds from the start, n of them, non-decreasing. rate <= 0 or infinite: all 0.
// Otherwise gaps are gamma(shape = burstiness, scale = 1 / (rate * burstiness)): exponential
// (Poisson arrivals) when burstiness = 1, mean gap 1/rate always. The first request goes at 0.
std::vector<double> ArrivalOffsets(int n, double rate, double burstiness, uint64_t seed);

// ---- SSE ----------------------------------------------------------------------------------------

// Incremental Server-Sent Events parser (the rules openai-python follows): events end at a blank
// line (\n\n, \r\r or \r\n\r\n); several data: lines join with \n; lines starting with ':' are
// comments; other fields are ignored.
class SseParser {
 public:
  // Appends the data of every event completed by `bytes` to `events`.
  void Feed(std::string_view bytes, std::vector<std::string>* events);

 private:
  void Line(std::string_view line, std::vector<std::string>* events);
  std::string partial_;  // an unfinished line
  std::string data_;
  bool has_data_ = false;
  bool last_was_cr_ = false;
};

// What one SSE data payload says, for the completions and chat endpoints.
struct StreamEvent {
  bool done = false;        // [DONE]
  bool has_choice = false;  // a non-empty choices array: a token event (text may be empty)
  std::string text;         // text, delta.content, or delta.reasoning_content
  std::optional<int64_t> prompt_tokens, completion_tokens;  // usage
  std::optional<std::string> error;                         // an error event's message
};
absl::StatusOr<StreamEvent> ParseStreamEvent(std::string_view data);

// ---- statistics ---------------------------------------------------------------------------------

struct RequestResult {
  bool success = false;
  int64_t prompt_len = 0;
  int64_t output_len = 0;
  double start_time = 0;    // seconds since the benchmark start
  double ttft = 0;          // seconds
  double latency = 0;       // seconds, send to the end of the stream
  std::vector<double> itl;  // seconds, gaps between token events (chunks with a choice)
  std::string generated_text;
  std::string error;
};

// numpy.percentile's default (linear interpolation between closest ranks). 0 for no values.
double Percentile(std::vector<double> values, double p);
double Mean(const std::vector<double>& values);
double StdDev(const std::vector<double>& values);  // population (numpy.std)

struct Distribution {  // milliseconds
  double mean = 0, median = 0, std = 0;
  std::vector<std::pair<double, double>> percentiles;  // (p, value)
};
Distribution Summarize(const std::vector<double>& seconds, const std::vector<double>& ps);

struct BenchMetrics {
  int completed = 0, failed = 0;
  int64_t total_input = 0, total_output = 0;
  double duration = 0;
  double request_throughput = 0, request_goodput = 0, output_throughput = 0,
         total_token_throughput = 0, max_output_tokens_per_s = 0;
  int max_concurrent_requests = 0;
  Distribution ttft, tpot, itl, e2el;
};

// TPOT of a request: (latency - ttft) / (output_len - 1), 0 for one output token.
double Tpot(const RequestResult& r);
bool MeetsSlos(const RequestResult& r, const GoodputSlos& slos);
BenchMetrics ComputeMetrics(const std::vector<RequestResult>& results, double duration,
                            const GoodputSlos& slos, const std::vector<double>& percentiles);

// The summary block (vllm bench serve's layout).
std::string FormatSummary(const BenchMetrics& m, const BenchOptions& o);
// The result file: D1's keys plus the options that shaped the run.
nlohmann::ordered_json ResultJson(const BenchMetrics& m, const std::vector<RequestResult>& results,
                                  const BenchOptions& o, const std::string& date);

// ---- plot ---------------------------------------------------------------------------------------

// Throughput over time, in equal buckets from the first successful request's start to the last
// one's end: completed requests (at their end) and output tokens (at their arrival, the rule of
// ComputeMetrics' peak) per bucket, divided by the bucket width. The width is a 1-2-5 step chosen
// for at most max_buckets buckets. Empty when no request succeeded.
struct ThroughputSeries {
  double bucket_s = 1;
  std::vector<double> requests_per_s, output_tokens_per_s;
};
ThroughputSeries ThroughputOverTime(const std::vector<RequestResult>& results, int max_buckets);

// The load in words for the plot's title: "8 concurrent, rate inf, 200 requests, random input 128
// / output 64".
std::string LoadDescription(const BenchOptions& o);

// The plot beside a result file: its path with the extension replaced by .png (or .png appended).
std::string PlotPathBeside(const std::string& result_file);

// Writes a PNG of o.plot_width x o.plot_height: the p50/p90/p99 of TTFT, TPOT, ITL and E2EL (ms)
// from the successful requests, and requests and output tokens per second over time, titled with
// the endpoint, model, load and `date`. Errors name the path (unwritable, size too large).
absl::Status WritePlot(const std::string& path, const std::vector<RequestResult>& results,
                       const BenchMetrics& m, const BenchOptions& o, const std::string& date);

// ---- running ------------------------------------------------------------------------------------

struct RunOutput {
  std::vector<RequestResult> results;
  double duration = 0;
};
// Runs the requests (warm-up is the caller's: a separate run). Fails only when nothing can
// start (bad URL, unresolvable host).
absl::StatusOr<RunOutput> RunBenchmark(const BenchOptions& o, const std::vector<Prompt>& prompts);
// GET /v1/models, the first model id.
absl::StatusOr<std::string> DiscoverModel(const BenchOptions& o);

}  // namespace r2::server::bench

// r2serve bench without a network: statistics, goodput, arrival times, SSE parsing, options and
// the result file's keys (API.md D1).
#include "server/bench/bench.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/test_paths.h"

namespace r2::server::bench {
namespace {

TEST(Percentile, LinearInterpolationLikeNumpy) {
  const std::vector<double> v = {4, 1, 3, 2};  // sorted 1 2 3 4
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 3.7);  // numpy.percentile([1,2,3,4], 90)
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(Percentile({}, 99), 0);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
}

TEST(Stats, MeanAndPopulationStd) {
  EXPECT_DOUBLE_EQ(Mean({2, 4, 4, 4, 5, 5, 7, 9}), 5);
  EXPECT_DOUBLE_EQ(StdDev({2, 4, 4, 4, 5, 5, 7, 9}), 2);
  EXPECT_DOUBLE_EQ(Mean({}), 0);
}

RequestResult Ok(double start, double ttft, std::vector<double> itl, int64_t out, int64_t in = 10) {
  RequestResult r;
  r.success = true;
  r.start_time = start;
  r.ttft = ttft;
  r.itl = std::move(itl);
  r.latency = ttft;
  for (double g : r.itl) r.latency += g;
  r.output_len = out;
  r.prompt_len = in;
  return r;
}

TEST(Stats, TpotExcludesTheFirstToken) {
  RequestResult r = Ok(0, 0.1, {0.02, 0.02, 0.02, 0.02}, 5);
  EXPECT_NEAR(Tpot(r), 0.02, 1e-12);  // (0.18 - 0.1) / 4
  RequestResult one = Ok(0, 0.1, {}, 1);
  EXPECT_EQ(Tpot(one), 0);
}

TEST(Stats, MetricsOverRequests) {
  std::vector<RequestResult> rs = {Ok(0, 0.1, {0.01, 0.01}, 3), Ok(0.5, 0.3, {0.03, 0.03}, 3)};
  RequestResult bad;
  bad.error = "HTTP 500: boom";
  rs.push_back(bad);
  BenchMetrics m = ComputeMetrics(rs, 2.0, {}, {50, 99});
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.total_input, 20);
  EXPECT_EQ(m.total_output, 6);
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(m.output_throughput, 3.0);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 13.0);
  EXPECT_NEAR(m.ttft.mean, 200, 1e-9);
  EXPECT_NEAR(m.ttft.median, 200, 1e-9);
  EXPECT_NEAR(m.ttft.std, 100, 1e-9);
  EXPECT_NEAR(m.tpot.mean, 20, 1e-9);
  EXPECT_NEAR(m.itl.mean, 20, 1e-9);
  EXPECT_NEAR(m.e2el.mean, (120 + 360) / 2.0, 1e-9);
  ASSERT_EQ(m.ttft.percentiles.size(), 2u);
  EXPECT_NEAR(m.ttft.percentiles[1].second, 298, 1e-9);
  // Both requests run within second 0; all six tokens arrive in second 0.
  EXPECT_EQ(m.max_concurrent_requests, 2);
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 6);
}

TEST(Stats, PeaksPerSecondFromTheFirstStart) {
  // Starts at 10.5 s and 11.2 s; seconds count from 10.5. Request A: a token at 10.6 (second 0),
  // one at 11.6 and the 2 more of its last chunk (second 1). B: one token at 12.0 (second 1).
  std::vector<RequestResult> rs = {Ok(10.5, 0.1, {1.0}, 4), Ok(11.2, 0.8, {}, 1)};
  BenchMetrics m = ComputeMetrics(rs, 3.0, {}, {99});
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 4);
  EXPECT_EQ(m.max_concurrent_requests, 2);  // both active during second 1
  rs[1].start_time = 13.0;                  // second 2, after A ended at 11.6
  EXPECT_EQ(ComputeMetrics(rs, 3.0, {}, {99}).max_concurrent_requests, 1);
}

TEST(Stats, GoodputCountsRequestsMeetingEverySlo) {
  std::vector<RequestResult> rs = {Ok(0, 0.1, {0.01, 0.01}, 3),   // ttft 100 tpot 10 e2el 120
                                   Ok(0, 0.3, {0.01, 0.01}, 3),   // ttft 300
                                   Ok(0, 0.1, {0.05, 0.05}, 3)};  // tpot 50
  GoodputSlos slos;
  slos.ttft_ms = 200;
  slos.tpot_ms = 20;
  BenchMetrics m = ComputeMetrics(rs, 2.0, slos, {99});
  EXPECT_DOUBLE_EQ(m.request_goodput, 0.5);
  slos.e2el_ms = 100;  // now none passes
  EXPECT_DOUBLE_EQ(ComputeMetrics(rs, 2.0, slos, {99}).request_goodput, 0);
  EXPECT_FALSE(MeetsSlos(RequestResult{}, GoodputSlos{}));  // failures never count
}

TEST(Arrivals, InfiniteRateSendsAllAtZero) {
  for (double t : ArrivalOffsets(5, 0, 1, 1)) EXPECT_EQ(t, 0);
  for (double t : ArrivalOffsets(5, INFINITY, 1, 1)) EXPECT_EQ(t, 0);
}

TEST(Arrivals, SeededMonotoneAndMeanGapIsOneOverRate) {
  const std::vector<double> a = ArrivalOffsets(20000, 50, 1, 7);
  EXPECT_EQ(a, ArrivalOffsets(20000, 50, 1, 7));
  EXPECT_NE(a, ArrivalOffsets(20000, 50, 1, 8));
  EXPECT_EQ(a[0], 0);
  std::vector<double> gaps;
  for (size_t i = 1; i < a.size(); ++i) {
    ASSERT_GE(a[i], a[i - 1]);
    gaps.push_back(a[i] - a[i - 1]);
  }
  EXPECT_NEAR(Mean(gaps), 1.0 / 50, 0.02 / 50 * 3);
  // Exponential gaps: coefficient of variation 1.
  EXPECT_NEAR(StdDev(gaps) / Mean(gaps), 1.0, 0.05);
}

TEST(Arrivals, GammaBurstinessChangesVarianceNotMean) {
  for (double b : {0.25, 4.0}) {
    const std::vector<double> a = ArrivalOffsets(40000, 10, b, 3);
    std::vector<double> gaps;
    for (size_t i = 1; i < a.size(); ++i) gaps.push_back(a[i] - a[i - 1]);
    EXPECT_NEAR(Mean(gaps), 0.1, 0.1 * 0.05) << b;
    // gamma(k): CV = 1/sqrt(k).
    EXPECT_NEAR(StdDev(gaps) / Mean(gaps), 1 / std::sqrt(b), 0.1 / std::sqrt(b)) << b;
  }
}

TEST(Sse, SplitsEventsAcrossFeedsAndLineEndings) {
  SseParser p;
  std::vector<std::string> events;
  p.Feed("data: {\"a\":", &events);
  EXPECT_TRUE(events.empty());
  p.Feed("1}\n", &events);
  EXPECT_TRUE(events.empty());  // not dispatched before the blank line
  p.Feed("\ndata: x\r\n\r\n: keep-alive\n\ndata: y\r\rdata: l1\ndata: l2\n\n", &events);
  p.Feed("event: message\nid: 3\ndata:nospace\n", &events);
  p.Feed("\n", &events);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0], "{\"a\":1}");
  EXPECT_EQ(events[1], "x");
  EXPECT_EQ(events[2], "y");
  EXPECT_EQ(events[3], "l1\nl2");
  EXPECT_EQ(events[4], "nospace");
}

TEST(Sse, CrLfSplitBetweenFeeds) {
  SseParser p;
  std::vector<std::string> events;
  p.Feed("data: a\r", &events);
  p.Feed("\n\r", &events);
  p.Feed("\n", &events);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0], "a");
}

TEST(StreamEvent, CompletionChatUsageErrorDone) {
  auto c = ParseStreamEvent(R"({"choices":[{"index":0,"text":"hi","finish_reason":null}]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->text, "hi");
  EXPECT_TRUE(c->has_choice);
  auto empty = ParseStreamEvent(R"({"choices":[{"index":0,"text":""}]})");
  EXPECT_TRUE(empty->has_choice);  // a token whose text is not complete yet still counts
  auto chat = ParseStreamEvent(R"({"choices":[{"delta":{"role":"assistant","content":"yo"}}]})");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->text, "yo");
  auto reasoning = ParseStreamEvent(R"({"choices":[{"delta":{"reasoning_content":"hm"}}]})");
  EXPECT_EQ(reasoning->text, "hm");
  auto usage = ParseStreamEvent(
      R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}})");
  ASSERT_TRUE(usage.ok());
  EXPECT_TRUE(usage->text.empty());
  EXPECT_FALSE(usage->has_choice);
  EXPECT_EQ(usage->prompt_tokens, 7);
  EXPECT_EQ(usage->completion_tokens, 5);
  auto err = ParseStreamEvent(R"({"error":{"message":"engine failed","type":"server_error"}})");
  ASSERT_TRUE(err.ok());
  EXPECT_EQ(err->error, "engine failed");
  auto done = ParseStreamEvent("[DONE]");
  EXPECT_TRUE(done->done);
  EXPECT_FALSE(ParseStreamEvent("{not json").ok());
  EXPECT_FALSE(ParseStreamEvent("[1,2]").ok());
}

absl::StatusOr<BenchOptions> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "bench");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return ParseBenchOptions(static_cast<int>(argv.size()), argv.data());
}

TEST(Options, ParsesTheDocumentedFlags) {
  auto o = Parse({"--base-url",
                  "http://127.0.0.1:8000/",
                  "--num-prompts=32",
                  "--max_concurrency",
                  "4",
                  "--request-rate",
                  "2.5",
                  "--burstiness",
                  "0.5",
                  "--random-input-len",
                  "64",
                  "--random-output-len",
                  "16",
                  "--seed",
                  "9",
                  "--warmup",
                  "2",
                  "--goodput",
                  "ttft:500",
                  "tpot:50",
                  "--result-file",
                  "/tmp/x.json",
                  "--api-key",
                  "k",
                  "--metric-percentiles",
                  "50,90,99.9"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->base_url, "http://127.0.0.1:8000");
  EXPECT_EQ(o->num_prompts, 32);
  EXPECT_EQ(o->max_concurrency, 4);
  EXPECT_DOUBLE_EQ(o->request_rate, 2.5);
  EXPECT_DOUBLE_EQ(o->burstiness, 0.5);
  EXPECT_EQ(o->random_input_len, 64);
  EXPECT_EQ(o->random_output_len, 16);
  EXPECT_EQ(o->seed, 9u);
  EXPECT_EQ(o->warmup, 2);
  EXPECT_EQ(o->goodput.ttft_ms, 500);
  EXPECT_EQ(o->goodput.tpot_ms, 50);
  EXPECT_FALSE(o->goodput.e2el_ms);
  EXPECT_EQ(o->result_file, "/tmp/x.json");
  EXPECT_EQ(o->api_key, "k");
  EXPECT_EQ(o->percentiles, (std::vector<double>{50, 90, 99.9}));
}

TEST(Options, ErrorsNameTheFlag) {
  auto expect_error = [](std::vector<std::string> args, const std::string& needle) {
    auto o = Parse(args);
    ASSERT_FALSE(o.ok());
    EXPECT_NE(std::string(o.status().message()).find(needle), std::string::npos)
        << o.status().message();
  };
  expect_error({"--num-prompts", "3"}, "--base-url is required");
  expect_error({"--base-url", "https://x"}, "--base-url");
  expect_error({"--base-url", "http://x", "--num-prompts", "zero"}, "--num-prompts");
  expect_error({"--base-url", "http://x", "--max-concurrency", "0"}, "--max-concurrency");
  expect_error({"--base-url", "http://x", "--goodput", "ttfb:3"}, "--goodput");
  expect_error({"--base-url", "http://x", "--goodput"}, "--goodput");
  expect_error({"--base-url", "http://x", "--bogus", "1"}, "unknown flag '--bogus'");
  expect_error({"--base-url", "http://x", "--seed"}, "--seed needs a value");
  expect_error({"--base-url", "http://x", "--endpoint", "/v1/foo"}, "--endpoint");
}

TEST(Prompts, RandomTokenIdsAreSeededAndInRange) {
  BenchOptions o;
  o.random_input_len = 50;
  o.random_output_len = 7;
  o.seed = 1;
  o.token_id_low = 10;
  o.token_id_high = 20;
  std::vector<Prompt> a = RandomPrompts(o, 3), b = RandomPrompts(o, 3);
  ASSERT_EQ(a.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].prompt, b[i].prompt);
    ASSERT_EQ(a[i].prompt.size(), 50u);
    for (int id : a[i].prompt) {
      EXPECT_GE(id, 10);
      EXPECT_LT(id, 20);
    }
    EXPECT_EQ(a[i].output_len, 7);
  }
  EXPECT_NE(a[0].prompt, a[1].prompt);
  nlohmann::json body = RequestBody(o, a[0]);
  EXPECT_EQ(body["max_tokens"], 7);
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_EQ(body["ignore_eos"], true);
  o.endpoint = "/v1/chat/completions";
  o.prompt_kind = PromptKind::kWords;
  Prompt words = RandomPrompts(o, 1)[0];
  ASSERT_TRUE(words.prompt.is_string());
  const std::string text = words.prompt.get<std::string>();
  EXPECT_EQ(std::count(text.begin(), text.end(), ' '), 49);
  body = RequestBody(o, words);
  EXPECT_EQ(body["messages"][0]["content"], words.prompt);
  EXPECT_EQ(body["max_completion_tokens"], 7);
}

TEST(Prompts, ShareGptFirstHumanTurnCycledAndClearErrors) {
  const std::string dir = r2::testing::MakeTempDir("bench_sharegpt");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  BenchOptions o;
  o.random_output_len = 9;
  const std::string good = write("good.json", R"([
    {"conversations": [{"from": "gpt", "value": "skip"}, {"from": "human", "value": "a b c"}]},
    {"conversations": []},
    {"id": 3},
    {"conversations": [{"from": "human", "value": "hello"}]}])");
  auto prompts = ShareGptPrompts(good, o, 3);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  ASSERT_EQ(prompts->size(), 3u);
  EXPECT_EQ((*prompts)[0].prompt, "a b c");
  EXPECT_EQ((*prompts)[0].input_len, 3);
  EXPECT_EQ((*prompts)[1].prompt, "hello");
  EXPECT_EQ((*prompts)[2].prompt, "a b c");
  EXPECT_EQ((*prompts)[2].output_len, 9);
  auto missing = ShareGptPrompts(dir + "/nope.json", o, 1);
  EXPECT_NE(std::string(missing.status().message()).find("cannot open"), std::string::npos);
  auto object = ShareGptPrompts(write("obj.json", "{\"a\": 1}"), o, 1);
  EXPECT_NE(std::string(object.status().message()).find("not a JSON array"), std::string::npos);
  auto broken = ShareGptPrompts(write("broken.json", "[{"), o, 1);
  EXPECT_FALSE(broken.ok());
  auto none = ShareGptPrompts(write("none.json", R"([{"conversations": []}])"), o, 1);
  EXPECT_NE(std::string(none.status().message()).find("no conversation with a human turn"),
            std::string::npos);
}

TEST(Result, HasEveryD1Key) {
  std::vector<RequestResult> rs = {Ok(0, 0.1, {0.01, 0.01}, 3)};
  BenchOptions o;
  o.model = "tiny";
  o.percentiles = {90, 99, 99.9};
  o.goodput.ttft_ms = 1000;
  BenchMetrics m = ComputeMetrics(rs, 1.0, o.goodput, o.percentiles);
  nlohmann::ordered_json j = ResultJson(m, rs, o, "20261128-180000");
  std::vector<std::string> keys = {"date",
                                   "model_id",
                                   "num_prompts",
                                   "request_rate",
                                   "burstiness",
                                   "max_concurrency",
                                   "duration",
                                   "completed",
                                   "failed",
                                   "total_input_tokens",
                                   "total_output_tokens",
                                   "request_throughput",
                                   "request_goodput",
                                   "output_throughput",
                                   "total_token_throughput",
                                   "max_output_tokens_per_s",
                                   "max_concurrent_requests",
                                   "input_lens",
                                   "output_lens",
                                   "ttfts",
                                   "itls",
                                   "latencies",
                                   "start_times",
                                   "errors",
                                   "generated_texts"};
  for (const char* metric : {"ttft", "tpot", "itl", "e2el"}) {
    for (const char* stat : {"mean", "median", "std", "p90", "p99", "p99.9"}) {
      keys.push_back(std::string(stat) + "_" + metric + "_ms");
    }
  }
  for (const std::string& k : keys) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["completed"], 1);
  EXPECT_DOUBLE_EQ(j["request_goodput"].get<double>(), 1.0);
  EXPECT_EQ(j["itls"][0].size(), 2u);
  const std::string summary = FormatSummary(m, o);
  for (const char* line :
       {"============ Serving Benchmark Result ============",
        "Successful requests:                     1", "Request goodput (req/s):", "Mean TTFT (ms):",
        "P99.9 ITL (ms):", "-----Time per Output Token (excl. 1st token)------"}) {
    EXPECT_NE(summary.find(line), std::string::npos) << line << "\n" << summary;
  }
}

// ---- plot ---------------------------------------------------------------------------------------

namespace plot {

TEST(Plot, ThroughputBucketsCountEndsAndTokenArrivals) {
  // A: tokens at 0.05, 0.15, 0.25, ends at 0.25. B: starts at 1.0, chunks at 1.05 and 1.15 with
  // four tokens (the two the chunks did not count arrive with the last), ends at 1.15.
  std::vector<RequestResult> rs = {Ok(0, 0.05, {0.1, 0.1}, 3), Ok(1.0, 0.05, {0.1}, 4)};
  RequestResult failed;
  failed.start_time = 0.5;
  failed.latency = 3;  // failures neither count nor stretch the time axis
  rs.push_back(failed);
  const ThroughputSeries s = ThroughputOverTime(rs, 6);  // span 1.15 s -> 0.2 s buckets
  EXPECT_DOUBLE_EQ(s.bucket_s, 0.2);
  ASSERT_EQ(s.requests_per_s.size(), 6u);
  ASSERT_EQ(s.output_tokens_per_s.size(), 6u);
  const std::vector<double> req = {0, 5, 0, 0, 0, 5}, tok = {10, 5, 0, 0, 0, 20};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(s.requests_per_s[i], req[i], 1e-9) << i;
    EXPECT_NEAR(s.output_tokens_per_s[i], tok[i], 1e-9) << i;
  }
  EXPECT_TRUE(ThroughputOverTime({failed}, 6).requests_per_s.empty());
}

TEST(Plot, PathBesideTheResultFileAndFlags) {
  EXPECT_EQ(PlotPathBeside("out.json"), "out.png");
  EXPECT_EQ(PlotPathBeside("/tmp/run.v2/out"), "/tmp/run.v2/out.png");
  EXPECT_EQ(PlotPathBeside("a/b.c.json"), "a/b.c.png");
  auto beside = Parse({"--base-url", "http://x", "--result-file", "/tmp/r.json"});
  ASSERT_TRUE(beside.ok()) << beside.status();
  EXPECT_EQ(beside->plot_file, "/tmp/r.png");
  auto none = Parse({"--base-url", "http://x", "--result-file", "/tmp/r.json", "--no-plot"});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->plot_file, "");
  auto plain = Parse({"--base-url", "http://x"});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->plot_file, "");
  auto explicit_plot = Parse({"--base-url", "http://x", "--result-file", "/tmp/r.json", "--plot",
                              "/tmp/p.png", "--plot-size", "800x600"});
  ASSERT_TRUE(explicit_plot.ok()) << explicit_plot.status();
  EXPECT_EQ(explicit_plot->plot_file, "/tmp/p.png");
  EXPECT_EQ(explicit_plot->plot_width, 800);
  EXPECT_EQ(explicit_plot->plot_height, 600);
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--base-url", "http://x", "--plot", "p.png", "--no-plot"},
        std::vector<std::string>{"--base-url", "http://x", "--plot-size", "100x100"},
        std::vector<std::string>{"--base-url", "http://x", "--plot-size", "wide"}}) {
    auto o = Parse(bad);
    ASSERT_FALSE(o.ok()) << bad.back();
    EXPECT_NE(std::string(o.status().message()).find("--plot"), std::string::npos)
        << o.status().message();
  }
}

TEST(Plot, LoadDescriptionNamesTheLoad) {
  BenchOptions o;
  o.max_concurrency = 8;
  o.num_prompts = 200;
  o.random_input_len = 128;
  o.random_output_len = 64;
  EXPECT_EQ(LoadDescription(o),
            "concurrency 8, rate inf, 200 requests, random input 128 / output 64");
  o.max_concurrency = 0;
  o.request_rate = 2.5;
  o.burstiness = 0.5;
  EXPECT_EQ(LoadDescription(o),
            "rate 2.50 req/s (burstiness 0.5), 200 requests, random input 128 / output 64");
}

struct Decoded {
  int width = 0, height = 0;
  int64_t non_background = 0;
  std::vector<uint32_t> pixels;  // 0x00RRGGBB
};

Decoded DecodePng(const std::string& path) {
  Decoded d;
  cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
  EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS)
      << path << ": " << cairo_status_to_string(cairo_surface_status(s));
  if (cairo_surface_status(s) == CAIRO_STATUS_SUCCESS) {
    cairo_surface_flush(s);
    d.width = cairo_image_surface_get_width(s);
    d.height = cairo_image_surface_get_height(s);
    const int stride = cairo_image_surface_get_stride(s);
    const unsigned char* data = cairo_image_surface_get_data(s);
    for (int y = 0; y < d.height; ++y) {
      const uint32_t* row = reinterpret_cast<const uint32_t*>(data + y * stride);
      for (int x = 0; x < d.width; ++x) {
        const uint32_t rgb = row[x] & 0xFFFFFF;
        d.pixels.push_back(rgb);
        if (rgb != 0xFFFFFF) ++d.non_background;
      }
    }
  }
  cairo_surface_destroy(s);
  return d;
}

// Pixels within 3 levels per channel of the colour (r, g, b in [0, 1]).
int64_t CountColor(const Decoded& d, double r, double g, double b) {
  const int want[3] = {static_cast<int>(r * 255 + 0.5), static_cast<int>(g * 255 + 0.5),
                       static_cast<int>(b * 255 + 0.5)};
  int64_t n = 0;
  for (uint32_t p : d.pixels) {
    const int have[3] = {static_cast<int>(p >> 16 & 0xFF), static_cast<int>(p >> 8 & 0xFF),
                         static_cast<int>(p & 0xFF)};
    bool close = true;
    for (int c = 0; c < 3; ++c) close = close && std::abs(have[c] - want[c]) <= 3;
    n += close;
  }
  return n;
}

TEST(Plot, WritesAPngOfTheStatedSizeWithBarsAndLines) {
  std::vector<RequestResult> rs;
  for (int i = 0; i < 40; ++i) {
    rs.push_back(Ok(0.05 * i, 0.02 + 0.001 * i, std::vector<double>(15, 0.004 + 0.0001 * i), 16));
  }
  BenchOptions o;
  o.base_url = "http://127.0.0.1:8000";
  o.model = "tiny";
  o.max_concurrency = 4;
  o.num_prompts = 40;
  o.plot_width = 1000;
  o.plot_height = 700;
  const BenchMetrics m = ComputeMetrics(rs, 2.6, {}, o.percentiles);
  const std::string path = r2::testing::MakeTempDir("bench_plot") + "/plot.png";
  ASSERT_TRUE(WritePlot(path, rs, m, o, "2026-11-28 19:00:00 UTC").ok());
  const Decoded d = DecodePng(path);
  EXPECT_EQ(d.width, 1000);
  EXPECT_EQ(d.height, 700);
  // Not a blank canvas: axes, text, bars and lines cover a few percent of it.
  EXPECT_GT(d.non_background, 1000 * 700 / 50) << d.non_background;
  EXPECT_LT(d.non_background, 1000 * 700 / 2) << d.non_background;
  // The p50, p90 and p99 bars (solid fills) and both throughput lines are drawn.
  EXPECT_GT(CountColor(d, 0.62, 0.79, 0.90), 400);
  EXPECT_GT(CountColor(d, 0.26, 0.55, 0.79), 400);
  EXPECT_GT(CountColor(d, 0.06, 0.27, 0.52), 400);
  EXPECT_GT(CountColor(d, 0.13, 0.47, 0.71), 100);
  EXPECT_GT(CountColor(d, 0.90, 0.45, 0.05), 100);
}

TEST(Plot, AllFailedStillPlotsAndBadPathsAreErrors) {
  RequestResult failed;
  failed.error = "HTTP 503";
  BenchOptions o;
  o.base_url = "http://x";
  const BenchMetrics m = ComputeMetrics({failed}, 1.0, {}, o.percentiles);
  const std::string path = r2::testing::MakeTempDir("bench_plot_failed") + "/failed.png";
  ASSERT_TRUE(WritePlot(path, {failed}, m, o, "today").ok());
  const Decoded d = DecodePng(path);
  EXPECT_EQ(d.width, o.plot_width);
  EXPECT_EQ(d.height, o.plot_height);
  EXPECT_GT(d.non_background, 0);
  EXPECT_EQ(CountColor(d, 0.26, 0.55, 0.79), 0);  // no bars without data

  const absl::Status bad = WritePlot("/nonexistent-dir/p.png", {failed}, m, o, "today");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.message()).find("/nonexistent-dir/p.png"), std::string::npos)
      << bad.message();
}

}  // namespace plot

}  // namespace
}  // namespace r2::server::bench

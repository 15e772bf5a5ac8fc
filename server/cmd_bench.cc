// r2serve bench: load generator for OpenAI-compatible servers (see server/bench/bench.h).
//
//   r2serve bench --base-url http://127.0.0.1:8000 --num-prompts 32 --max-concurrency 4 \
//       --random-input-len 64 --random-output-len 32 --result-file out.json
//
// writes out.json and, beside it, out.png (the plot; --plot PATH elsewhere, --no-plot for none).
//
// Exit status: 0 when the run finished (failed requests are reported, not fatal), 1 when it could
// not run (bad flags, server unreachable, result file or plot not writable).
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "server/bench/bench.h"
#include "server/command.h"

namespace r2::server {
namespace {

// `format` of the UTC time `now` (strftime).
std::string UtcDate(std::time_t now, const char* format) {
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), format, &tm);
  return buf;
}

int RunBench(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "-help") {
      std::fputs(bench::BenchUsage().c_str(), stdout);
      return 0;
    }
  }
  absl::StatusOr<bench::BenchOptions> options = bench::ParseBenchOptions(argc, argv);
  if (!options.ok()) {
    std::fprintf(stderr, "r2serve bench: %s\n\n%s", std::string(options.status().message()).c_str(),
                 bench::BenchUsage().c_str());
    return 1;
  }
  bench::BenchOptions& o = *options;
  if (o.model.empty()) {
    absl::StatusOr<std::string> model = bench::DiscoverModel(o);
    if (!model.ok()) {
      std::fprintf(stderr, "r2serve bench: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    o.model = *model;
  }
  const int total = o.num_prompts + o.warmup;
  std::vector<bench::Prompt> prompts;
  if (!o.dataset_path.empty()) {
    absl::StatusOr<std::vector<bench::Prompt>> loaded =
        bench::ShareGptPrompts(o.dataset_path, o, total);
    if (!loaded.ok()) {
      std::fprintf(stderr, "r2serve bench: %s\n", std::string(loaded.status().message()).c_str());
      return 1;
    }
    prompts = std::move(*loaded);
  } else {
    prompts = bench::RandomPrompts(o, total);
  }
  // Warm-up requests use the last `warmup` prompts so that the measured ones do not depend on it.
  std::vector<bench::Prompt> measured(prompts.begin(), prompts.begin() + o.num_prompts);
  std::vector<bench::Prompt> warm(prompts.begin() + o.num_prompts, prompts.end());
  bench::BenchOptions run_options = o;
  absl::StatusOr<bench::RunOutput> run;
  if (!warm.empty()) {
    bench::BenchOptions warm_options = o;
    warm_options.warmup = 0;
    warm_options.request_rate = 0;
    warm_options.progress = false;
    absl::StatusOr<bench::RunOutput> w = bench::RunBenchmark(warm_options, warm);
    if (!w.ok()) {
      std::fprintf(stderr, "r2serve bench: %s\n", std::string(w.status().message()).c_str());
      return 1;
    }
    for (const bench::RequestResult& r : w->results) {
      if (!r.success) {
        std::fprintf(stderr, "r2serve bench: a warm-up request failed: %s\n", r.error.c_str());
        break;
      }
    }
  }
  run_options.warmup = 0;
  run = bench::RunBenchmark(run_options, measured);
  if (!run.ok()) {
    std::fprintf(stderr, "r2serve bench: %s\n", std::string(run.status().message()).c_str());
    return 1;
  }
  const bench::BenchMetrics metrics =
      bench::ComputeMetrics(run->results, run->duration, o.goodput, o.percentiles);
  std::fputs(bench::FormatSummary(metrics, o).c_str(), stdout);
  for (const bench::RequestResult& r : run->results) {
    if (!r.success) {
      std::fprintf(stdout, "First error: %s\n", r.error.c_str());
      break;
    }
  }
  std::fflush(stdout);
  const std::time_t finished = std::time(nullptr);
  if (!o.result_file.empty()) {
    std::ofstream out(o.result_file);
    // Generated text from a server is not trusted to be UTF-8: bad bytes become U+FFFD.
    out << bench::ResultJson(metrics, run->results, o, UtcDate(finished, "%Y%m%d-%H%M%S"))
               .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
        << "\n";
    out.close();
    if (!out) {
      std::fprintf(stderr, "r2serve bench: cannot write --result-file %s\n", o.result_file.c_str());
      return 1;
    }
  }
  if (!o.plot_file.empty()) {
    const absl::Status plotted = bench::WritePlot(o.plot_file, run->results, metrics, o,
                                                  UtcDate(finished, "%Y-%m-%d %H:%M:%S UTC"));
    if (!plotted.ok()) {
      std::fprintf(stderr, "r2serve bench: %s\n", std::string(plotted.message()).c_str());
      return 1;
    }
    std::fprintf(stderr, "r2serve bench: plot written to %s\n", o.plot_file.c_str());
  }
  return 0;
}

}  // namespace

R2_REGISTER_COMMAND("bench",
                    "Load generator for OpenAI-compatible servers (vllm bench serve metrics)",
                    RunBench);

}  // namespace r2::server

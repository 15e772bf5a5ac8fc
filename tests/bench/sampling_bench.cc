// Sampler micro-benchmarks: the time to turn one row of DeepSeek-V3 logits (V = 129280) into a
// token, for greedy, temperature 0.7 + top_p 0.9, the same with 20 logprobs, top_k 50, and a
// batch of 256 rows; ns per row.
//
// Two row shapes: "peaked" (normal(0, 2) plus 32 tokens lifted by 8..16, like a language model's
// confident step) and "flat" (normal(0, 1): the worst case for top_p, most of the vocabulary is
// needed to reach 0.9). Peers measured in the same run: one vectorized read pass over the row
// (its maximum), the floor for any O(V) method, and a plain full-sort top_p sampler (softmax,
// std::sort, prefix). The table at the end gives each case's ns per row and its ratio to both
// peers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/sampling/sampler.h"
#include "kernels/cpu/sampling_simd.h"

namespace r2::sampling {
namespace {

namespace simd = cpu::sampling_simd;

constexpr int32_t kVocab = 129280;
constexpr int32_t kBatch = 256;

std::vector<float> MakeRow(bool peaked, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, peaked ? 2.0f : 1.0f);
  std::vector<float> row(kVocab);
  for (float& x : row) x = normal(rng);
  if (peaked) {
    for (int i = 0; i < 32; ++i) row[rng() % kVocab] += 8.0f + static_cast<float>(i % 9);
  }
  return row;
}

// mode: "greedy", "top_p" (temperature 0.7, top_p 0.9) or "top_k50" (temperature 0.7), with
// "+logprobs20" for 20 top logprobs.
SamplingParams MakeParams(const std::string& mode) {
  auto has = [&](const char* part) { return mode.find(part) != std::string::npos; };
  SamplingParams params;
  params.seed = 7;
  if (has("greedy")) params.temperature = 0.0f;
  if (has("top_p") || has("top_k50")) params.temperature = 0.7f;
  if (has("top_p")) params.top_p = 0.9f;
  if (has("top_k50")) params.top_k = 50;
  if (has("logprobs20")) {
    params.logprobs = true;
    params.top_logprobs = 20;
  }
  return params;
}

void SetRowCounters(benchmark::State& state, int64_t rows) {
  state.SetItemsProcessed(state.iterations() * rows);
  state.counters["ns_per_row"] = benchmark::Counter(
      static_cast<double>(rows) * 1e-9,
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// Sampler on `rows` rows of one shape with one mode.
void BM_Sample(benchmark::State& state, std::string mode, bool peaked, int32_t rows) {
  // One thread: the table compares per-row costs (r2_engine_step_bench measures the threads).
  absl::StatusOr<Sampler> sampler =
      Sampler::Create({.vocab_size = kVocab, .eos_token_ids = {1}, .num_threads = 1});
  std::vector<float> logits;
  std::vector<SamplingState> owned;
  for (int32_t r = 0; r < rows; ++r) {
    const std::vector<float> row = MakeRow(peaked, static_cast<uint32_t>(r));
    logits.insert(logits.end(), row.begin(), row.end());
    owned.push_back(*SamplingState::Create(MakeParams(mode), {}, kVocab, r));
  }
  std::vector<SamplingState*> states;
  for (SamplingState& s : owned) states.push_back(&s);
  std::vector<SampleResult> results(rows);
  for (auto _ : state) {
    absl::Status status =
        sampler->SampleBatch(absl::MakeSpan(logits), states, absl::MakeSpan(results));
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(results.data());
  }
  SetRowCounters(state, rows);
}

// Peer: one vectorized read pass over the row (its maximum).
void BM_ReadRow(benchmark::State& state) {
  const std::vector<float> row = MakeRow(true, 0);
  for (auto _ : state) {
    float best = simd::Max(row.data(), row.size());
    benchmark::DoNotOptimize(best);
  }
  SetRowCounters(state, 1);
}

// Peer: softmax, full sort, cumulative prefix, inverse CDF.
void BM_NaiveTopP(benchmark::State& state, bool peaked) {
  const std::vector<float> row = MakeRow(peaked, 0);
  std::vector<std::pair<float, int32_t>> order(kVocab);
  std::mt19937_64 rng(1);
  for (auto _ : state) {
    const float max_logit = *std::max_element(row.begin(), row.end());
    double z = 0.0;
    for (int32_t i = 0; i < kVocab; ++i) {
      order[i] = {std::exp((row[i] - max_logit) / 0.7f), i};
      z += order[i].first;
    }
    std::sort(order.begin(), order.end(), std::greater<>());
    double cumulative = 0.0;
    size_t kept = 0;
    while (kept < order.size() && cumulative < 0.9 * z) cumulative += order[kept++].first;
    const double target = std::uniform_real_distribution<double>(0.0, cumulative)(rng);
    double running = 0.0;
    int32_t token = order[0].second;
    for (size_t i = 0; i < kept && running <= target; ++i) {
      running += order[i].first;
      token = order[i].second;
    }
    benchmark::DoNotOptimize(token);
  }
  SetRowCounters(state, 1);
}

// Collects ns per row per benchmark for the closing table.
class TableReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      auto it = run.counters.find("ns_per_row");
      if (it != run.counters.end()) ns_per_row_[run.benchmark_name()] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }

  void PrintTable() const {
    const double read = Find("BM_ReadRow");
    std::printf("\nsampling, V = %d, one thread (ns per row; x read pass; x full-sort top_p)\n",
                kVocab);
    for (const auto& [name, ns] : ns_per_row_) {
      const bool flat = name.find("flat") != std::string::npos;
      const double naive = Find(flat ? "BM_NaiveTopP/flat" : "BM_NaiveTopP/peaked");
      std::printf("  %-40s %12.0f ns %8.1fx %8.3fx\n", name.c_str(), ns, ns / read, ns / naive);
    }
  }

 private:
  double Find(const std::string& name) const {
    auto it = ns_per_row_.find(name);
    return it == ns_per_row_.end() ? NAN : it->second;
  }
  std::map<std::string, double> ns_per_row_;
};

void RegisterAll() {
  benchmark::RegisterBenchmark("BM_ReadRow", BM_ReadRow);
  for (bool peaked : {true, false}) {
    const std::string shape = peaked ? "peaked" : "flat";
    benchmark::RegisterBenchmark(("BM_NaiveTopP/" + shape).c_str(), BM_NaiveTopP, peaked);
    for (const char* mode :
         {"greedy", "greedy+logprobs20", "top_p", "top_p+logprobs20", "top_k50"}) {
      benchmark::RegisterBenchmark(("BM_Sample/" + shape + "/" + mode + "/rows:1").c_str(),
                                   BM_Sample, std::string(mode), peaked, 1);
    }
    for (const char* mode : {"greedy", "top_p"}) {
      benchmark::RegisterBenchmark(
          ("BM_Sample/" + shape + "/" + mode + "/rows:" + std::to_string(kBatch)).c_str(),
          BM_Sample, std::string(mode), peaked, kBatch);
    }
  }
}

}  // namespace
}  // namespace r2::sampling

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  r2::sampling::RegisterAll();
  r2::sampling::TableReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintTable();
  benchmark::Shutdown();
  return 0;
}

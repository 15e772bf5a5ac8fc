// Host-side cost of one scheduler step (Schedule + Postprocess) in a decode-heavy steady state:
// 256 running sequences with 64-token blocks, requests replaced as they finish (so some prefill
// chunks ride along), fake sampled tokens. Goal: under 0.2 ms per step, excluding the forward pass.
//
//   build/<dir>/tests/r2_scheduler_bench --benchmark_min_time=2
//
// Counters: tokens and chunks per step, running sequences, preemptions. Compare the CPU time per
// step with the 0.2 ms goal (docs/perf/scheduler.md); wall time suffers on a shared, loaded
// machine.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "engine/cache/block_pool.h"
#include "engine/scheduler/scheduler.h"

namespace r2::scheduler {
namespace {

constexpr int32_t kRunning = 256;
constexpr int32_t kBlockSize = 64;

struct Workload {
  bool prefix_caching = true;
  bool with_arrivals = false;  // count AddRequest (prompt hashing) in the step time
  int32_t num_blocks = 0;      // 0: room for every sequence at its longest; else a tighter pool
};

class SteadyState {
 public:
  explicit SteadyState(const Workload& w) : rng_(42), with_arrivals_(w.with_arrivals) {
    SchedulerConfig config;
    config.max_num_seqs = kRunning;
    config.max_num_batched_tokens = 8192;
    config.max_model_len = 8192;
    config.enable_prefix_caching = w.prefix_caching;
    // Room for every running sequence at its longest (prompt <= 2048, output <= 1024), plus cache.
    const int32_t num_blocks =
        w.num_blocks > 0 ? w.num_blocks : kRunning * (3072 / kBlockSize) + 2048;
    scheduler_ = *Scheduler::Create(config, *cache::BlockPool::Create(num_blocks, kBlockSize));
    system_prompt_.resize(512);
    for (int32_t& t : system_prompt_) t = Uniform(0, 100000);
    for (int32_t i = 0; i < kRunning + 16; ++i) Arrive();
    for (int32_t i = 0; i < 2000; ++i) Step();  // reach the steady state
  }

  // One step; returns scheduled tokens.
  int32_t Step() {
    if (!scheduler_->Schedule(&out_).ok()) std::abort();
    sampled_.clear();
    for (const ScheduledChunk& c : out_.chunks) {
      if (c.needs_logits) sampled_.push_back(SampledToken{c.seq_id, 7 + (c.end & 1023), false});
    }
    if (!scheduler_->Postprocess(sampled_, &finished_).ok()) std::abort();
    pending_arrivals_ += static_cast<int32_t>(finished_.size());
    return out_.num_batched_tokens;
  }

  // Replaces finished requests, so the running set stays near kRunning.
  void Refill() {
    for (; pending_arrivals_ > 0; --pending_arrivals_) Arrive();
  }

  bool with_arrivals() const { return with_arrivals_; }
  const SchedulerOutput& output() const { return out_; }
  const Scheduler& scheduler() const { return *scheduler_; }

 private:
  int32_t Uniform(int32_t lo, int32_t hi) {
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng_);
  }

  void Arrive() {
    SchedulerRequest r;
    r.request_id = next_request_id_++;
    r.prompt = system_prompt_;
    for (int32_t k = Uniform(64, 1536); k > 0; --k) r.prompt.push_back(Uniform(0, 100000));
    r.max_tokens = Uniform(128, 1024);
    if (!scheduler_->AddRequest(std::move(r)).ok()) std::abort();
  }

  std::mt19937_64 rng_;
  bool with_arrivals_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<int32_t> system_prompt_;
  SchedulerOutput out_;
  std::vector<SampledToken> sampled_;
  std::vector<FinishedSequence> finished_;
  uint64_t next_request_id_ = 1;
  int32_t pending_arrivals_ = 0;
};

void RunSteps(benchmark::State& state, const Workload& w) {
  SteadyState s(w);
  int64_t tokens = 0;
  int64_t chunks = 0;
  int64_t steps = 0;
  for (auto _ : state) {
    tokens += s.Step();
    chunks += static_cast<int64_t>(s.output().chunks.size());
    ++steps;
    if (s.with_arrivals()) {
      s.Refill();
    } else {
      state.PauseTiming();
      s.Refill();
      state.ResumeTiming();
    }
  }
  state.counters["tokens/step"] = benchmark::Counter(double(tokens) / double(steps));
  state.counters["chunks/step"] = benchmark::Counter(double(chunks) / double(steps));
  state.counters["running"] = s.scheduler().num_running();
  state.counters["preemptions"] = double(s.scheduler().counters().preemptions);
}

void BM_StepDecodeHeavy256(benchmark::State& state) { RunSteps(state, Workload{}); }
void BM_StepDecodeHeavy256NoPrefixCache(benchmark::State& state) {
  RunSteps(state, Workload{.prefix_caching = false});
}
void BM_StepDecodeHeavy256WithArrivals(benchmark::State& state) {
  RunSteps(state, Workload{.with_arrivals = true});
}

// A third of the blocks the running set wants at its longest: preemption and recompute in the mix.
void BM_StepDecodeHeavy256MemoryPressure(benchmark::State& state) {
  RunSteps(state, Workload{.num_blocks = kRunning * 1024 / kBlockSize});
}

BENCHMARK(BM_StepDecodeHeavy256)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StepDecodeHeavy256MemoryPressure)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StepDecodeHeavy256NoPrefixCache)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_StepDecodeHeavy256WithArrivals)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace r2::scheduler

BENCHMARK_MAIN();

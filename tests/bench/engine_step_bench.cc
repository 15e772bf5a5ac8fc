// Host-side cost of one engine step at 256 running sequences, excluding the forward pass.
//
// EngineCore runs its real step (Schedule, batch assembly, Sampler, detokenizer-less stop checks,
// Postprocess, delivery into RequestStreams, stats) over a ModelRunner that does no model work:
// it points each needs_logits chunk at one of 256 rows of fixed random logits (filled once), so
// the "forward" share is only the runner call itself. The step's own timers split the time into
// schedule / forward / sample / postprocess. A reader drains every stream between steps, outside
// the timed step, as a front end would on its own thread.
//
//   build/<dir>/tests/r2_engine_step_bench [scale=1] [host|device]
//   (scale multiplies the timed steps; the second argument runs only those cases)
//
// Cases: greedy and seeded top-p sampling at the DeepSeek-V3 vocabulary (129280), and greedy at a
// 1024 vocabulary, where sampling is nearly free and the rest of the step shows; each with the
// sampler on one thread and on OpenMP's default number of threads. Peer measured in the same run:
// one read pass over the step's 256 logits rows (sampling_simd::Max per row, 132 MB at V = 129280),
// on one thread and on the default threads: the memory floor of any sampler that reads every logit.
// Device cases: the same steps on the engine's device path (logits left in a checked-memory
// backend, sampled by Backend::SampleRows); the line reports the step's host-side share without
// the time inside SampleRows, which is what remains on the host when a GPU samples.
// The "cpu" column is the engine thread's CPU time, "all" the process's (every sampler thread):
// on a shared machine they show the work where wall time also counts waiting for a core; on an
// idle one the parallel step's wall time is the figure that counts.
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "engine/engine_core.h"
#include "engine/request_stream.h"
#include "kernels/backend.h"
#include "kernels/cpu/sampling_simd.h"
#include "tests/unit/forwarding_backend.h"

namespace r2::engine {
namespace {

constexpr int32_t kRunning = 256;
constexpr int32_t kPromptTokens = 128;
constexpr int32_t kBlockSize = 64;

class FixedLogitsRunner final : public ModelRunner {
 public:
  FixedLogitsRunner(int32_t vocab, int32_t rows) : vocab_(vocab), rows_(rows) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    table_.resize(static_cast<size_t>(vocab) * rows);
    for (float& x : table_) x = normal(rng);
  }
  absl::Status Run(const scheduler::SchedulerOutput& plan, StepLogits* logits) override {
    if (logits->logits.size() != table_.size()) logits->logits = table_;  // once
    logits->vocab_size = vocab_;
    logits->rows.clear();
    int64_t next = 0;
    for (const scheduler::ScheduledChunk& chunk : plan.chunks) {
      if (chunk.needs_logits) logits->rows.push_back(next++ % rows_);
    }
    return absl::OkStatus();
  }

 private:
  int32_t vocab_;
  int32_t rows_;
  std::vector<float> table_;
};

// The checked-memory backend (host_memory() false: the engine takes its device path) with the
// time spent inside SampleRows measured, so the step's host-side share can be told from the
// sampling itself, which a GPU does on the device (here the reference does it on the CPU, on host
// copies of the rows).
// With `instant` set, SampleRows answers after its checks with made-up tokens (row r's token is
// r) and no host sampling: a stand-in for a GPU that has sampled, so the step's host side is
// timed at the full vocabulary without the reference's 132 MB sweep through the host's caches.
class TimedSamplingBackend final : public r2::testing::ForwardingBackend {
 public:
  explicit TimedSamplingBackend(bool instant = false)
      : ForwardingBackend(MakeCheckedMemoryBackend()), instant_(instant) {}
  double sample_seconds() const { return sample_seconds_; }

  std::string_view name() const override { return "timed-checked-memory"; }
  // The host-side checks every implementation makes (CheckSampleRows; the CUDA launcher then
  // packs the specs) are timed apart from the sampling: they stay on the host with a GPU.
  absl::Status SampleRows(const SampleRowsParams& p) override {
    const absl::Time start = absl::Now();
    if (absl::Status s = CheckSampleRows(p); !s.ok()) return s;
    const absl::Time checked = absl::Now();
    absl::Status s = absl::OkStatus();
    if (instant_) {
      for (int64_t i = 0; i < p.num_specs; ++i) {
        p.results[i].token = static_cast<int32_t>(p.specs[i].row % p.vocab_size);
        p.results[i].num_top = 0;
      }
    } else {
      s = inner().SampleRows(p);
    }
    check_seconds_ = absl::ToDoubleSeconds(checked - start);
    sample_seconds_ = absl::ToDoubleSeconds(absl::Now() - checked);
    return s;
  }
  double check_seconds() const { return check_seconds_; }

 private:
  bool instant_;
  double sample_seconds_ = 0.0;
  double check_seconds_ = 0.0;
};

// FixedLogitsRunner's rows, uploaded once into the backend's memory and left there: the engine
// samples them with Backend::SampleRows (its device path).
class DeviceLogitsRunner final : public ModelRunner {
 public:
  DeviceLogitsRunner(int32_t vocab, int32_t rows, TimedSamplingBackend* backend)
      : vocab_(vocab), rows_(rows), backend_(backend) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> table(static_cast<size_t>(vocab) * rows);
    for (float& x : table) x = normal(rng);
    absl::StatusOr<void*> mem = backend->Allocate(table.size() * sizeof(float));
    if (!mem.ok() || !backend->CopyToBackend(*mem, table.data(), table.size() * 4).ok()) {
      std::fprintf(stderr, "cannot upload the logits table\n");
      std::exit(1);
    }
    device_ = static_cast<float*>(*mem);
  }
  absl::Status Run(const scheduler::SchedulerOutput& plan, StepLogits* logits) override {
    logits->vocab_size = vocab_;
    logits->device = device_;
    logits->device_rows = rows_;
    logits->backend = backend_;
    logits->rows.clear();
    int64_t next = 0;
    for (const scheduler::ScheduledChunk& chunk : plan.chunks) {
      if (chunk.needs_logits) logits->rows.push_back(next++ % rows_);
    }
    return absl::OkStatus();
  }

 private:
  int32_t vocab_;
  int32_t rows_;
  TimedSamplingBackend* backend_;
  float* device_ = nullptr;
};

struct Case {
  const char* name;
  int32_t vocab;
  bool greedy;
  int steps;             // timed decode steps
  int32_t threads;       // sampler threads (0: OpenMP's default)
  bool device = false;   // the device path (DeviceSampler over TimedSamplingBackend)
  bool instant = false;  // ... with made-up tokens instead of the reference's sampling
};

// CPU time of the calling thread: on a shared machine it shows the step's own work where wall
// time also counts waiting for a core.
double CpuSeconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Summary {
  double schedule = 0, forward = 0, sample = 0, postprocess = 0, total = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void RunCase(const Case& c, int scale) {
  const int steps = std::max(1, c.steps * scale);
  const int32_t max_tokens = steps + 64;
  const int32_t blocks_per_seq = (kPromptTokens + max_tokens + kBlockSize - 1) / kBlockSize;
  EngineCoreOptions options{
      .scheduler = {.max_num_seqs = kRunning,
                    .max_num_batched_tokens = 8192,
                    .max_model_len = kPromptTokens + max_tokens},
      .num_blocks = kRunning * blocks_per_seq + 16,
      .block_size = kBlockSize,
      .output = {.vocab_size = c.vocab, .eos_token_ids = {1}, .tokenizer = nullptr},
      .seed = 0,
      .sampler_threads = c.threads,
      .before_forward = nullptr,
  };
  TimedSamplingBackend backend(c.instant);
  std::unique_ptr<ModelRunner> runner;
  if (c.device) {
    runner = std::make_unique<DeviceLogitsRunner>(c.vocab, kRunning, &backend);
  } else {
    runner = std::make_unique<FixedLogitsRunner>(c.vocab, kRunning);
  }
  auto core = EngineCore::Create(options, std::move(runner));
  if (!core.ok()) {
    std::fprintf(stderr, "%s\n", core.status().ToString().c_str());
    std::exit(1);
  }
  auto inbox = std::make_shared<EngineInbox>(1 << 20);
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::mt19937 rng(2);
  std::uniform_int_distribution<int32_t> token(2, c.vocab - 1);
  for (int32_t i = 0; i < kRunning; ++i) {
    PendingRequest pending;
    pending.request_id = static_cast<uint64_t>(i + 1);
    pending.request.prompt.resize(kPromptTokens);
    for (int32_t& t : pending.request.prompt) t = token(rng);
    pending.request.params.temperature = c.greedy ? 0.0f : 0.8f;
    pending.request.params.top_p = c.greedy ? 1.0f : 0.95f;
    if (!c.greedy) pending.request.params.seed = i;
    pending.request.params.max_tokens = max_tokens;
    pending.request.params.ignore_eos = true;
    streams.push_back(std::make_shared<RequestStream>(pending.request_id, inbox));
    pending.stream = streams.back();
    (*core)->Add(std::move(pending));
  }
  RequestOutput out;
  // Prefill (and warm-up) until every sequence decodes.
  for (int i = 0; i < 8; ++i) {
    if (absl::Status s = (*core)->Step(); !s.ok()) std::exit(2);
  }
  std::vector<double> schedule, forward, sample, postprocess, total, cpu, all_cpu, device, checks;
  for (int i = 0; i < steps; ++i) {
    const double cpu_start = CpuSeconds(CLOCK_THREAD_CPUTIME_ID);
    const double all_start = CpuSeconds(CLOCK_PROCESS_CPUTIME_ID);
    absl::Status stepped = (*core)->Step();
    cpu.push_back(CpuSeconds(CLOCK_THREAD_CPUTIME_ID) - cpu_start);
    all_cpu.push_back(CpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - all_start);
    if (absl::Status s = stepped; !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      std::exit(2);
    }
    const StepTimings& t = (*core)->last_step_timings();
    schedule.push_back(t.schedule);
    forward.push_back(t.forward);
    sample.push_back(t.sample);
    postprocess.push_back(t.postprocess);
    total.push_back(t.total);
    device.push_back(c.device ? backend.sample_seconds() : 0.0);
    checks.push_back(c.device ? backend.check_seconds() : 0.0);
    for (auto& stream : streams) stream->TryNext(&out);
  }
  const EngineStats& stats = (*core)->stats();
  const double ms = 1e3;
  if (c.device) {
    // What stays on the host when a GPU samples: the step minus the (fake) forward and minus the
    // time inside Backend::SampleRows; per step, medians of the per-step differences.
    std::vector<double> host_side, sample_host;
    for (size_t i = 0; i < total.size(); ++i) {
      host_side.push_back(total[i] - forward[i] - device[i]);
      sample_host.push_back(sample[i] - device[i]);
    }
    std::printf(
        "%-24s device %3d seqs %4d steps | wall %8.3f ms = schedule %6.3f + forward(fake) %6.3f "
        "+ sample %8.3f (sampling inside SampleRows %8.3f; host side %6.3f, of which its checks "
        "%6.3f) + postprocess %6.3f | host-side step excl. forward and device sampling %6.3f "
        "ms\n",
        c.name, stats.num_running, steps, Median(total) * ms, Median(schedule) * ms,
        Median(forward) * ms, Median(sample) * ms, Median(device) * ms, Median(sample_host) * ms,
        Median(checks) * ms, Median(postprocess) * ms, Median(host_side) * ms);
    return;
  }
  const double host = Median(total) - Median(forward);
  const double rest = Median(schedule) + Median(postprocess);
  std::printf(
      "%-24s %2d thr %3d seqs %4d steps | wall %8.3f ms (cpu %8.3f, all %8.3f) = schedule %6.3f + "
      "forward(fake) "
      "%6.3f + sample %8.3f + postprocess %6.3f | host excl. forward %8.3f ms; excl. forward and "
      "sampling %6.3f ms (%4.1f%% of host)\n",
      c.name, c.threads > 0 ? c.threads : omp_get_max_threads(), stats.num_running, steps,
      Median(total) * ms, Median(cpu) * ms, Median(all_cpu) * ms, Median(schedule) * ms,
      Median(forward) * ms, Median(sample) * ms, Median(postprocess) * ms, host * ms, rest * ms,
      100.0 * rest / host);
}

// The peer: medians of one read pass (the maximum of each row) over `rows` rows of `vocab`
// logits, on `threads` threads.
void RunReadPass(int32_t vocab, int32_t rows, int32_t threads, int steps) {
  std::vector<float> table(static_cast<size_t>(vocab) * rows);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& x : table) x = normal(rng);
  std::vector<float> maxima(rows);
  std::vector<double> wall, cpu;
  for (int s = 0; s < steps; ++s) {
    const double cpu_start = CpuSeconds(CLOCK_PROCESS_CPUTIME_ID);
    const absl::Time start = absl::Now();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int32_t r = 0; r < rows; ++r) {
      maxima[r] = cpu::sampling_simd::Max(table.data() + static_cast<size_t>(r) * vocab, vocab);
    }
    wall.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    cpu.push_back(CpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - cpu_start);
  }
  const double seconds = Median(wall);
  std::printf(
      "%-24s %2d thr %3d rows %4d steps | wall %8.3f ms (all cpu %8.3f), %.1f GB/s (max %g)\n",
      "read pass (peer)", threads, rows, steps, seconds * 1e3, Median(cpu) * 1e3,
      static_cast<double>(table.size()) * sizeof(float) / seconds / 1e9, maxima[0]);
}

}  // namespace
}  // namespace r2::engine

int main(int argc, char** argv) {
  const int scale = argc > 1 ? std::max(1, std::atoi(argv[1])) : 1;
  // Optional second argument: "host" or "device" runs only those cases.
  const std::string only = argc > 2 ? argv[2] : "";
  std::printf("engine step at 256 decoding sequences, medians per step\n");
  using r2::engine::Case;
  const int32_t threads = omp_get_max_threads();
  if (only != "device") {
    for (int32_t t : {1, threads}) r2::engine::RunReadPass(129280, 256, t, 40 * scale);
  }
  for (const Case& c : {Case{"greedy, vocab 129280", 129280, true, 40, 1},
                        Case{"greedy, vocab 129280", 129280, true, 40, 0},
                        Case{"top-p 0.95, vocab 129280", 129280, false, 10, 1},
                        Case{"top-p 0.95, vocab 129280", 129280, false, 10, 0},
                        Case{"greedy, vocab 1024", 1024, true, 400, 1},
                        Case{"greedy, vocab 1024", 1024, true, 400, 0},
                        Case{"greedy, vocab 129280", 129280, true, 10, 1, true},
                        Case{"top-p 0.95, vocab 129280", 129280, false, 4, 1, true},
                        Case{"greedy, vocab 1024", 1024, true, 400, 1, true},
                        Case{"ids only, vocab 129280", 129280, true, 400, 1, true, true},
                        Case{"ids only, top-p 129280", 129280, false, 400, 1, true, true}}) {
    if ((only == "device" && !c.device) || (only == "host" && c.device)) continue;
    r2::engine::RunCase(c, scale);
  }
  return 0;
}

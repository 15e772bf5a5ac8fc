// The "small" DeepSeek-shaped model (make-tiny-model preset, ~0.4 B bf16 parameters: DRAM
// resident; or its int8/int4 conversion by `r2serve quantize`, or any checkpoint given as
// model=DIR) through the forward pass the engine runs each step, on the "cpu" backend: prefill
// tokens/s and decode tokens/s at batch 1, 8 and 32, each decode step with its fraction of the
// memory-bandwidth floor.
//
//   build/<dir>/tests/r2_cpu_model_bench [model=DIR] [prompt=512] [context=64] [steps=24]
//                                       [backend=cpu] [batches=1,8,32] [moe_op=1] [group=1]
//                                       [profile=0]
//
// model: a checkpoint dir (written with the "small" preset, seed 0, when it has no config.json;
// default $TMPDIR/r2-small-model). Decode runs `batch` sequences of `context` prompt tokens
// (prefilled together, untimed), then `steps` timed steps of one token per sequence (greedy).
//
// Floor: the bytes a step must read from memory (every Linear weight the step multiplies by,
// which for the MoE layers is only the experts the router selected, plus the embedding rows and
// the latent KV rows each sequence attends over) over a copy bandwidth measured in the same run
// (the bench's threads, 256 MiB buffers, read + write bytes counted, median of 5); each step's
// share of a read-only floor (the bytes over a 1 GiB read bandwidth, also measured) is printed
// beside it, as a step only reads its weights. A counting wrapper around the backend tallies the
// bytes from each op's arguments; its cost is a few compares per op. Times are medians over steps
// (the machine is shared: noisy).
//
// group=0: LinearGroup runs as Linear on each product (Backend's default), for comparison with
// the backend's own (one preparation of x, one parallel loop).
//
// profile=1: after each decode batch, the timed steps' wall time per op and weight shape (mean ms
// per step, share of the step, the process's CPU time in it (all threads, spinning included),
// calls per step, bytes the tally counts for it and the wall-clock rate it read them at), so
// one sees where a step's time goes. Each op is timed on its own (the ops run one after another).
#include <omp.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/tiny_model.h"
#include "kernels/backend.h"
#include "kernels/quant_format.h"

namespace r2 {
namespace {

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// CPU time of every thread of the process (at one thread: the time the work itself took, not the
// time slices other processes had on a shared machine).
double ProcessCpuTime() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The process's peak resident set (VmHWM of /proc/self/status), bytes; 0 when unknown.
int64_t PeakRssBytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  long long kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb * 1024;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Bytes of a weight in memory: its values (int4 packed rows), block scales, scales, zero points.
int64_t WeightBytes(const WeightView& w) {
  const TensorView& t = w.weight;
  int64_t bytes = t.dtype == DType::kU4 ? t.shape[0] * PackedU4RowBytes(t.shape[1])
                                        : t.numel() * static_cast<int64_t>(DTypeSize(t.dtype));
  if (w.block_scaled()) bytes += w.scale_inv.numel() * 4;
  if (!w.scale.empty()) bytes += w.scale.numel() * static_cast<int64_t>(DTypeSize(w.scale.dtype));
  if (!w.zero_point.empty()) bytes += w.zero_point.numel() * 4;
  return bytes;
}

// Forwards every op to `inner`, adding up the bytes of weights and KV rows the op reads.
class CountingBackend final : public Backend {
 public:
  // moe_op: false makes MoeExperts answer Unimplemented, so the model runs the routed experts as
  // one Linear per selected expert (the grouping path), for comparison. group_op: false runs
  // LinearGroup as Linear on each product (each then timed as its own Linear).
  CountingBackend(std::unique_ptr<Backend> inner, bool moe_op, bool group_op)
      : inner_(std::move(inner)), moe_op_(moe_op), group_op_(group_op) {}
  int64_t bytes() const { return bytes_; }
  int64_t linear_macs() const { return macs_; }
  void Reset() { bytes_ = macs_ = 0; }

  // Per-op timing (profile=1): off by default; ClearProfile() forgets what was recorded.
  struct OpTime {
    double seconds = 0, cpu_seconds = 0;  // wall; CPU time of the process (every thread)
    int64_t calls = 0, bytes = 0;
  };
  void set_profile(bool on) { profile_ = on; }
  void ClearProfile() { ops_.clear(); }
  const std::map<std::string, OpTime>& profile() const { return ops_; }

  std::string_view name() const override { return inner_->name(); }
  bool SupportsTransposedLinear() const override { return inner_->SupportsTransposedLinear(); }
  absl::Status Embedding(const EmbeddingParams& p) override {
    int64_t bytes = 0;
    if (p.table.shape.size() == 2) {
      bytes = p.rows * p.table.shape[1] * static_cast<int64_t>(DTypeSize(p.table.dtype));
    }
    return Timed("Embedding", bytes, [&] { return inner_->Embedding(p); });
  }
  absl::Status RmsNorm(const RmsNormParams& p) override {
    return Timed("RmsNorm", 0, [&] { return inner_->RmsNorm(p); });
  }
  absl::Status Linear(const LinearParams& p) override {
    const WeightView& w = p.weight;
    macs_ += p.batch * p.rows * w.weight.numel();
    const auto run = [&] { return inner_->Linear(p); };
    const int64_t bytes = p.batch * WeightBytes(w);
    if (!profile_) return Timed("", bytes, run);
    return Timed(absl::StrCat("Linear ", w.out_features(), "x", w.in_features(),
                              p.batch > 1 ? absl::StrCat(" x", p.batch) : ""),
                 bytes, run);
  }
  // Profiled as "LinearGroup <out>+<out>+...x<in>": the products share x, so one line times them.
  absl::Status LinearGroup(std::span<const LinearParams> products) override {
    if (!group_op_) return Backend::LinearGroup(products);
    int64_t bytes = 0;
    std::string outs;
    for (const LinearParams& p : products) {
      macs_ += p.batch * p.rows * p.weight.weight.numel();
      bytes += p.batch * WeightBytes(p.weight);
      absl::StrAppend(&outs, outs.empty() ? "" : "+", p.weight.out_features());
    }
    const auto run = [&] { return inner_->LinearGroup(products); };
    if (!profile_) return Timed("", bytes, run);
    const int64_t in = products.empty() ? 0 : products.front().weight.in_features();
    return Timed(absl::StrCat("LinearGroup ", outs, "x", in), bytes, run);
  }
  absl::Status Rope(const RopeParams& p) override {
    return Timed("Rope", 0, [&] { return inner_->Rope(p); });
  }
  absl::Status SiluMul(const SiluMulParams& p) override {
    return Timed("SiluMul", 0, [&] { return inner_->SiluMul(p); });
  }
  absl::Status Add(const AddParams& p) override {
    return Timed("Add", 0, [&] { return inner_->Add(p); });
  }
  absl::Status GatherRows(const GatherRowsParams& p) override {
    return Timed("GatherRows", 0, [&] { return inner_->GatherRows(p); });
  }
  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    return Timed("ScatterAddRows", 0, [&] { return inner_->ScatterAddRows(p); });
  }
  absl::Status MoeRoute(const MoeRouteParams& p) override {
    return Timed("MoeRoute", 0, [&] { return inner_->MoeRoute(p); });
  }
  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    return Timed("MlaPrefillAttention", 0, [&] { return inner_->MlaPrefillAttention(p); });
  }
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override {
    return Timed("KvCacheWrite", 0, [&] { return inner_->KvCacheWrite(p); });
  }
  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    int64_t bytes = 0;
    for (int64_t b = 0; b < p.num_seqs; ++b) bytes += int64_t{p.kv_lens[b]} * p.cache.row_bytes();
    return Timed("MlaDecodeAttention", bytes, [&] { return inner_->MlaDecodeAttention(p); });
  }
  // The routed experts as one op (the host path of the model): the weights of every distinct
  // expert the router selected are read once.
  absl::Status MoeExperts(const MoeExpertsParams& p) override {
    if (!moe_op_) return absl::UnimplementedError("MoeExperts off (moe_op=0)");
    int64_t bytes = 0;
    if (p.rows > 0 && p.expert_ids != nullptr && p.num_experts > 0) {
      std::vector<bool> seen(p.num_experts, false);
      for (int64_t i = 0; i < p.rows * p.top_k; ++i) {
        const int32_t e = p.expert_ids[i];
        if (e < 0 || e >= p.num_experts || seen[e]) continue;
        seen[e] = true;
        for (int m = 0; m < 3; ++m) {
          if (p.expert_views != nullptr) {
            bytes += WeightBytes(p.expert_views[m * p.num_experts + e]);
          } else {
            bytes += p.hidden * p.width * static_cast<int64_t>(DTypeSize(p.dtype));
          }
        }
      }
      macs_ += p.rows * p.top_k * 3 * p.hidden * p.width;
    }
    return Timed("MoeExperts", bytes, [&] { return inner_->MoeExperts(p); });
  }

 private:
  // Adds `bytes` to the step's tally and, when profiling, the op's wall time under `key`.
  template <typename Fn>
  absl::Status Timed(const std::string& key, int64_t bytes, const Fn& run) {
    bytes_ += bytes;
    if (!profile_) return run();
    const double t0 = Now(), c0 = ProcessCpuTime();
    absl::Status status = run();
    OpTime& op = ops_[key];
    op.seconds += Now() - t0;
    op.cpu_seconds += ProcessCpuTime() - c0;
    op.calls += 1;
    op.bytes += bytes;
    return status;
  }

  std::unique_ptr<Backend> inner_;
  bool moe_op_ = true;
  bool group_op_ = true;
  bool profile_ = false;
  std::map<std::string, OpTime> ops_;
  int64_t bytes_ = 0;
  int64_t macs_ = 0;
};

// Copy bandwidth in bytes/s (read + written), the OpenMP threads, median of 5 copies of 256 MiB.
double CopyBandwidth() {
  const size_t n = size_t{256} << 20;
  std::vector<char> src(n, 1), dst(n, 0);
  std::vector<double> rates;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = Now();
#pragma omp parallel
    {
      const size_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const size_t chunk = (n / threads) & ~size_t{4095};
      const size_t begin = t * chunk, end = t + 1 == threads ? n : begin + chunk;
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
    rates.push_back(2.0 * static_cast<double>(n) / (Now() - t0));
  }
  if (dst[n / 3] != 1) std::abort();
  return Median(rates);
}

// Read bandwidth in bytes/s: the OpenMP threads summing 64-bit words of their parts of 1 GiB
// (larger than the host's last-level cache, in transparent huge pages like the moved weights),
// median of 5. Weights are only read, so this is the rate a decode step could stream them at; the
// copy bandwidth above counts a write per byte read and stays the floor's reference.
double ReadBandwidth() {
  const size_t n = size_t{1} << 30, words = n / 8;
  void* raw = std::aligned_alloc(size_t{2} << 20, n);
  if (raw == nullptr) return 0;
  madvise(raw, n, MADV_HUGEPAGE);
  auto* data = static_cast<uint64_t*>(raw);
  for (size_t i = 0; i < words; ++i) data[i] = i;
  std::vector<double> rates;
  uint64_t check = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = Now();
    uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const size_t threads = omp_get_num_threads(), t = omp_get_thread_num();
      const size_t chunk = words / threads, begin = t * chunk;
      const size_t end = t + 1 == threads ? words : begin + chunk;
      uint64_t a = 0, b = 0, c = 0, d = 0;
      size_t i = begin;
      for (; i + 4 <= end; i += 4) {
        a += data[i];
        b += data[i + 1];
        c += data[i + 2];
        d += data[i + 3];
      }
      for (; i < end; ++i) a += data[i];
      total += a + b + c + d;
    }
    rates.push_back(static_cast<double>(n) / (Now() - t0));
    check += total;
  }
  std::free(raw);
  if (check != 5 * (static_cast<uint64_t>(words) * (words - 1) / 2)) std::abort();
  return Median(rates);
}

// The per-op times of `steps` profiled steps that took `total` seconds, longest first.
void PrintProfile(const CountingBackend& backend, int64_t steps, double total) {
  std::vector<std::pair<std::string, CountingBackend::OpTime>> ops(backend.profile().begin(),
                                                                   backend.profile().end());
  std::sort(ops.begin(), ops.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  const double n = static_cast<double>(steps);
  double timed = 0;
  std::printf("  %-28s %9s %6s %9s %7s %9s %8s\n", "op", "ms/step", "share", "CPU ms", "calls",
              "MB/step", "GB/s");
  for (const auto& [key, op] : ops) {
    timed += op.seconds;
    std::printf("  %-28s %9.3f %5.1f%% %9.3f %7.1f %9.2f %8.2f\n", key.c_str(),
                1e3 * op.seconds / n, 100.0 * op.seconds / total, 1e3 * op.cpu_seconds / n,
                static_cast<double>(op.calls) / n, static_cast<double>(op.bytes) / n / 1e6,
                op.seconds > 0 ? static_cast<double>(op.bytes) / op.seconds / 1e9 : 0.0);
  }
  std::printf("  %-28s %9.3f %5.1f%%\n", "(outside the ops)", 1e3 * (total - timed) / n,
              100.0 * (total - timed) / total);
}

int32_t ArgMax(const float* v, int64_t n) {
  return static_cast<int32_t>(std::max_element(v, v + n) - v);
}

struct Options {
  std::string model;
  int64_t prompt = 512, context = 64, steps = 24;
  std::string backend = "cpu";
  std::vector<int64_t> batches = {1, 8, 32};
  bool moe_op = true;
  bool group_op = true;
  bool profile = false;
};

Options Parse(int argc, char** argv) {
  Options o;
  const char* tmp = std::getenv("TMPDIR");
  o.model = std::string(tmp && *tmp ? tmp : "/tmp") + "/r2-small-model";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq),
                      value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "model") {
      o.model = value;
    } else if (key == "prompt") {
      o.prompt = std::stoll(value);
    } else if (key == "context") {
      o.context = std::stoll(value);
    } else if (key == "steps") {
      o.steps = std::stoll(value);
    } else if (key == "backend") {
      o.backend = value;
    } else if (key == "moe_op") {
      o.moe_op = value != "0";
    } else if (key == "group") {
      o.group_op = value != "0";
    } else if (key == "profile") {
      o.profile = value != "0";
    } else if (key == "batches") {
      o.batches.clear();
      for (size_t pos = 0; pos < value.size();) {
        const size_t comma = value.find(',', pos);
        o.batches.push_back(std::stoll(value.substr(pos, comma - pos)));
        pos = comma == std::string::npos ? value.size() : comma + 1;
      }
    } else {
      std::fprintf(
          stderr,
          "unknown argument '%s' (model= prompt= context= steps= backend= batches= moe_op= "
          "group= profile=)\n",
          arg.c_str());
      std::exit(2);
    }
  }
  return o;
}

int Run(const Options& o) {
  if (!std::filesystem::exists(o.model + "/config.json")) {
    std::printf("writing the \"small\" preset to %s ...\n", o.model.c_str());
    auto preset = model::TinyModelPreset("small");
    if (absl::Status s = model::WriteTinyModel(*preset, o.model); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  auto inner = MakeBackend(o.backend);
  if (!inner.ok()) {
    std::fprintf(stderr, "%s\n", inner.status().ToString().c_str());
    return 1;
  }
  CountingBackend backend(*std::move(inner), o.moe_op, o.group_op);
  const double load_start = Now();
  auto loaded = model::DeepseekModel::Load(o.model, &backend);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    return 1;
  }
  model::DeepseekModel& m = **loaded;
  const model::HugePageMove& placed = m.weight_placement();
  std::printf(
      "load %.2f s; weights: %.1f MB moved into anonymous memory in %.2f s, %.1f MB of it in huge "
      "pages (R2_HUGE_PAGE_WEIGHTS=0: left in the file mapping); peak RSS %.1f MB\n",
      Now() - load_start, static_cast<double>(placed.bytes) / 1e6, placed.seconds,
      static_cast<double>(placed.huge_bytes) / 1e6, static_cast<double>(PeakRssBytes()) / 1e6);
  const int64_t vocab = m.config().vocab_size;
  const double bandwidth = CopyBandwidth();
  std::printf("backend %s, %d threads, model %s (hidden %lld, %lld layers, vocab %lld)\n",
              std::string(backend.name()).c_str(), omp_get_max_threads(), o.model.c_str(),
              static_cast<long long>(m.config().hidden_size),
              static_cast<long long>(m.config().num_hidden_layers), static_cast<long long>(vocab));
  std::printf("copy bandwidth %.2f GB/s (read + write, %d threads, median of 5)\n", bandwidth / 1e9,
              omp_get_max_threads());
  const double read_bandwidth = ReadBandwidth();
  std::printf("read bandwidth %.2f GB/s (%d threads, 1 GiB, median of 5)\n", read_bandwidth / 1e9,
              omp_get_max_threads());

  const int64_t block = 64;
  const int64_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  const int64_t per_seq_blocks = (std::max(o.prompt, o.context + o.steps) + block) / block + 1;
  auto cache = model::PagedKvCache::Create(m.CacheShape(max_batch * per_seq_blocks, block));
  if (!cache.ok()) {
    std::fprintf(stderr, "%s\n", cache.status().ToString().c_str());
    return 1;
  }
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(2, static_cast<int32_t>(vocab - 1));
  auto table_of = [&](int64_t seq) {
    std::vector<int32_t> t(per_seq_blocks);
    std::iota(t.begin(), t.end(), static_cast<int32_t>(seq * per_seq_blocks));
    return t;
  };

  // Prefill: one sequence of `prompt` tokens, median of 3.
  {
    std::vector<int32_t> ids(o.prompt);
    for (int32_t& id : ids) id = token(rng);
    const std::vector<int32_t> table = table_of(0);
    std::vector<double> times, cpu_times;
    for (int rep = 0; rep < 3; ++rep) {
      model::SequenceInput seq{.token_ids = ids, .start_pos = 0, .block_table = table};
      backend.Reset();
      const double t0 = Now(), c0 = ProcessCpuTime();
      auto out = m.Forward({&seq, 1}, model::LogitsMode::kLastPerSequence, **cache);
      times.push_back(Now() - t0);
      cpu_times.push_back(ProcessCpuTime() - c0);
      if (!out.ok()) {
        std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
        return 1;
      }
    }
    const double t = Median(times), c = Median(cpu_times);
    std::printf(
        "prefill  %4lld tokens: %8.1f tokens/s  (%.3f s, median of 3; Linear layers %.1f "
        "GFLOP/s; process CPU time %.3f s)\n",
        static_cast<long long>(o.prompt), static_cast<double>(o.prompt) / t, t,
        2e-9 * static_cast<double>(backend.linear_macs()) / t, c);
  }

  for (int64_t batch : o.batches) {
    std::vector<std::vector<int32_t>> prompts(batch), tables(batch);
    std::vector<model::SequenceInput> seqs(batch);
    for (int64_t b = 0; b < batch; ++b) {
      prompts[b].resize(o.context);
      for (int32_t& id : prompts[b]) id = token(rng);
      tables[b] = table_of(b);
      seqs[b] = {.token_ids = prompts[b], .start_pos = 0, .block_table = tables[b]};
    }
    auto first = m.Forward(seqs, model::LogitsMode::kLastPerSequence, **cache);
    if (!first.ok()) {
      std::fprintf(stderr, "%s\n", first.status().ToString().c_str());
      return 1;
    }
    std::vector<int32_t> next(batch);
    for (int64_t b = 0; b < batch; ++b) next[b] = ArgMax(first->logits.data() + b * vocab, vocab);
    std::vector<double> times, cpu_times, bytes;
    backend.ClearProfile();
    backend.set_profile(o.profile);
    for (int64_t step = 0; step < o.steps; ++step) {
      for (int64_t b = 0; b < batch; ++b) {
        seqs[b] = {.token_ids = absl::MakeConstSpan(&next[b], 1),
                   .start_pos = o.context + step,
                   .block_table = tables[b]};
      }
      backend.Reset();
      const double t0 = Now(), c0 = ProcessCpuTime();
      auto out = m.Forward(seqs, model::LogitsMode::kLastPerSequence, **cache);
      times.push_back(Now() - t0);
      cpu_times.push_back(ProcessCpuTime() - c0);
      bytes.push_back(static_cast<double>(backend.bytes()));
      if (!out.ok()) {
        std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
        return 1;
      }
      for (int64_t b = 0; b < batch; ++b) next[b] = ArgMax(out->logits.data() + b * vocab, vocab);
    }
    backend.set_profile(false);
    const double t = Median(times), floor_bytes = Median(bytes);
    const double floor_time = floor_bytes / bandwidth;
    std::printf(
        "decode batch %2lld: %8.1f tokens/s  step %.2f ms (median of %lld), %.1f MB read/step, "
        "floor %.2f ms -> %.0f%% of the bandwidth floor (%.0f%% of the read floor); process CPU "
        "time %.2f ms/step\n",
        static_cast<long long>(batch), static_cast<double>(batch) / t, 1e3 * t,
        static_cast<long long>(o.steps), floor_bytes / 1e6, 1e3 * floor_time,
        100.0 * floor_time / t, 100.0 * floor_bytes / read_bandwidth / t, 1e3 * Median(cpu_times));
    if (o.profile) PrintProfile(backend, o.steps, std::accumulate(times.begin(), times.end(), 0.0));
  }
  std::printf("peak RSS %.1f MB at the end\n", static_cast<double>(PeakRssBytes()) / 1e6);
  return 0;
}

}  // namespace
}  // namespace r2

int main(int argc, char** argv) { return r2::Run(r2::Parse(argc, argv)); }

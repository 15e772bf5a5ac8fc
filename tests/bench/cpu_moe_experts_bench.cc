// The routed experts alone, at the small model's shapes: `layers` layers of 64 bf16 experts
// (hidden 1024, width 128; 768 KiB each, 528 MiB in all for 11 layers: DRAM resident) in
// anonymous huge-page memory, a decode step's `rows` tokens each routed to 6 (topk) random experts
// per layer, one MoeExperts call per layer on the optimized CPU backend. Prints the median time per
// step (and the fastest step: on a shared machine, the one where every thread had a core) and the
// rate the step reads its selected experts' weights at (wall clock and process CPU time), so the
// op's streaming can be measured without the rest of the model. With shared=1 each layer also has
// a shared expert of the routed experts' shapes (one more per layer, in the same memory), passed
// as engine/model/moe.cc passes it: one more expert every token takes at weight 1, so an expert
// with all `rows` rows (the AMX tiles' case at 5-15 rows); topk=0 shared=1 runs it alone.
// R2_CPU_AMX=0 in the environment turns the AMX tiles off, for comparison.
//
//   OMP_NUM_THREADS=2 build/<dir>/tests/r2_cpu_moe_experts_bench [rows=1,8] [shared=0,1]
//       [topk=6] [steps=40] [layers=11]
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/bench/cpu_bench_util.h"

namespace r2 {
namespace {

// Routed experts per token, and the layout of one layer's experts (see Run).
constexpr int64_t kRouted = 64, kExperts = kRouted + 1, kHidden = 1024, kWidth = 128;

// `steps` timed decode steps of `rows` tokens (after two warm-up steps); prints one line.
bool RunRows(Backend& backend, const std::vector<WeightView>& views, int64_t rows, bool shared,
             int64_t top_k, int64_t steps, int64_t layers, int64_t expert_bytes,
             std::mt19937& rng) {
  const int64_t k = top_k + (shared ? 1 : 0);  // the op's top_k: routed, then the shared expert
  std::vector<float> x(rows * kHidden), h(rows * kHidden, 0.0f), weights(rows * k, 0.1f);
  std::uniform_real_distribution<float> val(-1.0f, 1.0f);
  for (float& v : x) v = val(rng);
  if (shared) {
    for (int64_t r = 0; r < rows; ++r) weights[r * k + top_k] = 1.0f;
  }
  std::vector<int32_t> ids(layers * rows * k);
  std::vector<double> wall, cpu, bytes;
  for (int64_t step = -2; step < steps; ++step) {
    int64_t step_bytes = 0;
    for (int64_t l = 0; l < layers; ++l) {
      std::vector<bool> used(kRouted, false);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<int32_t> pick(kRouted);
        for (int32_t e = 0; e < kRouted; ++e) pick[e] = e;
        std::shuffle(pick.begin(), pick.end(), rng);
        int32_t* row_ids = ids.data() + (l * rows + r) * k;
        for (int64_t j = 0; j < top_k; ++j) {
          row_ids[j] = pick[j];
          if (!used[pick[j]]) step_bytes += expert_bytes;
          used[pick[j]] = true;
        }
        if (shared) row_ids[top_k] = static_cast<int32_t>(kRouted);
      }
      if (shared) step_bytes += expert_bytes;
    }
    const double t0 = bench::ClockSeconds(CLOCK_MONOTONIC),
                 c0 = bench::ClockSeconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int64_t l = 0; l < layers; ++l) {
      MoeExpertsParams p;
      p.x = x.data();
      p.rows = rows;
      p.hidden = kHidden;
      p.width = kWidth;
      p.num_experts = kExperts;
      p.top_k = k;
      p.expert_ids = ids.data() + l * rows * k;
      p.expert_weights = weights.data();
      p.h = h.data();
      p.expert_views = views.data() + l * 3 * kExperts;
      if (absl::Status s = backend.MoeExperts(p); !s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return false;
      }
    }
    if (step < 0) continue;
    wall.push_back(bench::ClockSeconds(CLOCK_MONOTONIC) - t0);
    cpu.push_back(bench::ClockSeconds(CLOCK_PROCESS_CPUTIME_ID) - c0);
    bytes.push_back(static_cast<double>(step_bytes));
  }
  const double t = bench::Median(wall), c = bench::Median(cpu), b = bench::Median(bytes);
  const double fastest = *std::min_element(wall.begin(), wall.end());
  std::printf(
      "rows %2lld shared %d: %6.2f ms/step (%.1f MB of experts: %.2f GB/s; fastest step %.2f ms), "
      "process CPU %.2f ms/step (%.2f GB/s of CPU time)\n",
      static_cast<long long>(rows), shared ? 1 : 0, 1e3 * t, b / 1e6, b / t / 1e9, 1e3 * fastest,
      1e3 * c, b / c / 1e9);
  return true;
}

int Run(int argc, char** argv) {
  std::vector<int64_t> row_counts = {1, 8}, shared_counts = {0, 1};
  int64_t steps = 40, layers = 11, top_k = 6;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto [key, value] = bench::SplitArg(arg);
    bool ok = true;
    if (key == "rows") {
      ok = bench::ParseInt64List(value, &row_counts);
    } else if (key == "shared") {
      ok = bench::ParseInt64List(value, &shared_counts);
    } else if (key == "steps") {
      ok = bench::ParseInt64(value, &steps);
    } else if (key == "topk") {
      ok = bench::ParseInt64(value, &top_k);
    } else if (key == "layers") {
      ok = bench::ParseInt64(value, &layers);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "bad argument '%s' (rows=N,N,... shared=0,1 topk=N steps=N layers=N)\n",
                   arg.c_str());
      return 2;
    }
  }
  if (steps < 1 || layers < 1) {
    std::fprintf(stderr, "steps and layers must be >= 1\n");
    return 2;
  }
  if (top_k < 0 || top_k > kRouted) {
    std::fprintf(stderr, "topk must be in [0, %lld]\n", static_cast<long long>(kRouted));
    return 2;
  }
  for (int64_t rows : row_counts) {
    if (rows < 1) {
      std::fprintf(stderr, "rows must be >= 1, got %lld\n", static_cast<long long>(rows));
      return 2;
    }
  }
  for (int64_t shared : shared_counts) {
    if ((shared != 0 && shared != 1) || (shared == 0 && top_k == 0)) {
      std::fprintf(stderr, "shared must be 0 or 1 (1 with topk=0), got %lld\n",
                   static_cast<long long>(shared));
      return 2;
    }
  }
  // Per layer: kRouted routed experts, then the shared one (number kRouted).
  const int64_t expert_bytes = 3 * kHidden * kWidth * 2;
  const size_t total = static_cast<size_t>(layers * kExperts * expert_bytes);
  const size_t huge = size_t{2} << 20;
  void* raw =
      mmap(nullptr, total + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  auto* base =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + huge - 1) & ~(huge - 1));
  madvise(base, total, MADV_HUGEPAGE);
  std::mt19937 rng(3);
  {
    auto* w = reinterpret_cast<uint16_t*>(base);
    for (size_t i = 0; i < total / 2; ++i) {  // small normal bf16 values
      w[i] = static_cast<uint16_t>(0x3c00 + ((i * 2654435761u) >> 24 & 0xff));
    }
  }
  std::vector<WeightView> views(layers * 3 * kExperts);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t e = 0; e < kExperts; ++e) {
      uint8_t* p = base + (l * kExperts + e) * expert_bytes;
      for (int m = 0; m < 3; ++m) {
        WeightView& v = views[(l * 3 + m) * kExperts + e];
        const int64_t out = m < 2 ? kWidth : kHidden, in = m < 2 ? kHidden : kWidth;
        v.weight = TensorView{DType::kBF16, {out, in}, p + m * kHidden * kWidth * 2};
      }
    }
  }
  auto backend = MakeBackend("cpu");
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", backend.status().ToString().c_str());
    return 1;
  }
  for (int64_t rows : row_counts) {
    for (int64_t shared : shared_counts) {
      if (!RunRows(**backend, views, rows, shared == 1, top_k, steps, layers, expert_bytes, rng))
        return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace r2

int main(int argc, char** argv) { return r2::Run(argc, argv); }

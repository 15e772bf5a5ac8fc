// CUDA MoeExperts benchmark: one MoE layer's routed experts for decode-sized batches, as one
// MoeExperts call and as the per-expert path the model falls back to (ids read back to the host,
// then GatherRows, gate/up/down Linear, SiluMul, ScatterAddRows per selected expert), on the
// bench-2b preset's expert shapes and DeepSeek-V3's, bf16 and fp8 (128x128 block-scaled).
//
//   build/<dir>/tests/r2_cuda_moe_experts_bench     (prints "skipped: ..." and exits 0 without GPU)
//
// Method: every expert holds the same random values (timing does not depend on them); 16 sets of
// routed ids are rotated so that the selected experts' weights exceed the L2 cache between
// reuses. Each sample is the wall time of 50 calls bracketed by Synchronize(), over 50; the
// median of 7 samples after a warm-up. GB/s counts the distinct selected experts' weight bytes
// (and scales) once per call; "of floor" divides by the H200's ~4300 GB/s copy bandwidth.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/numeric.h"
#include "tests/bench/cuda_bench_util.h"

namespace r2 {
namespace {

constexpr double kCopyGBs = 4300.0;

struct Shape {
  const char* name;
  int64_t hidden, width, experts, top_k;
};

void* Upload(Backend& b, const void* data, size_t bytes, std::vector<void*>& owned) {
  absl::StatusOr<void*> p = b.Allocate(bytes);
  CHECK_OK(p.status());
  CHECK_OK(b.CopyToBackend(*p, data, bytes));
  owned.push_back(*p);
  return *p;
}

double MedianUs(Backend& b, const std::function<void()>& call) {
  for (int i = 0; i < 20; ++i) call();
  CHECK_OK(b.Synchronize());
  std::vector<double> samples;
  for (int s = 0; s < 7; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 50; ++i) call();
    CHECK_OK(b.Synchronize());
    const auto t1 = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / 50);
  }
  std::sort(samples.begin(), samples.end());
  return samples[3];
}

void Run(Backend& b, const Shape& sh, DType dtype) {
  const bool fp8 = dtype == DType::kF8E4M3;
  const int64_t d = sh.hidden, w = sh.width, e_count = sh.experts;
  const size_t elem = fp8 ? 1 : 2;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<void*> owned;
  // One expert's gate, up, down (same bytes for every expert).
  std::vector<uint8_t> wbytes(static_cast<size_t>(w * d) * elem);
  for (size_t i = 0; i < wbytes.size() / elem; ++i) {
    const float v = fp8 ? dist(rng) * 100.0f : dist(rng);
    if (fp8) {
      wbytes[i] = FloatToFp8E4M3(v);
    } else {
      const uint16_t h = FloatToBF16(v);
      std::memcpy(&wbytes[2 * i], &h, 2);
    }
  }
  const int64_t gu_scales = ((w + 127) / 128) * ((d + 127) / 128);
  const int64_t d_scales = ((d + 127) / 128) * ((w + 127) / 128);
  std::vector<float> scale(std::max(gu_scales, d_scales), 0.01f);
  std::vector<const void*> table(6 * e_count, nullptr);
  std::vector<WeightView> gate(e_count), up(e_count), down(e_count);
  for (int64_t e = 0; e < e_count; ++e) {
    for (int m = 0; m < 3; ++m) {
      void* p = Upload(b, wbytes.data(), wbytes.size(), owned);
      table[m * e_count + e] = p;
      WeightView& v = m == 0 ? gate[e] : (m == 1 ? up[e] : down[e]);
      v.weight =
          TensorView{dtype, m == 2 ? std::vector<int64_t>{d, w} : std::vector<int64_t>{w, d}, p};
      if (fp8) {
        const int64_t n = m == 2 ? d_scales : gu_scales;
        void* s = Upload(b, scale.data(), n * sizeof(float), owned);
        table[(3 + m) * e_count + e] = s;
        v.scale_inv = TensorView{DType::kF32,
                                 m == 2 ? std::vector<int64_t>{(d + 127) / 128, (w + 127) / 128}
                                        : std::vector<int64_t>{(w + 127) / 128, (d + 127) / 128},
                                 s};
      }
    }
  }
  const auto* dev_table =
      static_cast<const void* const*>(Upload(b, table.data(), table.size() * sizeof(void*), owned));
  const auto* scales = reinterpret_cast<const float* const*>(dev_table + 3 * e_count);
  const int64_t expert_bytes =
      3 * (w * d * static_cast<int64_t>(elem)) +
      (fp8 ? (2 * gu_scales + d_scales) * static_cast<int64_t>(sizeof(float)) : 0);

  for (int64_t rows : {1, 2, 4, 8}) {
    const int64_t pairs = rows * sh.top_k;
    if (pairs > 64) continue;
    // 16 routings, rotated.
    constexpr int kSets = 16;
    std::vector<std::vector<int32_t>> ids(kSets);
    std::vector<int32_t*> dev_ids(kSets);
    std::vector<int64_t> distinct(kSets);
    std::vector<int32_t> all(e_count);
    std::iota(all.begin(), all.end(), 0);
    for (int s = 0; s < kSets; ++s) {
      for (int64_t t = 0; t < rows; ++t) {
        std::shuffle(all.begin(), all.end(), rng);
        ids[s].insert(ids[s].end(), all.begin(), all.begin() + sh.top_k);
      }
      distinct[s] = static_cast<int64_t>(std::set<int32_t>(ids[s].begin(), ids[s].end()).size());
      dev_ids[s] =
          static_cast<int32_t*>(Upload(b, ids[s].data(), ids[s].size() * sizeof(int32_t), owned));
    }
    std::vector<float> weights(pairs, 0.3f), x(rows * d, 0.5f), h(rows * d, 0.0f);
    auto* dev_w = static_cast<float*>(Upload(b, weights.data(), pairs * sizeof(float), owned));
    auto* dev_x = static_cast<float*>(Upload(b, x.data(), x.size() * sizeof(float), owned));
    auto* dev_h = static_cast<float*>(Upload(b, h.data(), h.size() * sizeof(float), owned));
    std::vector<float> scratch_host(static_cast<size_t>(pairs) * std::max(d, 2 * w), 0.0f);
    auto* xe =
        static_cast<float*>(Upload(b, scratch_host.data(), pairs * d * sizeof(float), owned));
    auto* gu =
        static_cast<float*>(Upload(b, scratch_host.data(), pairs * 2 * w * sizeof(float), owned));
    auto* ye =
        static_cast<float*>(Upload(b, scratch_host.data(), pairs * d * sizeof(float), owned));
    std::vector<int32_t> group_host(2 * pairs);
    auto* group_dev = static_cast<int32_t*>(
        Upload(b, group_host.data(), group_host.size() * sizeof(int32_t), owned));

    int set = 0;
    auto fused = [&] {
      const int s = set++ % kSets;
      CHECK_OK(b.MoeExperts({.x = dev_x,
                             .rows = rows,
                             .hidden = d,
                             .width = w,
                             .num_experts = e_count,
                             .top_k = sh.top_k,
                             .expert_ids = dev_ids[s],
                             .expert_weights = dev_w,
                             .dtype = dtype,
                             .gate = dev_table,
                             .up = dev_table + e_count,
                             .down = dev_table + 2 * e_count,
                             .gate_scale_inv = fp8 ? scales : nullptr,
                             .up_scale_inv = fp8 ? scales + e_count : nullptr,
                             .down_scale_inv = fp8 ? scales + 2 * e_count : nullptr,
                             .h = dev_h}));
    };
    // The model's fallback: ids back to the host, grouping up, then the ops per expert.
    auto grouped = [&] {
      const int s = set++ % kSets;
      std::vector<int32_t> host_ids(pairs);
      CHECK_OK(b.CopyToHost(host_ids.data(), dev_ids[s], pairs * sizeof(int32_t)));
      std::vector<int32_t> order(pairs);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t c) { return host_ids[a] < host_ids[c]; });
      for (int64_t i = 0; i < pairs; ++i) {
        group_host[i] = static_cast<int32_t>(order[i] / sh.top_k);
        const float wt = 0.3f;
        std::memcpy(&group_host[pairs + i], &wt, sizeof(float));
      }
      CHECK_OK(b.CopyToBackend(group_dev, group_host.data(), group_host.size() * sizeof(int32_t)));
      for (int64_t i = 0; i < pairs;) {
        int64_t n = 1;
        while (i + n < pairs && host_ids[order[i + n]] == host_ids[order[i]]) ++n;
        const int32_t e = host_ids[order[i]];
        CHECK_OK(b.GatherRows(
            {.x = dev_x, .x_rows = rows, .index = group_dev + i, .rows = n, .dim = d, .out = xe}));
        CHECK_OK(b.Linear({.x = xe, .rows = n, .weight = gate[e], .y = gu, .y_stride = 2 * w}));
        CHECK_OK(b.Linear({.x = xe, .rows = n, .weight = up[e], .y = gu + w, .y_stride = 2 * w}));
        CHECK_OK(b.SiluMul({.gate = gu,
                            .gate_stride = 2 * w,
                            .up = gu + w,
                            .up_stride = 2 * w,
                            .out = gu,
                            .out_stride = 2 * w,
                            .rows = n,
                            .dim = w}));
        CHECK_OK(b.Linear({.x = gu, .x_stride = 2 * w, .rows = n, .weight = down[e], .y = ye}));
        CHECK_OK(b.ScatterAddRows({.x = ye,
                                   .index = group_dev + i,
                                   .scale = reinterpret_cast<const float*>(group_dev + pairs) + i,
                                   .rows = n,
                                   .dim = d,
                                   .out = dev_h,
                                   .out_rows = rows}));
        i += n;
      }
    };
    double mean_distinct = 0;
    for (int64_t v : distinct) mean_distinct += static_cast<double>(v) / kSets;
    const double bytes = mean_distinct * static_cast<double>(expert_bytes);
    const double fused_us = MedianUs(b, fused);
    const double grouped_us = MedianUs(b, grouped);
    const double gbs = bytes / (fused_us * 1e3);
    std::printf(
        "%-8s %-7s rows %2lld  MoeExperts %8.1f us  %7.0f GB/s (%4.1f%% of floor)  "
        "per-expert path %8.1f us  speedup %.2fx\n",
        sh.name, fp8 ? "fp8" : "bf16", static_cast<long long>(rows), fused_us, gbs,
        100.0 * gbs / kCopyGBs, grouped_us, grouped_us / fused_us);
  }
  for (void* p : owned) b.Free(p);
}

}  // namespace
}  // namespace r2

int main() {
  absl::StatusOr<std::unique_ptr<r2::Backend>> b = r2::MakeBackend("cuda");
  if (!b.ok()) {
    std::printf("skipped: %s\n", std::string(b.status().message()).c_str());
    return 0;
  }
  const r2::Shape shapes[] = {{"bench-2b", 2048, 512, 64, 6}, {"v3", 7168, 2048, 32, 8}};
  std::printf("=== MoeExperts (one MoE layer's routed experts), H200 copy floor %.0f GB/s\n",
              r2::kCopyGBs);
  for (const r2::Shape& sh : shapes) {
    for (r2::DType dtype : {r2::DType::kBF16, r2::DType::kF8E4M3}) Run(**b, sh, dtype);
  }
  return 0;
}

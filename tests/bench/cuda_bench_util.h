#pragma once
// What the CUDA benchmarks (tests/bench/cuda_*_bench.cc) share: checks that end the program
// naming the failed call, a deterministic byte source, per-call timing as the median of samples,
// and the device-to-device copy bandwidth that weight-streaming kernels are judged against.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

// Ends the program (exit 1) when a CUDA runtime call fails.
#define CHECK_CUDA(call)                                                      \
  do {                                                                        \
    cudaError_t _e = (call);                                                  \
    if (_e != cudaSuccess) {                                                  \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(_e)); \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

// Ends the program (exit 1) when an absl::Status is not OK.
#define CHECK_OK(expr)                                                        \
  do {                                                                        \
    absl::Status _st = (expr);                                                \
    if (!_st.ok()) {                                                          \
      std::fprintf(stderr, "%s failed: %s\n", #expr, _st.ToString().c_str()); \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

namespace r2::bench {

// The "cuda" backend, or null after printing "skipped: no CUDA device (why)" (the bench then
// exits 0), and on success a line naming device 0, its SM count and L2 size.
inline std::unique_ptr<Backend> CudaBackendOrSkip() {
  absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeBackend("cuda");
  if (!gpu.ok()) {
    std::printf("skipped: no CUDA device (%s)\n", gpu.status().ToString().c_str());
    return nullptr;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);
  return *std::move(gpu);
}

// xorshift64: the same sequence on every run (one stream for the whole program).
inline uint64_t NextRandom() {
  static uint64_t state = 0x9E3779B97F4A7C15ull;
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

// n bytes from NextRandom.
inline std::vector<uint8_t> RandomBytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t r = NextRandom();
    std::memcpy(&v[i], &r, std::min<size_t>(8, n - i));
  }
  return v;
}

// Per-call seconds: two warm-up calls, then the median of 7 samples of `iters` back-to-back calls
// (iters sized from one timed call so that a sample lasts >= 3 ms, 1..500), each bracketed by
// sync() and divided by iters.
inline double TimeIt(const std::function<void()>& call, const std::function<void()>& sync) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < 2; ++i) call();
  sync();
  auto t0 = Clock::now();
  call();
  sync();
  const double once = std::chrono::duration<double>(Clock::now() - t0).count();
  const int iters = static_cast<int>(std::clamp(3e-3 / std::max(once, 1e-7), 1.0, 500.0));
  std::vector<double> samples;
  for (int s = 0; s < 7; ++s) {
    t0 = Clock::now();
    for (int i = 0; i < iters; ++i) call();
    sync();
    samples.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / iters);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

// Device-to-device copy bandwidth in GB/s, (read + written bytes) / time: 1 GiB copies on
// `stream` timed with CUDA events, the median of 9 after 2 warm-ups.
inline double CopyBandwidth(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemsetAsync(a, 1, bytes, stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<double> samples;
  for (int i = 0; i < 11; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (i >= 2) samples.push_back(2.0 * bytes / (ms * 1e-3) / 1e9);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

}  // namespace r2::bench

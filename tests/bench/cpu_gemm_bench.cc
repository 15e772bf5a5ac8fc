// Linear on the optimized "cpu" backend at the small model's prefill and decode shapes: GFLOP/s
// (2 flops per multiply-add) and, for the decode shapes, GB/s of weights read. Median of `reps`
// calls after one warm-up call; the last column divides by the calling thread's CPU time instead
// of wall time (with OMP_NUM_THREADS=1 that is the whole product's, and it does not count the
// time slices other processes take on a shared machine); the weights of each shape are distinct
// buffers, so a decode-sized call reads them from wherever the previous calls left them (use rows=1
// with big shapes for a DRAM-bound number).
//
//   OMP_NUM_THREADS=1 build/<dir>/tests/r2_cpu_gemm_bench [isa=avx512|avx2|portable] [reps=9]
//                                                        [dtype=bf16|f32|f16|fp8]
//                                                        [shapes=ROWSxINxOUT,...]
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
#include "kernels/cpu/opt_backend.h"
#include "kernels/numeric.h"

namespace r2 {
namespace {

double Clock(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Shape {
  int64_t rows, in, out;
};

// The small model's Linear shapes at a 512-token prefill (routed experts get ~48 rows each), and
// decode at batch 1.
const char* kDefaultShapes =
    "512x1024x384,512x384x1536,512x1024x288,512x256x2048,512x1024x1024,512x1024x128,"
    "512x128x1024,48x1024x128,48x128x1024,16x1024x128,1x1024x2816,1x2816x1024";

std::vector<Shape> ParseShapes(const std::string& s) {
  std::vector<Shape> shapes;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    Shape sh{};
    if (std::sscanf(s.substr(pos, end - pos).c_str(), "%ldx%ldx%ld", &sh.rows, &sh.in, &sh.out) !=
            3 ||
        sh.rows < 1 || sh.in < 1 || sh.out < 1) {
      std::fprintf(stderr, "bad shape '%s' (want ROWSxINxOUT, each >= 1)\n",
                   s.substr(pos, end - pos).c_str());
      std::exit(2);
    }
    shapes.push_back(sh);
    pos = end + 1;
  }
  return shapes;
}

int Main(int argc, char** argv) {
  std::string isa_name = "best", dtype_name = "bf16", shapes_arg = kDefaultShapes;
  int reps = 9;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    const std::string key = a.substr(0, eq),
                      value = eq == std::string::npos ? "" : a.substr(eq + 1);
    if (key == "isa") {
      isa_name = value;
    } else if (key == "dtype") {
      dtype_name = value;
    } else if (key == "shapes") {
      shapes_arg = value;
    } else if (key == "reps") {
      reps = std::max(1, std::atoi(value.c_str()));
    } else {
      std::fprintf(stderr, "unknown argument '%s'\n", a.c_str());
      return 2;
    }
  }
  CpuIsa isa = DetectCpuIsa();
  if (isa_name == "avx512") isa = CpuIsa::kAvx512;
  if (isa_name == "avx2") isa = CpuIsa::kAvx2;
  if (isa_name == "portable") isa = CpuIsa::kPortable;
  auto made = MakeCpuOptimizedBackend(isa);
  if (!made.ok()) {
    std::fprintf(stderr, "%s\n", std::string(made.status().message()).c_str());
    return 1;
  }
  std::unique_ptr<Backend> backend = *std::move(made);
  DType dtype = DType::kBF16;
  if (dtype_name == "f32") dtype = DType::kF32;
  if (dtype_name == "f16") dtype = DType::kF16;
  if (dtype_name == "fp8") dtype = DType::kF8E4M3;
  std::printf("backend %s, weights %s\n", std::string(backend->name()).c_str(),
              std::string(DTypeName(dtype)).c_str());
  std::printf("%-16s %10s %10s %10s %12s\n", "rows x in x out", "ms", "GFLOP/s", "GB/s(w)",
              "GFLOP/s(cpu)");
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  for (const Shape& s : ParseShapes(shapes_arg)) {
    const int64_t elem = static_cast<int64_t>(DTypeSize(dtype));
    std::vector<uint8_t> w(s.out * s.in * elem);
    for (int64_t i = 0; i < s.out * s.in; ++i) {
      const float f = dist(rng);
      if (dtype == DType::kBF16) {
        const uint16_t b = FloatToBF16(f);
        std::memcpy(&w[2 * i], &b, 2);
      } else if (dtype == DType::kF16) {
        const uint16_t b = FloatToHalf(f);
        std::memcpy(&w[2 * i], &b, 2);
      } else if (dtype == DType::kF8E4M3) {
        w[i] = FloatToFp8E4M3(f);
      } else {
        std::memcpy(&w[4 * i], &f, 4);
      }
    }
    const int64_t blk = 128;
    std::vector<float> scales(((s.out + blk - 1) / blk) * ((s.in + blk - 1) / blk), 0.01f);
    WeightView view{.weight = TensorView{dtype, {s.out, s.in}, w.data()}};
    if (dtype == DType::kF8E4M3) {
      view.scale_inv =
          TensorView{DType::kF32, {(s.out + blk - 1) / blk, (s.in + blk - 1) / blk}, scales.data()};
      view.block_out = view.block_in = blk;
    }
    std::vector<float> x(s.rows * s.in), y(s.rows * s.out);
    for (float& v : x) v = dist(rng);
    const LinearParams p{.x = x.data(), .rows = s.rows, .weight = view, .y = y.data()};
    std::vector<double> times, cpu_times;
    for (int r = 0; r <= reps; ++r) {
      const double t0 = Clock(CLOCK_MONOTONIC), c0 = Clock(CLOCK_THREAD_CPUTIME_ID);
      const absl::Status st = backend->Linear(p);
      const double t = Clock(CLOCK_MONOTONIC) - t0, c = Clock(CLOCK_THREAD_CPUTIME_ID) - c0;
      if (r > 0) cpu_times.push_back(c);
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
        return 1;
      }
      if (r > 0) times.push_back(t);
    }
    std::sort(times.begin(), times.end());
    std::sort(cpu_times.begin(), cpu_times.end());
    const double t = times[times.size() / 2], c = cpu_times[cpu_times.size() / 2];
    char name[64];
    std::snprintf(name, sizeof name, "%ldx%ldx%ld", s.rows, s.in, s.out);
    std::printf("%-16s %10.3f %10.1f %10.2f %12.1f\n", name, 1e3 * t,
                2.0 * s.rows * s.in * s.out / t * 1e-9, static_cast<double>(w.size()) / t * 1e-9,
                2.0 * s.rows * s.in * s.out / c * 1e-9);
  }
  return 0;
}

}  // namespace
}  // namespace r2

int main(int argc, char** argv) { return r2::Main(argc, argv); }

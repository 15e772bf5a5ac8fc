// CUDA Linear with integer weights (kernels/cuda/linear_int.cu) on DeepSeek-V3 expert shapes
// (7168 -> 2048 gate/up, 2048 -> 7168 down): W8A8 (int8 per channel, f32 scales) and W4A16 (int4
// in groups of 128, bf16 scales, with and without zero points), the GEMV at 1 row as GB/s of
// weight bytes (quantized values + scales + zero points) against the device-to-device copy
// bandwidth measured in the same run, and the time at 8, 64 and 512 rows.
//
//   build/<dir>/tests/r2_cuda_int_linear_bench   (prints "skipped: ..." and exits 0 without GPU)
//
// Method as tests/bench/cuda_gemm_bench.cc: random data; each weight rotated among enough copies
// to exceed the L2 cache (60 MB on H200) so every call reads HBM; warm-up, then the median of 7
// samples, each the wall time of enough back-to-back calls to last >= 3 ms divided by the call
// count, bracketed by Synchronize(). Not yet run on a GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/numeric.h"
#include "kernels/tensor.h"
#include "tests/bench/cuda_bench_util.h"

namespace {

using r2::bench::NextRandom;
using r2::bench::RandomBytes;
using r2::bench::TimeIt;

constexpr size_t kRotateBytes = size_t{160} << 20;  // > 2x the H200's 60 MB L2

struct Format {
  const char* name;
  r2::DType dtype;
  bool zeros;
};

class Bench {
 public:
  explicit Bench(std::unique_ptr<r2::Backend> gpu) : gpu_(std::move(gpu)) {}

  void* Upload(const std::vector<uint8_t>& bytes) {
    absl::StatusOr<void*> p = gpu_->Allocate(bytes.size());
    CHECK_OK(p.status());
    CHECK_OK(gpu_->CopyToBackend(*p, bytes.data(), bytes.size()));
    return *p;
  }

  // One shape and format: a line with the 1-row GB/s and the times at 1, 8, 64 and 512 rows.
  void Run(const char* shape, int64_t in, int64_t out, const Format& f, double copy_gbps) {
    const bool i8 = f.dtype == r2::DType::kI8;
    const int64_t group = i8 ? in : 128, groups = (in + group - 1) / group;
    const int64_t row_bytes = i8 ? in : r2::PackedU4RowBytes(in);
    std::vector<uint8_t> data = RandomBytes(out * row_bytes);
    if (i8) {
      for (auto& b : data) b = (b == 0x80) ? 0x81 : b;  // no -128 (the converter never writes it)
    }
    std::vector<uint8_t> scale(out * groups * (i8 ? 4 : 2));
    for (int64_t i = 0; i < out * groups; ++i) {
      if (i8) {
        const float s = 0.01f;
        std::memcpy(&scale[4 * i], &s, 4);
      } else {
        const uint16_t s = r2::FloatToBF16(0.01f);
        std::memcpy(&scale[2 * i], &s, 2);
      }
    }
    std::vector<uint8_t> zero =
        f.zeros ? RandomBytes(((out + 7) / 8) * groups * 4) : std::vector<uint8_t>{};
    const double weight_bytes = static_cast<double>(data.size() + scale.size() + zero.size());
    const int copies = static_cast<int>(std::max<double>(1.0, kRotateBytes / weight_bytes + 1));
    std::vector<r2::WeightView> views;
    std::vector<void*> owned;
    for (int c = 0; c < copies; ++c) {
      r2::WeightView w;
      void* d = Upload(data);
      void* s = Upload(scale);
      owned.push_back(d);
      owned.push_back(s);
      w.weight = r2::TensorView{f.dtype, {out, in}, d};
      w.scale = r2::TensorView{i8 ? r2::DType::kF32 : r2::DType::kBF16, {out, groups}, s};
      if (f.zeros) {
        void* z = Upload(zero);
        owned.push_back(z);
        w.zero_point = r2::TensorView{r2::DType::kI32, {(out + 7) / 8, groups}, z};
      }
      w.group_size = group;
      views.push_back(w);
    }
    const int64_t max_rows = 512;
    std::vector<uint8_t> xb(max_rows * in * 4);
    for (int64_t i = 0; i < max_rows * in; ++i) {
      const float v =
          static_cast<float>(static_cast<int32_t>(NextRandom() >> 33) % 2000 - 1000) / 1e3f;
      std::memcpy(&xb[4 * i], &v, 4);
    }
    void* x = Upload(xb);
    absl::StatusOr<void*> y = gpu_->Allocate(max_rows * out * 4);
    CHECK_OK(y.status());
    double us[4] = {0, 0, 0, 0};
    const int64_t row_counts[4] = {1, 8, 64, 512};
    for (int k = 0; k < 4; ++k) {
      int next = 0;
      auto call = [&] {
        CHECK_OK(gpu_->Linear({.x = static_cast<const float*>(x),
                               .rows = row_counts[k],
                               .weight = views[next],
                               .y = static_cast<float*>(*y)}));
        next = (next + 1) % copies;
      };
      us[k] = 1e6 * TimeIt(call, [&] { CHECK_OK(gpu_->Synchronize()); });
    }
    const double gbps = weight_bytes / (us[0] * 1e-6) / 1e9;
    char line[256];
    std::snprintf(line, sizeof(line), "%-12s %-7s %9.1f %6.0f %5.0f%% | %8.1f %8.1f %9.1f", shape,
                  f.name, us[0], gbps, 100 * gbps / copy_gbps, us[1], us[2], us[3]);
    std::printf("%s\n", line);
    std::fflush(stdout);
    lines_.push_back(line);
    for (void* p : owned) gpu_->Free(p);
    gpu_->Free(x);
    gpu_->Free(*y);
  }

  void PrintTable(double copy_gbps) const {
    std::printf(
        "\n=== cuda_int_linear_bench: integer-weight Linear, GB/s of weight bytes at 1 row "
        "(D2D copy %.0f GB/s)\n",
        copy_gbps);
    std::printf("%-12s %-7s %9s %6s %6s | %8s %8s %9s\n", "shape", "format", "r1_us", "GB/s",
                "%copy", "r8_us", "r64_us", "r512_us");
    for (const std::string& l : lines_) std::printf("%s\n", l.c_str());
  }

 private:
  std::unique_ptr<r2::Backend> gpu_;
  std::vector<std::string> lines_;
};

}  // namespace

int main() {
  std::unique_ptr<r2::Backend> gpu = r2::bench::CudaBackendOrSkip();
  if (gpu == nullptr) return 0;
  const double copy = r2::bench::CopyBandwidth(nullptr);
  std::printf("copy bandwidth %.0f GB/s\n", copy);
  Bench bench(std::move(gpu));
  const Format formats[] = {{"int8", r2::DType::kI8, false},
                            {"int4", r2::DType::kU4, false},
                            {"int4-zp", r2::DType::kU4, true}};
  for (const Format& f : formats) {
    bench.Run("7168>2048", 7168, 2048, f, copy);
    bench.Run("2048>7168", 2048, 7168, f, copy);
  }
  bench.PrintTable(copy);
  return 0;
}

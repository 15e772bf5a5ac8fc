// CUDA Linear benchmark: the backend's Linear (GEMV kernels for few rows, cuBLASLt for more) on
// DeepSeek-V3 projection shapes, bf16 and fp8 (128x128 block-scaled) weights, against raw cuBLASLt
// bf16 GEMMs on the same shapes, and the GEMV path's achieved weight bandwidth against the
// device-to-device copy bandwidth measured in the same run.
//
//   build/<dir>/tests/r2_cuda_gemm_bench            (prints "skipped: ..." and exits 0 without GPU)
//
// Method: random data; each weight rotated among enough copies that they exceed the L2 cache
// (60 MB on H200) so every pass reads HBM; warm-up, then the median of 7 samples, each the wall
// time of enough back-to-back calls to last >= 3 ms divided by the call count (the backend's
// stream is not exposed, so samples are bracketed by Synchronize(); the same method times the
// baseline). TFLOP/s = 2 * rows * in * out / time; GB/s counts the weight bytes read once.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/bench/cuda_bench_util.h"

namespace {

using r2::bench::NextRandom;
using r2::bench::TimeIt;

#define CHECK_LT(call)                                                             \
  do {                                                                             \
    cublasStatus_t _s = (call);                                                    \
    if (_s != CUBLAS_STATUS_SUCCESS) {                                             \
      std::fprintf(stderr, "%s failed: status %d\n", #call, static_cast<int>(_s)); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

constexpr size_t kRotateBytes = size_t{160} << 20;  // > 2x the H200's 60 MB L2

enum class Kind { kBF16, kFP8, kF32 };

// Random host bytes that decode to small finite values of `kind`.
std::vector<uint8_t> RandomBytes(size_t n, Kind kind) {
  std::vector<uint8_t> v = r2::bench::RandomBytes(n);
  if (kind == Kind::kBF16) {  // sign | exponent 118..125 | mantissa: |x| in [2^-9, 2^-1)
    for (size_t i = 0; i + 1 < n; i += 2) {
      const uint16_t m = v[i] & 0x7f, e = 118 + (v[i + 1] & 7), s = v[i + 1] & 0x80;
      const uint16_t b = static_cast<uint16_t>((s << 8) | (e << 7) | m);
      std::memcpy(&v[i], &b, 2);
    }
  } else if (kind == Kind::kFP8) {  // exponent <= 6: finite, |x| < 1
    for (auto& b : v) b &= 0xB7;
  } else {  // f32 in (-1, 1)
    for (size_t i = 0; i + 3 < n; i += 4) {
      const float f = static_cast<float>(static_cast<int32_t>(NextRandom() >> 33) % 100000) / 1e5f;
      std::memcpy(&v[i], &f, 4);
    }
  }
  return v;
}

struct Shape {
  const char* name;
  int64_t in, out;
};

struct Row {
  std::string shape, dtype;
  int64_t rows;
  double us, tflops, gbps, vs_cublas;  // gbps/vs_cublas < 0: not applicable
};

class Bench {
 public:
  explicit Bench(std::unique_ptr<r2::Backend> gpu) : gpu_(std::move(gpu)) {
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CHECK_LT(cublasLtCreate(&lt_));
    CHECK_CUDA(cudaMalloc(&workspace_, kWorkspace));
    random_ = RandomBytes(size_t{64} << 20, Kind::kBF16);
    random_fp8_ = RandomBytes(size_t{64} << 20, Kind::kFP8);
    random_f32_ = RandomBytes(size_t{64} << 20, Kind::kF32);
  }
  ~Bench() {
    cudaFree(workspace_);
    cublasLtDestroy(lt_);
    cudaStreamDestroy(stream_);
  }

  // Device-to-device copy bandwidth in GB/s on the bench's stream (cuda_bench_util.h).
  double CopyBandwidth() { return r2::bench::CopyBandwidth(stream_); }

  void* Fill(size_t bytes, const std::vector<uint8_t>& src) {
    absl::StatusOr<void*> p = gpu_->Allocate(bytes);
    CHECK_OK(p.status());
    for (size_t done = 0; done < bytes; done += src.size()) {
      CHECK_OK(gpu_->CopyToBackend(static_cast<char*>(*p) + done, src.data(),
                                   std::min(src.size(), bytes - done)));
    }
    return *p;
  }

  void RunShape(const Shape& s, const std::vector<int64_t>& row_counts, double copy_gbps) {
    const int64_t max_rows = *std::max_element(row_counts.begin(), row_counts.end());
    float* x = static_cast<float*>(Fill(max_rows * s.in * 4, random_f32_));
    float* y = static_cast<float*>(Fill(max_rows * s.out * 4, random_f32_));
    void* xb = Fill(max_rows * s.in * 2, random_);  // bf16 activations for the baseline
    for (Kind kind : {Kind::kBF16, Kind::kFP8}) {
      const size_t esize = kind == Kind::kBF16 ? 2 : 1;
      const size_t wbytes = s.in * s.out * esize;
      const int copies =
          static_cast<int>(std::max<size_t>(1, (kRotateBytes + wbytes - 1) / wbytes));
      std::vector<void*> weights;
      for (int c = 0; c < copies; ++c) {
        weights.push_back(Fill(wbytes, kind == Kind::kBF16 ? random_ : random_fp8_));
      }
      const int64_t so = (s.out + 127) / 128, si = (s.in + 127) / 128;
      std::vector<float> scales(so * si, 0.01f);
      float* d_scales = static_cast<float*>(*gpu_->Allocate(scales.size() * 4));
      CHECK_OK(gpu_->CopyToBackend(d_scales, scales.data(), scales.size() * 4));
      for (int64_t rows : row_counts) {
        int next = 0;
        auto call = [&] {
          r2::WeightView w;
          w.weight = r2::TensorView{kind == Kind::kBF16 ? r2::DType::kBF16 : r2::DType::kF8E4M3,
                                    {s.out, s.in},
                                    weights[next]};
          if (kind == Kind::kFP8) w.scale_inv = r2::TensorView{r2::DType::kF32, {so, si}, d_scales};
          next = (next + 1) % copies;
          CHECK_OK(gpu_->Linear({.x = x, .rows = rows, .weight = w, .y = y}));
        };
        const double t = TimeIt(call, [&] { CHECK_OK(gpu_->Synchronize()); });
        Row r{s.name,  kind == Kind::kBF16 ? "bf16" : "fp8", rows,
              t * 1e6, 2.0 * rows * s.in * s.out / t / 1e12, -1,
              -1};
        if (rows <= 64) r.gbps = wbytes / t / 1e9;
        // The bf16 pass runs first and times the baseline for both dtypes.
        if (kind == Kind::kBF16) baseline_s_[rows] = Baseline(s, rows, weights, xb, y);
        if (baseline_s_[rows] > 0) r.vs_cublas = baseline_s_[rows] / t;
        std::printf(
            "%-14s %-5s rows %5lld  %10.1f us  %7.2f TFLOP/s  %s\n", r.shape.c_str(),
            r.dtype.c_str(), static_cast<long long>(rows), r.us, r.tflops,
            r.gbps > 0 ? (std::to_string(static_cast<int>(r.gbps)) + " GB/s (" +
                          std::to_string(static_cast<int>(100 * r.gbps / copy_gbps)) + "% of copy)")
                             .c_str()
                       : "");
        std::fflush(stdout);
        rows_.push_back(r);
      }
      for (void* w : weights) gpu_->Free(w);
      gpu_->Free(d_scales);
    }
    gpu_->Free(x);
    gpu_->Free(y);
    gpu_->Free(xb);
  }

  // Raw cuBLASLt: bf16 W [out, in] x bf16 x [rows, in] -> fp32 y, best heuristic algorithm.
  double Baseline(const Shape& s, int64_t rows, const std::vector<void*>& weights, void* xb,
                  float* y) {
    cublasLtMatmulDesc_t op;
    CHECK_LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtMatrixLayout_t a, b, c;
    CHECK_LT(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, s.in, s.out, s.in));
    CHECK_LT(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, s.in, rows, s.in));
    CHECK_LT(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, s.out, rows, s.out));
    cublasLtMatmulPreference_t pref;
    CHECK_LT(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspace;
    CHECK_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof(ws)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    CHECK_LT(cublasLtMatmulAlgoGetHeuristic(lt_, op, a, b, c, c, pref, 1, &result, &found));
    double t = 0;
    if (found > 0) {
      int next = 0;
      const float alpha = 1, beta = 0;
      auto call = [&] {
        CHECK_LT(cublasLtMatmul(lt_, op, &alpha, weights[next], a, xb, b, &beta, y, c, y, c,
                                &result.algo, workspace_, kWorkspace, stream_));
        next = (next + 1) % static_cast<int>(weights.size());
      };
      t = TimeIt(call, [&] { CHECK_CUDA(cudaStreamSynchronize(stream_)); });
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(c);
    cublasLtMatmulDescDestroy(op);
    return t;
  }

  // The short table last: one line per shape and weight type, rows 1 (GEMV), 8, 64 and 4096.
  void PrintTable(double copy_gbps) const {
    std::printf(
        "\n=== cuda_gemm_bench: Linear vs raw cuBLASLt bf16 (x = its time / ours), "
        "D2D copy %.0f GB/s\n",
        copy_gbps);
    std::printf("%-15s %-4s %8s %6s %5s | %8s %5s | %7s %5s | %7s %5s\n", "shape", "wt", "r1_us",
                "%copy", "x", "r8_us", "x", "r64_TF", "x", "r4k_TF", "x");
    for (size_t i = 0; i < rows_.size(); ++i) {
      if (rows_[i].rows != 1) continue;
      auto find = [&](int64_t rows) -> const Row* {
        for (const Row& r : rows_) {
          if (r.shape == rows_[i].shape && r.dtype == rows_[i].dtype && r.rows == rows) return &r;
        }
        return nullptr;
      };
      const Row *r1 = find(1), *r8 = find(8), *r64 = find(64), *r4k = find(4096);
      if (!r1 || !r8 || !r64 || !r4k) continue;
      std::printf("%-15s %-4s %8.1f %5.0f%% %5.2f | %8.1f %5.2f | %7.1f %5.2f | %7.1f %5.2f\n",
                  r1->shape.c_str(), r1->dtype.c_str(), r1->us, 100 * r1->gbps / copy_gbps,
                  r1->vs_cublas, r8->us, r8->vs_cublas, r64->tflops, r64->vs_cublas, r4k->tflops,
                  r4k->vs_cublas);
    }
  }

 private:
  static constexpr size_t kWorkspace = size_t{32} << 20;
  std::unique_ptr<r2::Backend> gpu_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  std::vector<uint8_t> random_, random_fp8_, random_f32_;
  std::vector<Row> rows_;
  std::map<int64_t, double> baseline_s_;  // rows -> seconds per raw cuBLASLt call
};

}  // namespace

int main() {
  std::unique_ptr<r2::Backend> gpu = r2::bench::CudaBackendOrSkip();
  if (gpu == nullptr) return 0;
  Bench bench(std::move(gpu));
  const double copy = bench.CopyBandwidth();
  std::printf("copy bandwidth %.0f GB/s\n", copy);
  const Shape shapes[] = {{"q_a 7168>1536", 7168, 1536},
                          {"gate 7168>18432", 7168, 18432},
                          {"down 2048>7168", 2048, 7168},
                          {"lm_head", 7168, 129280}};
  for (const Shape& s : shapes) bench.RunShape(s, {1, 2, 4, 8, 16, 32, 64, 128, 4096}, copy);
  bench.PrintTable(copy);
  return 0;
}

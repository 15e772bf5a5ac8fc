#pragma once
// A random MoeExperts case (experts in bf16/f16/f32 or block-scaled fp8, routed tokens, a
// residual stream) with its expected result computed directly in double, and a copy of the case
// in a backend's memory (weights, scales, pointer tables, activations) ready to run. Shared by
// the reference test (tests/unit/kernels) and the CUDA test (tests/unit/cuda).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2::testing {

struct MoeExpertsCase {
  int64_t rows = 0, hidden = 0, width = 0, experts = 0, top_k = 0;
  int64_t x_stride = 0, h_stride = 0;  // padded rows; the padding holds NaN
  DType dtype = DType::kBF16;
  int64_t block_out = 128, block_in = 128;
  std::vector<float> x, h;  // [rows, x_stride], [rows, h_stride]
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<StoredTensor> gate, up, down;              // per expert
  std::vector<std::vector<float>> gate_s, up_s, down_s;  // fp8 scale_inv per expert

  // h after the op, computed in double from the stored (rounded) weights.
  std::vector<double> Expected() const {
    std::vector<double> out(h.begin(), h.end());
    std::vector<double> g(width), act(width), acc(hidden);
    for (int64_t t = 0; t < rows; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < top_k; ++j) {
        const int32_t e = ids[t * top_k + j];
        for (int64_t o = 0; o < width; ++o) {
          double gs = 0, us = 0;
          for (int64_t i = 0; i < hidden; ++i) {
            gs += W(gate[e], gate_s, e, hidden, o, i) * x[t * x_stride + i];
            us += W(up[e], up_s, e, hidden, o, i) * x[t * x_stride + i];
          }
          act[o] = gs / (1.0 + std::exp(-gs)) * us;
        }
        for (int64_t o = 0; o < hidden; ++o) {
          double y = 0;
          for (int64_t i = 0; i < width; ++i) y += W(down[e], down_s, e, width, o, i) * act[i];
          acc[o] += weights[t * top_k + j] * y;
        }
      }
      for (int64_t o = 0; o < hidden; ++o) out[t * h_stride + o] += acc[o];
    }
    return out;
  }

  double W(const StoredTensor& w, const std::vector<std::vector<float>>& s, int32_t e, int64_t in,
           int64_t o, int64_t i) const {
    double v = w.decoded[o * in + i];
    if (dtype == DType::kF8E4M3) {
      const int64_t cols = (in + block_in - 1) / block_in;
      v *= s[e][(o / block_out) * cols + i / block_in];
    }
    return v;
  }
};

inline std::vector<float> RandomScales(std::mt19937& rng, int64_t out, int64_t in, int64_t bo,
                                       int64_t bi) {
  std::uniform_real_distribution<float> dist(0.5f, 2.0f);
  std::vector<float> s(((out + bo - 1) / bo) * ((in + bi - 1) / bi));
  for (float& v : s) v = dist(rng) / 64.0f;
  return s;
}

inline MoeExpertsCase MakeMoeExpertsCase(uint32_t seed, int64_t rows, int64_t hidden, int64_t width,
                                         int64_t experts, int64_t top_k, DType dtype,
                                         int64_t block_out = 128, int64_t block_in = 128) {
  std::mt19937 rng(seed);
  MoeExpertsCase c;
  c.rows = rows, c.hidden = hidden, c.width = width, c.experts = experts, c.top_k = top_k;
  c.dtype = dtype, c.block_out = block_out, c.block_in = block_in;
  c.x_stride = hidden + 5;
  c.h_stride = hidden + 3;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  c.x.assign(rows * c.x_stride, nan);
  c.h.assign(rows * c.h_stride, nan);
  const std::vector<float> x = RandomFloats(rng, rows * hidden);
  const std::vector<float> h = RandomFloats(rng, rows * hidden);
  for (int64_t t = 0; t < rows; ++t) {
    std::copy_n(&x[t * hidden], hidden, &c.x[t * c.x_stride]);
    std::copy_n(&h[t * hidden], hidden, &c.h[t * c.h_stride]);
  }
  std::vector<int32_t> all(experts);
  std::iota(all.begin(), all.end(), 0);
  std::uniform_real_distribution<float> weight(0.1f, 1.5f);
  for (int64_t t = 0; t < rows; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    for (int64_t j = 0; j < top_k; ++j) {
      c.ids.push_back(all[j]);
      c.weights.push_back(weight(rng));
    }
  }
  const bool fp8 = dtype == DType::kF8E4M3;
  // fp8 values spread over the format's range; the scales bring them back to ~1/sqrt(in).
  const float gu_scale = fp8 ? 16.0f : 1.0f / std::sqrt(static_cast<float>(hidden));
  const float d_scale = fp8 ? 16.0f : 1.0f / std::sqrt(static_cast<float>(width));
  for (int64_t e = 0; e < experts; ++e) {
    c.gate.push_back(Store(RandomFloats(rng, width * hidden, gu_scale), dtype, {width, hidden}));
    c.up.push_back(Store(RandomFloats(rng, width * hidden, gu_scale), dtype, {width, hidden}));
    c.down.push_back(Store(RandomFloats(rng, hidden * width, d_scale), dtype, {hidden, width}));
    if (fp8) {
      c.gate_s.push_back(RandomScales(rng, width, hidden, block_out, block_in));
      c.up_s.push_back(RandomScales(rng, width, hidden, block_out, block_in));
      c.down_s.push_back(RandomScales(rng, hidden, width, block_out, block_in));
    }
  }
  return c;
}

// A case copied into a backend's memory (Allocate + CopyToBackend), freed on destruction.
class BackendMoeExperts {
 public:
  BackendMoeExperts(Backend* backend, const MoeExpertsCase& c) : backend_(backend) {
    const bool fp8 = c.dtype == DType::kF8E4M3;
    std::vector<const void*> gate, up, down, gs, us, ds;
    for (int64_t e = 0; e < c.experts; ++e) {
      gate.push_back(Put(c.gate[e].bytes));
      up.push_back(Put(c.up[e].bytes));
      down.push_back(Put(c.down[e].bytes));
      if (fp8) {
        gs.push_back(Put(c.gate_s[e]));
        us.push_back(Put(c.up_s[e]));
        ds.push_back(Put(c.down_s[e]));
      }
    }
    h_ = static_cast<float*>(Put(c.h));
    params.x = static_cast<const float*>(Put(c.x));
    params.x_stride = c.x_stride;
    params.rows = c.rows;
    params.hidden = c.hidden;
    params.width = c.width;
    params.num_experts = c.experts;
    params.top_k = c.top_k;
    params.expert_ids = static_cast<const int32_t*>(Put(c.ids));
    params.expert_weights = static_cast<const float*>(Put(c.weights));
    params.dtype = c.dtype;
    params.gate = static_cast<const void* const*>(Put(gate));
    params.up = static_cast<const void* const*>(Put(up));
    params.down = static_cast<const void* const*>(Put(down));
    if (fp8) {
      params.gate_scale_inv = static_cast<const float* const*>(Put(gs));
      params.up_scale_inv = static_cast<const float* const*>(Put(us));
      params.down_scale_inv = static_cast<const float* const*>(Put(ds));
    }
    params.block_out = c.block_out;
    params.block_in = c.block_in;
    params.h = h_;
    params.h_stride = c.h_stride;
    h_count_ = c.h.size();
  }
  BackendMoeExperts(const BackendMoeExperts&) = delete;
  BackendMoeExperts& operator=(const BackendMoeExperts&) = delete;
  ~BackendMoeExperts() {
    for (void* p : allocations_) backend_->Free(p);
  }

  std::vector<float> ReadH() const {
    std::vector<float> out(h_count_);
    const absl::Status s = backend_->CopyToHost(out.data(), h_, out.size() * sizeof(float));
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  MoeExpertsParams params;

 private:
  template <typename T>
  void* Put(const std::vector<T>& v) {
    const size_t bytes = std::max<size_t>(v.size() * sizeof(T), 1);
    absl::StatusOr<void*> p = backend_->Allocate(bytes);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return nullptr;
    allocations_.push_back(*p);
    const absl::Status s = backend_->CopyToBackend(*p, v.data(), v.size() * sizeof(T));
    EXPECT_TRUE(s.ok()) << s;
    return *p;
  }

  Backend* backend_;
  std::vector<void*> allocations_;
  float* h_ = nullptr;
  size_t h_count_ = 0;
};

// max |a - b| / max |b| over the rows' first `hidden` values; the padding of `a` must still be
// NaN (the op wrote nothing there).
inline double MoeExpertsError(const MoeExpertsCase& c, const std::vector<float>& a,
                              const std::vector<double>& b) {
  double diff = 0, ref = 0;
  for (int64_t t = 0; t < c.rows; ++t) {
    for (int64_t o = 0; o < c.h_stride; ++o) {
      const size_t i = t * c.h_stride + o;
      if (o >= c.hidden) {
        EXPECT_TRUE(std::isnan(a[i])) << "h padding written at row " << t << " column " << o;
        continue;
      }
      if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
      diff = std::max(diff, std::fabs(a[i] - b[i]));
      ref = std::max(ref, std::fabs(b[i]));
    }
  }
  return ref == 0 ? diff : diff / ref;
}

}  // namespace r2::testing

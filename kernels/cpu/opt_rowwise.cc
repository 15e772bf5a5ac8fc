// Row-wise ops of the optimized CPU backend: RMSNorm and SwiGLU's silu(gate) * up vectorized and
// threaded over rows, the embedding gather a row at a time, and the MoE router without per-row
// allocations.
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {

absl::Status OptRmsNorm(const SimdKernels& k, const RmsNormParams& p) {
  const TensorView& w = p.weight;
  if (p.dim <= 0 || p.rows < 0 || (p.rows > 0 && (p.x == nullptr || p.y == nullptr)) ||
      w.data == nullptr || !IsFloatStorage(w.dtype) || w.numel() != p.dim) {
    return RmsNorm(p);  // the reference names what is wrong
  }
  if (p.rows == 0) return absl::OkStatus();
  const int64_t xs = Stride(p.x_stride, p.dim), ys = Stride(p.y_stride, p.dim);
  // The weight as float32: read in place when it is (and aligned), else widened once per call (a
  // plain loop for bf16, which the compiler vectorizes; per-element LoadFloat took 1-2 us of
  // every call).
  const float* weight = static_cast<const float*>(w.data);
  if (w.dtype != DType::kF32 || reinterpret_cast<uintptr_t>(w.data) % alignof(float) != 0) {
    float* widened = ThreadScratch(1, p.dim);
    if (w.dtype == DType::kBF16) {
      const auto* h = static_cast<const uint16_t*>(w.data);
      auto* bits = reinterpret_cast<uint32_t*>(widened);
      for (int64_t j = 0; j < p.dim; ++j) bits[j] = static_cast<uint32_t>(h[j]) << 16;
    } else {  // f16, or f32 at an unaligned address
      for (int64_t j = 0; j < p.dim; ++j) widened[j] = LoadFloat(w.data, w.dtype, j);
    }
    weight = widened;
  }
  CpuThreadPool::Get().ParallelFor(
      p.rows,
      [&](int64_t i) {
        const float* x = p.x + i * xs;
        const float sum_sq = k.sum_squares(x, p.dim);
        const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(p.dim) + p.eps);
        k.scale_mul(x, weight, inv_rms, p.y + i * ys, p.dim);
      },
      p.rows * p.dim >= kOptParallelWork * 4);
  return absl::OkStatus();
}

absl::Status OptEmbedding(const SimdKernels& k, const EmbeddingParams& p) {
  const TensorView& t = p.table;
  if (t.data == nullptr || t.shape.size() != 2 || !IsFloatStorage(t.dtype) || p.rows < 0 ||
      (p.rows > 0 && (p.ids == nullptr || p.out == nullptr))) {
    return Embedding(p);  // the reference names what is wrong
  }
  const int64_t vocab = t.dim(0), dim = t.dim(1), out_stride = Stride(p.out_stride, dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    if (p.ids[i] < 0 || p.ids[i] >= vocab) return Embedding(p);
  }
  // Whole rows widened at once (per-element LoadFloat took ~5 us a row of 1024).
  const int64_t elem = static_cast<int64_t>(DTypeSize(t.dtype));
  const auto* table = static_cast<const uint8_t*>(t.data);
  for (int64_t i = 0; i < p.rows; ++i) {
    const uint8_t* row = table + p.ids[i] * dim * elem;
    float* out = p.out + i * out_stride;
    if (t.dtype == DType::kBF16) {
      auto* bits = reinterpret_cast<uint32_t*>(out);
      for (int64_t j = 0; j < dim; ++j) {
        uint16_t h;
        std::memcpy(&h, row + 2 * j, 2);
        bits[j] = static_cast<uint32_t>(h) << 16;
      }
    } else if (t.dtype == DType::kF16) {
      k.decode_f16(row, out, dim);
    } else {
      std::memcpy(out, row, dim * 4);
    }
  }
  return absl::OkStatus();
}

absl::Status OptSiluMul(const SimdKernels& k, const SiluMulParams& p) {
  if (p.rows < 0 || p.dim <= 0 ||
      (p.rows > 0 && (p.gate == nullptr || p.up == nullptr || p.out == nullptr))) {
    return SiluMul(p);
  }
  const int64_t gs = Stride(p.gate_stride, p.dim), us = Stride(p.up_stride, p.dim);
  const int64_t os = Stride(p.out_stride, p.dim);
  CpuThreadPool::Get().ParallelFor(
      p.rows, [&](int64_t i) { k.silu_mul(p.gate + i * gs, p.up + i * us, p.out + i * os, p.dim); },
      p.rows * p.dim >= kOptParallelWork);
  return absl::OkStatus();
}

namespace {

bool RouteArgsOk(const MoeRouteParams& p) {
  if (p.rows < 0 || p.num_experts <= 0 || p.n_group <= 0 || p.num_experts % p.n_group != 0) {
    return false;
  }
  if (p.topk_group < 1 || p.topk_group > p.n_group) return false;
  const int64_t group_size = p.num_experts / p.n_group;
  if (p.n_group > 1 && p.group_score == MoeGroupScore::kTop2Sum && group_size < 2) return false;
  if (p.top_k < 1 || p.top_k > p.topk_group * group_size) return false;
  return p.rows == 0 || (p.logits && p.expert_ids && p.expert_weights);
}

// Writes the k best of v[0, n) (largest first, lower index on ties) to ids; `taken` (n bytes)
// is scratch.
void TopK(const float* v, int64_t n, int64_t k, int32_t* ids, bool* taken) {
  for (int64_t i = 0; i < n; ++i) taken[i] = false;
  for (int64_t c = 0; c < k; ++c) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    }
    taken[best] = true;
    ids[c] = static_cast<int32_t>(best);
  }
}

void RouteRow(const MoeRouteParams& p, const float* logits, int32_t* ids, float* weights) {
  const int64_t e = p.num_experts, groups = p.n_group, group_size = e / groups;
  // Scratch: s, c, group scores, group ids (as floats' storage), taken flags.
  float* s = ThreadScratch(2, 2 * e + groups);
  float* c = s + e;
  float* group_scores = c + e;
  thread_local std::vector<int32_t> id_buf;
  thread_local std::vector<char> taken_buf;
  if (static_cast<int64_t>(id_buf.size()) < groups) id_buf.resize(groups);
  if (static_cast<int64_t>(taken_buf.size()) < e) taken_buf.resize(e);
  bool* taken = reinterpret_cast<bool*>(taken_buf.data());
  if (p.scoring == MoeScoring::kSigmoid) {
    for (int64_t i = 0; i < e; ++i) s[i] = 1.0f / (1.0f + std::exp(-logits[i]));
  } else {
    float max = logits[0];
    for (int64_t i = 1; i < e; ++i) max = logits[i] > max ? logits[i] : max;
    float sum = 0.0f;
    for (int64_t i = 0; i < e; ++i) sum += s[i] = std::exp(logits[i] - max);
    for (int64_t i = 0; i < e; ++i) s[i] /= sum;
  }
  for (int64_t i = 0; i < e; ++i) c[i] = s[i] + (p.bias ? p.bias[i] : 0.0f);
  if (p.topk_group < groups) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* cg = c + g * group_size;
      float first = -std::numeric_limits<float>::infinity(), second = first;
      for (int64_t i = 0; i < group_size; ++i) {
        if (cg[i] > first) {
          second = first;
          first = cg[i];
        } else if (cg[i] > second) {
          second = cg[i];
        }
      }
      group_scores[g] = p.group_score == MoeGroupScore::kMax ? first : first + second;
    }
    TopK(group_scores, groups, p.topk_group, id_buf.data(), taken);
    for (int64_t g = 0; g < groups; ++g) taken[g] = false;
    for (int64_t i = 0; i < p.topk_group; ++i) taken[id_buf[i]] = true;
    for (int64_t g = 0; g < groups; ++g) {
      if (taken[g]) continue;
      for (int64_t i = 0; i < group_size; ++i) {
        c[g * group_size + i] = -std::numeric_limits<float>::infinity();
      }
    }
  }
  TopK(c, e, p.top_k, ids, taken);
  float sum = 0.0f;
  for (int64_t i = 0; i < p.top_k; ++i) sum += s[ids[i]];
  const float norm = p.norm_topk_prob ? 1.0f / (sum + 1e-20f) : 1.0f;
  for (int64_t i = 0; i < p.top_k; ++i) weights[i] = s[ids[i]] * norm * p.scaling_factor;
}

}  // namespace

absl::Status OptMoeRoute(const MoeRouteParams& p) {
  if (!RouteArgsOk(p)) return MoeRoute(p);
  const int64_t ls = Stride(p.logits_stride, p.num_experts);
  CpuThreadPool::Get().ParallelFor(
      p.rows,
      [&](int64_t t) {
        RouteRow(p, p.logits + t * ls, p.expert_ids + t * p.top_k, p.expert_weights + t * p.top_k);
      },
      // A row takes ~1.5-2.5 us (a scalar exp per expert, then top-k scans): worth a second
      // thread from about four rows of 64 experts (one decode batch of 8 was ~12 us on one).
      p.rows * p.num_experts * 256 >= kOptParallelWork);
  return absl::OkStatus();
}

}  // namespace r2::cpu

// MoeExperts for decode-sized batches: the routed experts of every (token, expert) pair in three
// launches and no host round trip.
//  1. GateUpKernel, grid (row tiles of width, pairs): one warp per output row o computes
//     gate_e[o] . x[t] and up_e[o] . x[t] together (x[t] in shared memory, float32; bf16 or fp8
//     weights dequantized in registers, each selected expert's rows read once per pair) and
//     writes act[pair, o] = silu(gate) * up.
//  2. DownKernel, grid (row tiles of hidden, pairs): y[pair, o] = down_e[o] . act[pair].
//  3. CombineKernel: h[t, o] += sum_{j < top_k} w[t, j] * y[t * top_k + j, o], j in order.
// A pair whose expert id is out of range contributes nothing (the kernels skip it).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cpu/reference_ops.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/linear_int.h"

namespace r2::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kGateUpRowsPerWarp = 2;  // output rows of gate and of up per warp
constexpr int kGateUpRows = kWarps * kGateUpRowsPerWarp;
constexpr int kDownRowsPerWarp = 4;
constexpr int kDownRows = kWarps * kDownRowsPerWarp;
constexpr int64_t kMaxSharedFloats = 48 * 1024 / 4;

struct Bf16W {
  using Storage = __nv_bfloat16;
  static constexpr int kVec = 8;  // elements per 16-byte load
};
struct Fp8W {
  using Storage = uint8_t;
  static constexpr int kVec = 16;
};

__device__ __forceinline__ float2 Fp8x2ToFloat2(unsigned short pair) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
  return __half22float2(__half2(h));
}

template <typename WT>
__device__ __forceinline__ float LoadOne(const typename WT::Storage* w, int64_t j) {
  if constexpr (std::is_same_v<WT, Fp8W>) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(w[j], __NV_E4M3);
    return __half2float(__half(h));
  } else {
    return __bfloat162float(w[j]);
  }
}

// Dot of one 16-byte word of weights (kVec values) with sx[0 .. kVec).
template <typename WT>
__device__ __forceinline__ float DotWord(const uint4 word, const float* sx) {
  const uint32_t parts[4] = {word.x, word.y, word.z, word.w};
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<WT, Fp8W>) {
      const float2 lo = Fp8x2ToFloat2(static_cast<unsigned short>(parts[i] & 0xffffu));
      const float2 hi = Fp8x2ToFloat2(static_cast<unsigned short>(parts[i] >> 16));
      acc = fmaf(lo.x, sx[4 * i], acc);
      acc = fmaf(lo.y, sx[4 * i + 1], acc);
      acc = fmaf(hi.x, sx[4 * i + 2], acc);
      acc = fmaf(hi.y, sx[4 * i + 3], acc);
    } else {
      __nv_bfloat162 b;
      memcpy(&b, &parts[i], 4);
      const float2 f = __bfloat1622float2(b);
      acc = fmaf(f.x, sx[2 * i], acc);
      acc = fmaf(f.y, sx[2 * i + 1], acc);
    }
  }
  return acc;
}

// R rows of [out, in] expert weights dotted with sx (shared memory, `in` floats), each summed
// over the warp (every lane returns the totals). Lane `lane` reads the same columns of every row,
// so each x value is read from shared memory once per R rows, and R independent 16-byte loads
// are in flight per step. scales[r]: fp8 only, row r's row of the expert's scale matrix.
template <typename WT, int R>
__device__ __forceinline__ void MultiRowDot(const typename WT::Storage* const (&rows)[R],
                                            const float* const (&scales)[R], int64_t in,
                                            int64_t block_in, bool vec, const float* sx,
                                            float (&out)[R]) {
  constexpr bool kFp8 = std::is_same_v<WT, Fp8W>;
  constexpr int V = WT::kVec;
  const int lane = threadIdx.x & 31;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  if (vec) {  // in % V == 0, 16-byte aligned rows; fp8: block_in % V == 0
#pragma unroll 2
    for (int64_t c = lane; c < in / V; c += 32) {
      float xv[V];
#pragma unroll
      for (int i = 0; i < V / 4; ++i) {
        const float4 f = reinterpret_cast<const float4*>(sx + c * V)[i];
        xv[4 * i] = f.x;
        xv[4 * i + 1] = f.y;
        xv[4 * i + 2] = f.z;
        xv[4 * i + 3] = f.w;
      }
      uint4 words[R];
#pragma unroll
      for (int r = 0; r < R; ++r) words[r] = __ldg(reinterpret_cast<const uint4*>(rows[r]) + c);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float part = DotWord<WT>(words[r], xv);
        if constexpr (kFp8) {
          acc[r] = fmaf(part, __ldg(scales[r] + (c * V) / block_in), acc[r]);
        } else {
          acc[r] += part;
        }
      }
    }
  } else {
    for (int64_t j = lane; j < in; j += 32) {
      const float xj = sx[j];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float v = LoadOne<WT>(rows[r], j) * xj;
        if constexpr (kFp8) v *= __ldg(scales[r] + j / block_in);
        acc[r] += v;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) out[r] = WarpSum(acc[r]);
}

// Row o of an [out, in] weight and (fp8) its row of scales.
template <typename WT>
__device__ __forceinline__ const typename WT::Storage* RowOf(const void* w, int64_t in, int64_t o) {
  return static_cast<const typename WT::Storage*>(w) + o * in;
}
__device__ __forceinline__ const float* ScaleRowOf(const float* s, int64_t in, int64_t o,
                                                   int64_t block_out, int64_t block_in) {
  return s == nullptr ? nullptr : s + (o / block_out) * ((in + block_in - 1) / block_in);
}

struct ExpertArgs {
  const float* x;
  int64_t xs;
  int64_t hidden, width, num_experts, top_k;
  const int32_t* ids;
  const void* const* gate;
  const void* const* up;
  const void* const* down;
  const float* const* gate_scale;
  const float* const* up_scale;
  const float* const* down_scale;
  int64_t block_out, block_in;
  bool vec_in_hidden;  // vector loads for rows of `hidden` values (gate, up)
  bool vec_in_width;   // ... of `width` values (down)
  float* act;          // [pairs, width]
  float* y;            // [pairs, hidden]
};

__device__ __forceinline__ bool Aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Output rows [blockIdx.x * kGateUpRows, +kGateUpRows) of gate and up for pair blockIdx.y; warp
// w takes rows w, w + kWarps, ... (kGateUpRowsPerWarp of them, both matrices at once).
template <typename WT>
__global__ void __launch_bounds__(kThreads) GateUpKernel(ExpertArgs a) {
  extern __shared__ float sx[];
  const int64_t pair = blockIdx.y;
  const int32_t e = a.ids[pair];
  if (e < 0 || e >= a.num_experts) return;
  const float* x = a.x + (pair / a.top_k) * a.xs;
  for (int64_t j = threadIdx.x; j < a.hidden; j += kThreads) sx[j] = x[j];
  __syncthreads();
  constexpr bool kFp8 = std::is_same_v<WT, Fp8W>;
  constexpr int R = kGateUpRowsPerWarp;
  const void* gate = a.gate[e];
  const void* up = a.up[e];
  const float* gs = kFp8 ? a.gate_scale[e] : nullptr;
  const float* us = kFp8 ? a.up_scale[e] : nullptr;
  const bool vec = a.vec_in_hidden && Aligned16(gate) && Aligned16(up);
  const int warp = threadIdx.x / 32;
  int64_t o[R];
  const typename WT::Storage* rows[2 * R];
  const float* scales[2 * R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    o[r] = static_cast<int64_t>(blockIdx.x) * kGateUpRows + warp + r * kWarps;
    const int64_t row = o[r] < a.width ? o[r] : 0;  // past the edge: read row 0, drop the result
    rows[r] = RowOf<WT>(gate, a.hidden, row);
    rows[R + r] = RowOf<WT>(up, a.hidden, row);
    scales[r] = ScaleRowOf(gs, a.hidden, row, a.block_out, a.block_in);
    scales[R + r] = ScaleRowOf(us, a.hidden, row, a.block_out, a.block_in);
  }
  float dots[2 * R];
  MultiRowDot<WT, 2 * R>(rows, scales, a.hidden, a.block_in, vec, sx, dots);
  if ((threadIdx.x & 31) != 0) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (o[r] >= a.width) continue;
    const float g = dots[r], u = dots[R + r];
    a.act[pair * a.width + o[r]] = g / (1.0f + expf(-g)) * u;
  }
}

// y[pair, o] for rows [blockIdx.x * kDownRows, +kDownRows) of down, pair blockIdx.y.
template <typename WT>
__global__ void __launch_bounds__(kThreads) DownKernel(ExpertArgs a) {
  extern __shared__ float sx[];
  const int64_t pair = blockIdx.y;
  const int32_t e = a.ids[pair];
  if (e < 0 || e >= a.num_experts) return;
  const float* act = a.act + pair * a.width;
  for (int64_t j = threadIdx.x; j < a.width; j += kThreads) sx[j] = act[j];
  __syncthreads();
  constexpr int R = kDownRowsPerWarp;
  const void* down = a.down[e];
  const float* ds = std::is_same_v<WT, Fp8W> ? a.down_scale[e] : nullptr;
  const bool vec = a.vec_in_width && Aligned16(down);
  const int warp = threadIdx.x / 32;
  int64_t o[R];
  const typename WT::Storage* rows[R];
  const float* scales[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    o[r] = static_cast<int64_t>(blockIdx.x) * kDownRows + warp + r * kWarps;
    const int64_t row = o[r] < a.hidden ? o[r] : 0;
    rows[r] = RowOf<WT>(down, a.width, row);
    scales[r] = ScaleRowOf(ds, a.width, row, a.block_out, a.block_in);
  }
  float dots[R];
  MultiRowDot<WT, R>(rows, scales, a.width, a.block_in, vec, sx, dots);
  if ((threadIdx.x & 31) != 0) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (o[r] < a.hidden) a.y[pair * a.hidden + o[r]] = dots[r];
  }
}

// h[t, o] += sum_j w[t, j] * y[t * top_k + j, o], j = 0, 1, ... (out-of-range ids skipped).
__global__ void CombineKernel(const float* __restrict__ y, const int32_t* __restrict__ ids,
                              const float* __restrict__ weights, int64_t rows, int64_t top_k,
                              int64_t hidden, int64_t num_experts, float* __restrict__ h,
                              int64_t hs) {
  const int64_t t = blockIdx.y;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < hidden;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t pair = t * top_k + j;
      const int32_t e = ids[pair];
      if (e < 0 || e >= num_experts) continue;
      acc += weights[pair] * y[pair * hidden + o];
    }
    h[t * hs + o] += acc;
  }
}

template <typename WT>
absl::Status Launch(const Context& ctx, const MoeExpertsParams& p, ExpertArgs a, int64_t pairs) {
  constexpr int V = WT::kVec;
  constexpr bool kFp8 = std::is_same_v<WT, Fp8W>;
  const int64_t elem = sizeof(typename WT::Storage);
  a.vec_in_hidden =
      a.hidden % V == 0 && (a.hidden * elem) % 16 == 0 && (!kFp8 || a.block_in % V == 0);
  a.vec_in_width = a.width % V == 0 && (a.width * elem) % 16 == 0 && (!kFp8 || a.block_in % V == 0);
  const dim3 gate_grid(static_cast<unsigned>(CeilDiv(a.width, kGateUpRows)),
                       static_cast<unsigned>(pairs));
  GateUpKernel<WT><<<gate_grid, kThreads, a.hidden * sizeof(float), ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MoeExperts (gate/up)");
  const dim3 down_grid(static_cast<unsigned>(CeilDiv(a.hidden, kDownRows)),
                       static_cast<unsigned>(pairs));
  DownKernel<WT><<<down_grid, kThreads, a.width * sizeof(float), ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MoeExperts (down)");
  const dim3 combine_grid(static_cast<unsigned>(CeilDiv(a.hidden, 256)),
                          static_cast<unsigned>(p.rows));
  CombineKernel<<<combine_grid, 256, 0, ctx.stream>>>(a.y, p.expert_ids, p.expert_weights, p.rows,
                                                      p.top_k, a.hidden, a.num_experts, p.h,
                                                      StrideOr(p.h_stride, a.hidden));
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MoeExperts (combine)");
  return absl::OkStatus();
}

}  // namespace

absl::Status MoeExperts(const Context& ctx, const MoeExpertsParams& p) {
  // Expert views in any Linear format (I8/U4 included): one Linear per selected expert.
  if (p.expert_views != nullptr) return MoeExpertsByExpert(ctx, p);  // linear_int.cu
  if (absl::Status s = cpu::CheckMoeExperts(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  const int64_t pairs = p.rows * p.top_k;
  if (pairs > kMoeExpertsMaxPairs) {
    return absl::UnimplementedError(absl::StrCat("MoeExperts: ", pairs, " (token, expert) pairs; ",
                                                 "the CUDA kernels take at most ",
                                                 kMoeExpertsMaxPairs));
  }
  if (p.dtype != DType::kBF16 && p.dtype != DType::kF8E4M3) {
    return absl::UnimplementedError(
        absl::StrCat("MoeExperts: CUDA takes bf16 or f8_e4m3 experts, not ", DTypeStr(p.dtype)));
  }
  if (p.hidden > kMaxSharedFloats || p.width > kMaxSharedFloats) {
    return absl::UnimplementedError(absl::StrCat("MoeExperts: hidden ", p.hidden, " or width ",
                                                 p.width, " above ", kMaxSharedFloats));
  }
  const size_t act_bytes = static_cast<size_t>(pairs * p.width) * sizeof(float);
  const size_t act_padded = (act_bytes + 255) / 256 * 256;
  const size_t y_bytes = static_cast<size_t>(pairs * p.hidden) * sizeof(float);
  absl::StatusOr<void*> scratch = ctx.misc_scratch.Get(act_padded + y_bytes, ctx.stream);
  if (!scratch.ok()) return scratch.status();
  ExpertArgs a{};
  a.x = p.x;
  a.xs = StrideOr(p.x_stride, p.hidden);
  a.hidden = p.hidden;
  a.width = p.width;
  a.num_experts = p.num_experts;
  a.top_k = p.top_k;
  a.ids = p.expert_ids;
  a.gate = p.gate;
  a.up = p.up;
  a.down = p.down;
  a.gate_scale = p.gate_scale_inv;
  a.up_scale = p.up_scale_inv;
  a.down_scale = p.down_scale_inv;
  a.block_out = p.block_out;
  a.block_in = p.block_in;
  a.act = static_cast<float*>(*scratch);
  a.y = reinterpret_cast<float*>(static_cast<char*>(*scratch) + act_padded);
  if (p.dtype == DType::kF8E4M3) return Launch<Fp8W>(ctx, p, a, pairs);
  return Launch<Bf16W>(ctx, p, a, pairs);
}

}  // namespace r2::cuda

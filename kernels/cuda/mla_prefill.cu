// MlaPrefillAttention: MLA in its plain form (per-head keys [k_nope; k_pe], values v) over a
// variable-length batch, causal with bottom-right alignment, as one tiled kernel with an online
// softmax (running max and sum per query row) accumulating in float32.
//
// A thread block owns kRows query rows of one head of one sequence and walks that sequence's key
// tiles up to the last key its rows see. The host cannot read cu_seqlens (device arrays), so the
// grid is (sequence, head, z) and block z takes the sequence's query tiles z, z + gridDim.z, ...
// Value widths past 16 * kCols columns run as several launches over column ranges.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/smem_opt_in.h"

namespace r2::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// Tile row stride: the width rounded up to 4 floats with an odd number of float4s (16-byte loads
// from different rows land in different banks).
__host__ __device__ inline int PrefillStride(int width) {
  int w4 = (width + 3) / 4 * 4;
  if ((w4 / 4) % 2 == 0) w4 += 4;
  return w4;
}

struct PrefillArgs {
  MlaPrefillParams p;
  int dq;    // nope_dim + rope_dim
  int col0;  // first value column of this launch
  int cols;  // value columns of this launch (<= 16 * kCols)
};

// Shared memory: Q [kRows][sq], K [kKeys][sq], V [kKeys][16 kCols], P [kKeys][kRows + 4].
template <int kRows, int kKeys, int kCols>
size_t PrefillSmemBytes(int dq) {
  const size_t sq = PrefillStride(dq);
  return sizeof(float) * (kRows * sq + kKeys * sq + kKeys * 16 * kCols + kKeys * (kRows + 4));
}

// Block: kRows * 4 threads; thread (ty, tx) = (tid / 16, tid % 16) owns query rows 4 ty .. 4 ty +
// 3, score columns tx + 16 j and value columns tx + 16 c.
template <int kRows, int kKeys, int kCols>
__global__ void __launch_bounds__(kRows * 4) MlaPrefillKernel(PrefillArgs a) {
  constexpr int kThreads = kRows * 4, kWarps = kThreads / 32;
  constexpr int kKeysPerThread = kKeys / 16, kPs = kRows + 4, kVs = 16 * kCols;
  static_assert(kRows % 8 == 0 && kKeys % 16 == 0, "tile shape");
  extern __shared__ float4 smem4[];
  const MlaPrefillParams& p = a.p;
  const int b = blockIdx.x, h = blockIdx.y;
  const int q_begin = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q_begin;
  const int k_begin = p.cu_seqlens_k[b], k_len = p.cu_seqlens_k[b + 1] - k_begin;
  if (q_len <= 0 || q_len > k_len) return;  // nothing to do, or metadata the caller rejects
  const int sq = PrefillStride(a.dq);
  float* qs = reinterpret_cast<float*>(smem4);
  float* ks = qs + kRows * sq;
  float* vs = ks + kKeys * sq;
  float* ps = vs + kKeys * kVs;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int ty = tid / 16, tx = tid % 16;
  const float scale_log2 = p.softmax_scale * kLog2e;
  const int nope = static_cast<int>(p.nope_dim);

  for (int r0 = blockIdx.z * kRows; r0 < q_len; r0 += gridDim.z * kRows) {
    __syncthreads();  // the previous tile's readers are done
    for (int r = warp; r < kRows; r += kWarps) {
      const bool row_ok = r0 + r < q_len;
      const float* q = p.q + (q_begin + r0 + r) * p.q_token_stride + h * p.q_head_stride;
      for (int d = lane; d < sq; d += 32) qs[r * sq + d] = row_ok && d < a.dq ? q[d] : 0.0f;
    }
    float m[4], l[4], acc[4][kCols];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      m[i] = -INFINITY;
      l[i] = 0.0f;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[i][c] = 0.0f;
    }
    // Keys seen by the tile's last row; row r sees keys j <= k_len - q_len + r.
    const int last_row = min(q_len, r0 + kRows) - 1;
    const int k_end = k_len - q_len + last_row + 1;
    for (int j0 = 0; j0 < k_end; j0 += kKeys) {
      __syncthreads();  // readers of ks / vs / ps from the previous key tile are done
      for (int r = warp; r < kKeys; r += kWarps) {
        const int j = j0 + r;
        const bool ok = j < k_end;
        const int64_t kt = k_begin + j;
        const float* kn = p.k_nope + kt * p.k_nope_token_stride + h * p.k_nope_head_stride;
        const float* kp = p.k_pe + kt * p.k_pe_token_stride;
        for (int d = lane; d < sq; d += 32) {
          ks[r * sq + d] = !ok || d >= a.dq ? 0.0f : d < nope ? kn[d] : kp[d - nope];
        }
        const float* v = p.v + kt * p.v_token_stride + h * p.v_head_stride + a.col0;
        for (int d = lane; d < kVs; d += 32) vs[r * kVs + d] = ok && d < a.cols ? v[d] : 0.0f;
      }
      __syncthreads();

      float s[4][kKeysPerThread];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int jj = 0; jj < kKeysPerThread; ++jj) s[i][jj] = 0.0f;
      }
      for (int d4 = 0; d4 < sq / 4; ++d4) {
        float4 qv[4], kv[kKeysPerThread];
#pragma unroll
        for (int i = 0; i < 4; ++i)
          qv[i] = reinterpret_cast<const float4*>(qs + (4 * ty + i) * sq)[d4];
#pragma unroll
        for (int jj = 0; jj < kKeysPerThread; ++jj) {
          kv[jj] = reinterpret_cast<const float4*>(ks + (tx + 16 * jj) * sq)[d4];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int jj = 0; jj < kKeysPerThread; ++jj) {
            s[i][jj] +=
                qv[i].x * kv[jj].x + qv[i].y * kv[jj].y + qv[i].z * kv[jj].z + qv[i].w * kv[jj].w;
          }
        }
      }

      // Mask, online softmax over the 16 lanes sharing each row, P to shared memory.
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = r0 + 4 * ty + i;
        const int limit = row < q_len ? k_len - q_len + row : -1;  // last key this row sees
        float tile_max = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < kKeysPerThread; ++jj) {
          const int j = j0 + tx + 16 * jj;
          s[i][jj] = j <= limit ? s[i][jj] * scale_log2 : -INFINITY;
          tile_max = fmaxf(tile_max, s[i][jj]);
        }
#pragma unroll
        for (int o = 8; o > 0; o /= 2)
          tile_max = fmaxf(tile_max, __shfl_xor_sync(~0u, tile_max, o));
        const float m_new = fmaxf(m[i], tile_max);
        const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m[i] - m_new);
        float sum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kKeysPerThread; ++jj) {
          const float e = s[i][jj] == -INFINITY ? 0.0f : exp2f(s[i][jj] - m_new);
          ps[(tx + 16 * jj) * kPs + 4 * ty + i] = e;
          sum += e;
        }
#pragma unroll
        for (int o = 8; o > 0; o /= 2) sum += __shfl_xor_sync(~0u, sum, o);
        m[i] = m_new;
        l[i] = l[i] * alpha + sum;
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[i][c] *= alpha;
      }
      __syncthreads();

      const int keys = min(kKeys, k_end - j0);
      for (int k = 0; k < keys; ++k) {
        const float4 pv = reinterpret_cast<const float4*>(ps + k * kPs)[ty];
        const float* vrow = vs + k * kVs + tx;
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          const float v = vrow[16 * c];
          acc[0][c] += pv.x * v;
          acc[1][c] += pv.y * v;
          acc[2][c] += pv.z * v;
          acc[3][c] += pv.w * v;
        }
      }
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int row = r0 + 4 * ty + i;
      if (row >= q_len || l[i] <= 0.0f) continue;
      const float inv = 1.0f / l[i];
      float* out = p.out + (q_begin + row) * p.out_token_stride + h * p.out_head_stride + a.col0;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int col = tx + 16 * c;
        if (col < a.cols) out[col] = acc[i][c] * inv;
      }
    }
  }
}

}  // namespace
}  // namespace r2::cuda

#include "kernels/cuda/mla_prefill_mma.cuh"

namespace r2::cuda {
namespace {

// The tensor-core kernel takes V3's head dims when every k / v row is 16-byte aligned.
bool UseMmaPrefill(const PrefillArgs& a, int64_t smem_limit) {
  const MlaPrefillParams& p = a.p;
  auto aligned = [](const float* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.nope_dim == kPmNope && p.rope_dim == kPmRope && p.v_dim == kPmDv && aligned(p.k_nope) &&
         aligned(p.k_pe) && aligned(p.v) && p.k_nope_token_stride % 4 == 0 &&
         p.k_nope_head_stride % 4 == 0 && p.k_pe_token_stride % 4 == 0 &&
         p.v_token_stride % 4 == 0 && p.v_head_stride % 4 == 0 &&
         static_cast<int64_t>(PrefillMmaSmemBytes()) <= smem_limit;
}

absl::Status LaunchPrefillMma(const Context& ctx, const PrefillArgs& a, dim3 grid) {
  const size_t smem = PrefillMmaSmemBytes();
  static SmemOptIn opt_in;
  if (absl::Status s = EnsureSmemOptIn(opt_in, &MlaPrefillMmaKernel, ctx, smem); !s.ok()) return s;
  MlaPrefillMmaKernel<<<grid, kPmThreads, smem, ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MlaPrefillMmaKernel");
  return absl::OkStatus();
}

absl::Status Invalid(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

template <int kRows, int kKeys, int kCols>
absl::Status LaunchPrefill(const Context& ctx, const PrefillArgs& a, dim3 grid) {
  const size_t smem = PrefillSmemBytes<kRows, kKeys, kCols>(a.dq);
  auto* kernel = &MlaPrefillKernel<kRows, kKeys, kCols>;
  static SmemOptIn opt_in;
  if (absl::Status s = EnsureSmemOptIn(opt_in, kernel, ctx, smem); !s.ok()) return s;
  kernel<<<grid, kRows * 4, smem, ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MlaPrefillKernel");
  return absl::OkStatus();
}

}  // namespace

absl::Status MlaPrefillAttention(const Context& ctx, const MlaPrefillParams& p) {
  constexpr char kOp[] = "MlaPrefillAttention";
  if (p.heads <= 0 || p.nope_dim < 0 || p.rope_dim < 0 || p.v_dim <= 0 ||
      p.nope_dim + p.rope_dim <= 0) {
    return Invalid(kOp, "bad head dimensions");
  }
  if (p.num_seqs < 0) return Invalid(kOp, "num_seqs must be >= 0");
  if (p.num_seqs == 0) return absl::OkStatus();
  if (!p.cu_seqlens_q || !p.cu_seqlens_k) return Invalid(kOp, "null cu_seqlens");
  if (!p.q || !p.k_nope || !p.k_pe || !p.v || !p.out) return Invalid(kOp, "null tensor");
  if (p.heads > 65535) return Invalid(kOp, "more than 65535 heads");
  if (p.nope_dim + p.rope_dim > (1 << 16) || p.v_dim > (1 << 20)) {
    return Invalid(kOp, "head dimensions too large");
  }
  PrefillArgs a{};
  a.p = p;
  a.dq = static_cast<int>(p.nope_dim + p.rope_dim);
  const int64_t heads = p.heads;
  // Packed defaults for zero strides.
  if (a.p.q_head_stride == 0) a.p.q_head_stride = a.dq;
  if (a.p.q_token_stride == 0) a.p.q_token_stride = heads * a.p.q_head_stride;
  if (a.p.k_nope_head_stride == 0) a.p.k_nope_head_stride = p.nope_dim;
  if (a.p.k_nope_token_stride == 0) a.p.k_nope_token_stride = heads * a.p.k_nope_head_stride;
  if (a.p.k_pe_token_stride == 0) a.p.k_pe_token_stride = p.rope_dim;
  if (a.p.v_head_stride == 0) a.p.v_head_stride = p.v_dim;
  if (a.p.v_token_stride == 0) a.p.v_token_stride = heads * a.p.v_head_stride;
  if (a.p.out_head_stride == 0) a.p.out_head_stride = p.v_dim;
  if (a.p.out_token_stride == 0) a.p.out_token_stride = heads * a.p.out_head_stride;
  if (a.p.q_token_stride < 0 || a.p.q_head_stride < 0 || a.p.k_nope_token_stride < 0 ||
      a.p.k_nope_head_stride < 0 || a.p.k_pe_token_stride < 0 || a.p.v_token_stride < 0 ||
      a.p.v_head_stride < 0 || a.p.out_token_stride < 0 || a.p.out_head_stride < 0) {
    return Invalid(kOp, "negative stride");
  }

  const int64_t smem_limit =
      ctx.max_smem_per_block_optin > 0 ? ctx.max_smem_per_block_optin : 48 * 1024;
  const bool big = static_cast<int64_t>(PrefillSmemBytes<64, 64, 8>(a.dq)) <= smem_limit;
  if (!big && static_cast<int64_t>(PrefillSmemBytes<16, 16, 8>(a.dq)) > smem_limit) {
    return Invalid(kOp, absl::StrCat("head dimension ", a.dq, " too large for shared memory"));
  }
  // About four blocks per SM over (sequence, head); block z strides over the query tiles.
  const int64_t pairs = p.num_seqs * heads;
  const int64_t z =
      std::clamp<int64_t>((4 * std::max(ctx.sm_count, 1) + pairs - 1) / pairs, 1, 1024);
  if (p.num_seqs > (int64_t{1} << 31) - 1) return Invalid(kOp, "too many sequences");
  const dim3 grid(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(heads),
                  static_cast<unsigned>(z));
  if (UseMmaPrefill(a, smem_limit)) {
    a.col0 = 0;
    a.cols = static_cast<int>(p.v_dim);
    return LaunchPrefillMma(ctx, a, grid);
  }
  const int v_dim = static_cast<int>(p.v_dim);
  // One launch per 128 value columns (V3's 128 in one); narrower heads use narrower tiles.
  for (int col0 = 0; col0 < v_dim; col0 += 128) {
    a.col0 = col0;
    a.cols = std::min(128, v_dim - col0);
    const absl::Status s = !big           ? LaunchPrefill<16, 16, 8>(ctx, a, grid)
                           : a.cols <= 16 ? LaunchPrefill<64, 64, 1>(ctx, a, grid)
                           : a.cols <= 32 ? LaunchPrefill<64, 64, 2>(ctx, a, grid)
                           : a.cols <= 64 ? LaunchPrefill<64, 64, 4>(ctx, a, grid)
                                          : LaunchPrefill<64, 64, 8>(ctx, a, grid);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace r2::cuda

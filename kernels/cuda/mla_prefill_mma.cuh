#pragma once
// The tensor-core MlaPrefillAttention kernel for DeepSeek-V3's plain-form heads (q/k 128 + 64,
// v 128), float32 in and out through split bf16 mma.sync (mma_split.cuh). Included by
// mla_prefill.cu only, after PrefillArgs and kLog2e.
//
// A block takes 128 query rows of one head of one sequence; each of its 8 warps owns 16 rows
// outright (scores, online softmax and output stay in registers, flash-attention style), and the
// block streams 32-key tiles of k = [k_nope; k_pe] and v through double-buffered shared memory
// with cp.async. The only block-wide syncs are the tile hand-offs.
#include <cstdint>

#include "kernels/cuda/mma_split.cuh"

namespace r2::cuda {
namespace {

constexpr int kPmRows = 128, kPmKeys = 32, kPmThreads = 256;
constexpr int kPmNope = 128, kPmRope = 64, kPmDq = kPmNope + kPmRope, kPmDv = 128;
constexpr int kPmQWords = kPmDq / 2;       // bf16 pairs per query row
constexpr int kPmQStride = kPmQWords + 4;  // words per Q row (bank spread for fragment loads)
constexpr int kPmKStride = kPmDq + 8;      // floats per key row
constexpr int kPmVStride = kPmDv + 4;      // floats per value row

// Q hi / lo [128][kPmQStride] words, then two buffers of K [32][kPmKStride] and V [32][kPmVStride].
constexpr size_t PrefillMmaSmemBytes() {
  return sizeof(float) *
         (2 * kPmRows * kPmQStride + 2 * (kPmKeys * kPmKStride + kPmKeys * kPmVStride));
}

__global__ void __launch_bounds__(kPmThreads) MlaPrefillMmaKernel(PrefillArgs a) {
  extern __shared__ float4 smem4[];
  const MlaPrefillParams& p = a.p;
  const int b = blockIdx.x, h = blockIdx.y;
  const int q_begin = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q_begin;
  const int k_begin = p.cu_seqlens_k[b], k_len = p.cu_seqlens_k[b + 1] - k_begin;
  if (q_len <= 0 || q_len > k_len) return;  // nothing to do, or metadata the caller rejects
  uint32_t* qh = reinterpret_cast<uint32_t*>(smem4);
  uint32_t* ql = qh + kPmRows * kPmQStride;
  float* kbuf = reinterpret_cast<float*>(ql + kPmRows * kPmQStride);  // [2][32][kPmKStride]
  float* vbuf = kbuf + 2 * kPmKeys * kPmKStride;                      // [2][32][kPmVStride]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gr = lane / 4, t4 = lane % 4;
  const float scale_log2 = p.softmax_scale * kLog2e;

  for (int r0 = blockIdx.z * kPmRows; r0 < q_len; r0 += gridDim.z * kPmRows) {
    __syncthreads();  // the previous query tile's readers are done
#pragma unroll 8      // independent loads in flight
    for (int i = tid; i < kPmRows * kPmQWords; i += kPmThreads) {
      const int r = i / kPmQWords, w = i % kPmQWords;
      float x = 0.0f, y = 0.0f;
      if (r0 + r < q_len) {
        const float* q = p.q + (q_begin + r0 + r) * p.q_token_stride + h * p.q_head_stride + 2 * w;
        x = q[0];
        y = q[1];
      }
      SplitBf16(x, y, qh[r * kPmQStride + w], ql[r * kPmQStride + w]);
    }
    // Keys seen by the tile's last row; row r sees keys j <= k_len - q_len + r.
    const int last_row = min(q_len, r0 + kPmRows) - 1;
    const int k_end = k_len - q_len + last_row + 1;
    const int tiles = (k_end + kPmKeys - 1) / kPmKeys;
    // This warp's rows and the last key each sees (-1: a row past the queries).
    const int row_a = r0 + 16 * warp + gr, row_b = row_a + 8;
    const int lim_a = row_a < q_len ? k_len - q_len + row_a : -1;
    const int lim_b = row_b < q_len ? k_len - q_len + row_b : -1;
    const int warp_last = min(q_len - 1, r0 + 16 * warp + 15);
    const int warp_lim = r0 + 16 * warp < q_len ? k_len - q_len + warp_last : -1;

    auto issue_tile = [&](int tile) {
      float* kd = kbuf + (tile % 2) * kPmKeys * kPmKStride;
      float* vd = vbuf + (tile % 2) * kPmKeys * kPmVStride;
      constexpr int kK4 = kPmDq / 4, kV4 = kPmDv / 4;  // float4s per key / value row
      for (int i = tid; i < kPmKeys * (kK4 + kV4); i += kPmThreads) {
        const int r = i / (kK4 + kV4), c4 = i % (kK4 + kV4);
        const int j = tile * kPmKeys + r;
        const bool ok = j < k_end;
        const int64_t kt = k_begin + (ok ? j : 0);
        const float* src;
        float* dst;
        if (c4 < kPmNope / 4) {
          src = p.k_nope + kt * p.k_nope_token_stride + h * p.k_nope_head_stride + 4 * c4;
          dst = kd + r * kPmKStride + 4 * c4;
        } else if (c4 < kK4) {
          src = p.k_pe + kt * p.k_pe_token_stride + 4 * (c4 - kPmNope / 4);
          dst = kd + r * kPmKStride + 4 * c4;
        } else {
          src = p.v + kt * p.v_token_stride + h * p.v_head_stride + 4 * (c4 - kK4);
          dst = vd + r * kPmVStride + 4 * (c4 - kK4);
        }
        CpAsync16(dst, src, ok ? 16 : 0);
      }
      CpAsyncCommit();
    };

    float o[16][4];
#pragma unroll
    for (int j = 0; j < 16; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // per-thread partial sums

    __syncthreads();  // Q visible
    if (tiles > 0) issue_tile(0);
    for (int tile = 0; tile < tiles; ++tile) {
      __syncthreads();  // the previous tile's readers of the other buffer are done
      if (tile + 1 < tiles) {
        issue_tile(tile + 1);
        CpAsyncWait<1>();
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();
      const int j0 = tile * kPmKeys;
      if (j0 > warp_lim) continue;  // no row of this warp sees this tile (syncs stay uniform)
      const float* ks = kbuf + (tile % 2) * kPmKeys * kPmKStride;
      const float* vs = vbuf + (tile % 2) * kPmKeys * kPmVStride;

      // S[16 rows x 32 keys]: four n-tiles, independent accumulators.
      float sc[4][4] = {};
      const uint32_t* qhr = qh + (16 * warp + gr) * kPmQStride + t4;
      const uint32_t* qlr = ql + (16 * warp + gr) * kPmQStride + t4;
#pragma unroll 2
      for (int k = 0; k < kPmDq / 16; ++k) {
        const int w0 = 8 * k;
        const uint32_t ah[4] = {qhr[w0], qhr[w0 + 8 * kPmQStride], qhr[w0 + 4],
                                qhr[w0 + 8 * kPmQStride + 4]};
        const uint32_t al[4] = {qlr[w0], qlr[w0 + 8 * kPmQStride], qlr[w0 + 4],
                                qlr[w0 + 8 * kPmQStride + 4]};
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          const float* krow = ks + (8 * n + gr) * kPmKStride + 16 * k + 2 * t4;
          const float2 b0 = *reinterpret_cast<const float2*>(krow);
          const float2 b1 = *reinterpret_cast<const float2*>(krow + 8);
          uint32_t bh0, bl0, bh1, bl1;
          SplitBf16(b0.x, b0.y, bh0, bl0);
          SplitBf16(b1.x, b1.y, bh1, bl1);
          MmaSplit(sc[n], ah, al, bh0, bh1, bl0, bl1);
        }
      }

      // Mask, scale, online softmax per row (rows gr and gr + 8; a row's 32 keys live in the four
      // lanes of its quad).
      float max_a = -INFINITY, max_b = -INFINITY;
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const int key = j0 + 8 * n + 2 * t4;
        sc[n][0] = key <= lim_a ? sc[n][0] * scale_log2 : -INFINITY;
        sc[n][1] = key + 1 <= lim_a ? sc[n][1] * scale_log2 : -INFINITY;
        sc[n][2] = key <= lim_b ? sc[n][2] * scale_log2 : -INFINITY;
        sc[n][3] = key + 1 <= lim_b ? sc[n][3] * scale_log2 : -INFINITY;
        max_a = fmaxf(max_a, fmaxf(sc[n][0], sc[n][1]));
        max_b = fmaxf(max_b, fmaxf(sc[n][2], sc[n][3]));
      }
#pragma unroll
      for (int off = 1; off < 4; off *= 2) {
        max_a = fmaxf(max_a, __shfl_xor_sync(~0u, max_a, off));
        max_b = fmaxf(max_b, __shfl_xor_sync(~0u, max_b, off));
      }
      const float new_a = fmaxf(m_a, max_a), new_b = fmaxf(m_b, max_b);
      const float alpha_a = new_a == -INFINITY ? 1.0f : exp2f(m_a - new_a);
      const float alpha_b = new_b == -INFINITY ? 1.0f : exp2f(m_b - new_b);
      m_a = new_a;
      m_b = new_b;
      float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        sc[n][0] = sc[n][0] == -INFINITY ? 0.0f : exp2f(sc[n][0] - new_a);
        sc[n][1] = sc[n][1] == -INFINITY ? 0.0f : exp2f(sc[n][1] - new_a);
        sc[n][2] = sc[n][2] == -INFINITY ? 0.0f : exp2f(sc[n][2] - new_b);
        sc[n][3] = sc[n][3] == -INFINITY ? 0.0f : exp2f(sc[n][3] - new_b);
        sum_a += sc[n][0] + sc[n][1];
        sum_b += sc[n][2] + sc[n][3];
      }
      l_a = l_a * alpha_a + sum_a;
      l_b = l_b * alpha_b + sum_b;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        o[j][0] *= alpha_a;
        o[j][1] *= alpha_a;
        o[j][2] *= alpha_b;
        o[j][3] *= alpha_b;
      }

      // O[16 rows x 128] += P V: the score fragments of n-tiles 2 kk, 2 kk + 1 are the A
      // fragment of k-step kk.
#pragma unroll
      for (int kk = 0; kk < kPmKeys / 16; ++kk) {
        uint32_t ah[4], al[4];
        SplitBf16(sc[2 * kk][0], sc[2 * kk][1], ah[0], al[0]);
        SplitBf16(sc[2 * kk][2], sc[2 * kk][3], ah[1], al[1]);
        SplitBf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1], ah[2], al[2]);
        SplitBf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3], ah[3], al[3]);
        const float* v = vs + (16 * kk + 2 * t4) * kPmVStride + gr;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          uint32_t bh0, bl0, bh1, bl1;
          SplitBf16(v[8 * j], v[8 * j + kPmVStride], bh0, bl0);
          SplitBf16(v[8 * j + 8 * kPmVStride], v[8 * j + 9 * kPmVStride], bh1, bl1);
          MmaSplit(o[j], ah, al, bh0, bh1, bl0, bl1);
        }
      }
    }

    // Row sums over the quad, then the normalized rows.
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
      l_a += __shfl_xor_sync(~0u, l_a, off);
      l_b += __shfl_xor_sync(~0u, l_b, off);
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = half == 0 ? row_a : row_b;
      const float l = half == 0 ? l_a : l_b;
      if (row >= q_len || l <= 0.0f) continue;
      const float inv = 1.0f / l;
      float* out = p.out + (q_begin + row) * p.out_token_stride + h * p.out_head_stride + 2 * t4;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        out[8 * j] = o[j][2 * half] * inv;
        out[8 * j + 1] = o[j][2 * half + 1] * inv;
      }
    }
  }
}

}  // namespace
}  // namespace r2::cuda

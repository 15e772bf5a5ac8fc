#pragma once
// The tensor-core core of MlaDecodeAttention for DeepSeek-V3's cache rows (kv_lora_rank 512, rope
// 64): one thread block, 32 heads of one query row, 32 cache rows per tile. Included by
// mla_decode.cu only, after DecodeArgs, kSplitRows and kLog2e.
//
// Precision: float32 operands split into bfloat16 hi + lo parts, three bf16 mma.sync per product
// (mma_split.cuh), so results stay within the float32 bound of the CPU reference (max relative
// error about 2e-5 at V3 shape).
#include <cstdint>

#include "kernels/cuda/mma_split.cuh"

namespace r2::cuda {
namespace {

constexpr int kMmaHeads = 32, kMmaTokens = 32, kMmaWidth = 576, kMmaLora = 512;
constexpr int kQWords = kMmaWidth / 2;    // bf16 pairs per query row
constexpr int kQStride = kQWords + 4;     // words per Q row in shared memory (bank spread)
constexpr int kCStride = kMmaWidth + 8;   // floats per cache row in shared memory
constexpr int kPStride = kMmaTokens + 8;  // floats per score row in shared memory
constexpr int kMmaThreads = 512, kMmaWarps = kMmaThreads / 32;

// Shared memory: row offsets [2][32] int64, Q hi / lo [32][kQStride] words, cache tiles
// [2][32][kCStride] (double-buffered: the next tile streams in with cp.async while this one is
// computed), scores [32][kPStride], per-head max / sum / rescale [32] each. About 225 KiB: one
// block per SM on Hopper (227 KiB opt-in).
constexpr size_t MmaSmemBytes() {
  return sizeof(int64_t) * 2 * kMmaTokens +
         sizeof(float) * (2 * kMmaHeads * kQStride + 2 * kMmaTokens * kCStride +
                          kMmaHeads * kPStride + 3 * kMmaHeads);
}

// Same contract as AttendRow in mla_decode.cu: head group g of query row q_row (row qi of
// sequence b), keys [t_begin, t_end); final output or the partial for split s. Runs with
// kMmaThreads threads (16 warps). Lane: group gr = lane / 4, thread in group t4 = lane % 4 (the
// mma fragment coordinates). Warp w: head tile mt = w % 2 (heads 16 mt ..); for the scores,
// token tile (w / 2) % 4 (8 tokens) and half w / 8 of the 576-wide dot products; for the output,
// column eighth w / 2 (64 columns).
__device__ void AttendRowMma(const DecodeArgs& a, float* smem, int b, int qi, int q_row, int g,
                             int t_begin, int t_end, bool final_out, int s) {
  const MlaDecodeParams& p = a.p;
  const PagedLatentCache& c = p.cache;
  int64_t* row_offs = reinterpret_cast<int64_t*>(smem);  // [2][kMmaTokens]
  uint32_t* qh = reinterpret_cast<uint32_t*>(row_offs + 2 * kMmaTokens);
  uint32_t* ql = qh + kMmaHeads * kQStride;
  float* cbuf = reinterpret_cast<float*>(ql + kMmaHeads * kQStride);  // [2][kMmaTokens][kCStride]
  float* ps = cbuf + 2 * kMmaTokens * kCStride;
  float* m_s = ps + kMmaHeads * kPStride;
  float* l_s = m_s + kMmaHeads;
  float* alpha_s = l_s + kMmaHeads;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gr = lane / 4, t4 = lane % 4, mt = warp % 2;
  const int nq = (warp / 2) % 4, kh = warp / 8, ne = warp / 2;
  const int head0 = g * kMmaHeads;
  const float scale_log2 = p.softmax_scale * kLog2e;

  __syncthreads();  // the previous unit's readers of shared memory are done
  static_assert(kMmaHeads * kQWords % kMmaThreads == 0, "Q pairs split evenly over threads");
#pragma unroll 6  // independent loads in flight: this runs once per unit, often for few tiles
  for (int i = tid; i < kMmaHeads * kQWords; i += kMmaThreads) {
    const int h = i / kQWords, w = i % kQWords;
    float x = 0.0f, y = 0.0f;
    if (head0 + h < p.heads) {
      const float* q = p.q + q_row * p.q_token_stride + (head0 + h) * p.q_head_stride + 2 * w;
      x = q[0];
      y = q[1];
    }
    SplitBf16(x, y, qh[h * kQStride + w], ql[h * kQStride + w]);
  }
  if (tid < kMmaHeads) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  float o[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.block_table_stride;

  // Pipeline: threads < 32 look up the block of their row two tiles ahead (a register), turn it
  // into the row offset one tile ahead, and all threads stream that tile into the other buffer
  // while this one is computed.
  const int tiles = t_end > t_begin ? (t_end - t_begin + kMmaTokens - 1) / kMmaTokens : 0;
  auto block_of = [&](int tile) -> int64_t {
    const int t = t_begin + tile * kMmaTokens + tid;
    return tile < tiles && t < t_end ? int64_t{table[t / c.block_size]} : int64_t{-1};
  };
  auto offset_of = [&](int tile, int64_t blk) -> int64_t {
    const int t = t_begin + tile * kMmaTokens + tid;
    if (tile >= tiles || t >= t_end || blk < 0 || blk >= c.num_blocks) return -1;
    return blk * c.block_stride + (t % c.block_size) * int64_t{kMmaWidth};
  };
  auto issue_tile = [&](int tile) {
    const int64_t* ro = row_offs + (tile % 2) * kMmaTokens;
    float* dst = cbuf + (tile % 2) * kMmaTokens * kCStride;
#pragma unroll
    for (int rr = 0; rr < kMmaTokens / kMmaWarps; ++rr) {
      const int r = warp * (kMmaTokens / kMmaWarps) + rr;
      const int64_t off = ro[r];
      const float* src = off >= 0 ? c.data + off : c.data;
      const int bytes = off >= 0 ? 16 : 0;
#pragma unroll
      for (int d4 = lane; d4 < kMmaWidth / 4; d4 += 32) {
        CpAsync16(dst + r * kCStride + 4 * d4, off >= 0 ? src + 4 * d4 : src, bytes);
      }
    }
    CpAsyncCommit();
  };
  int64_t next_blk = -1;
  if (tid < kMmaTokens && tiles > 0) {
    row_offs[tid] = offset_of(0, block_of(0));
    next_blk = block_of(1);
  }
  __syncthreads();
  if (tiles > 0) issue_tile(0);

  for (int tile = 0; tile < tiles; ++tile) {
    if (tid < kMmaTokens) {
      row_offs[((tile + 1) % 2) * kMmaTokens + tid] = offset_of(tile + 1, next_blk);
      next_blk = block_of(tile + 2);
    }
    __syncthreads();  // next offsets visible; the previous tile's readers of its buffer are done
    if (tile + 1 < tiles) {
      issue_tile(tile + 1);
      CpAsyncWait<1>();  // this tile's copies (the group before the one just issued)
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const float* cs = cbuf + (tile % 2) * kMmaTokens * kCStride;
    const int64_t* row_off = row_offs + (tile % 2) * kMmaTokens;

    // Scores S[16 heads x 8 tokens] of (mt, nq) over half kh of the rows; the two halves meet
    // in ps (kh 0 stores, kh 1 adds, scales and masks).
    {
      constexpr int kSteps = kMmaWidth / 16 / 2;  // k-steps per half
      float acc3[3][4] = {};  // three independent accumulators keep mma chains in flight
      const uint32_t* qhr = qh + (16 * mt + gr) * kQStride + t4 + kh * 8 * kSteps;
      const uint32_t* qlr = ql + (16 * mt + gr) * kQStride + t4 + kh * 8 * kSteps;
      const float* crow = cs + (8 * nq + gr) * kCStride + 2 * t4 + kh * 16 * kSteps;
#pragma unroll 1
      for (int k0 = 0; k0 < kSteps; k0 += 3) {
#pragma unroll
        for (int u = 0; u < 3; ++u) {
          const int k = k0 + u, w0 = 8 * k;
          const uint32_t ah[4] = {qhr[w0], qhr[w0 + 8 * kQStride], qhr[w0 + 4],
                                  qhr[w0 + 8 * kQStride + 4]};
          const uint32_t al[4] = {qlr[w0], qlr[w0 + 8 * kQStride], qlr[w0 + 4],
                                  qlr[w0 + 8 * kQStride + 4]};
          const float2 b0 = *reinterpret_cast<const float2*>(crow + 16 * k);
          const float2 b1 = *reinterpret_cast<const float2*>(crow + 16 * k + 8);
          uint32_t bh0, bl0, bh1, bl1;
          SplitBf16(b0.x, b0.y, bh0, bl0);
          SplitBf16(b1.x, b1.y, bh1, bl1);
          MmaSplit(acc3[u], ah, al, bh0, bh1, bl0, bl1);
        }
      }
      float acc[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[e] = acc3[0][e] + acc3[1][e] + acc3[2][e];
      const int tok = 8 * nq + 2 * t4;
      float* prow = ps + (16 * mt + gr) * kPStride + tok;
      if (kh == 0) {
        *reinterpret_cast<float2*>(prow) = make_float2(acc[0], acc[1]);
        *reinterpret_cast<float2*>(prow + 8 * kPStride) = make_float2(acc[2], acc[3]);
      }
      __syncthreads();
      if (kh == 1) {
        const bool ok0 = row_off[tok] >= 0, ok1 = row_off[tok + 1] >= 0;
        const float2 lo = *reinterpret_cast<const float2*>(prow);
        const float2 hi = *reinterpret_cast<const float2*>(prow + 8 * kPStride);
        *reinterpret_cast<float2*>(prow) =
            make_float2(ok0 ? (lo.x + acc[0]) * scale_log2 : -INFINITY,
                        ok1 ? (lo.y + acc[1]) * scale_log2 : -INFINITY);
        *reinterpret_cast<float2*>(prow + 8 * kPStride) =
            make_float2(ok0 ? (hi.x + acc[2]) * scale_log2 : -INFINITY,
                        ok1 ? (hi.y + acc[3]) * scale_log2 : -INFINITY);
      }
    }
    __syncthreads();

    // Online softmax: warp w updates heads 2w and 2w + 1, one lane per token.
#pragma unroll
    for (int k = 0; k < kMmaHeads / kMmaWarps; ++k) {
      const int h = (kMmaHeads / kMmaWarps) * warp + k;
      const float x = ps[h * kPStride + lane];
      float tile_max = x;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) {
        tile_max = fmaxf(tile_max, __shfl_xor_sync(~0u, tile_max, off));
      }
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, tile_max);
      const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m_old - m_new);
      const float e = x == -INFINITY ? 0.0f : exp2f(x - m_new);
      ps[h * kPStride + lane] = e;
      float sum = e;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(~0u, sum, off);
      if (lane == 0) {
        m_s[h] = m_new;
        l_s[h] = l_s[h] * alpha + sum;
        alpha_s[h] = alpha;
      }
    }
    __syncthreads();

    // O[16 heads x 64 columns] of (mt, ne) = alpha O + P V.
    {
      const float alpha_lo = alpha_s[16 * mt + gr], alpha_hi = alpha_s[16 * mt + gr + 8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[j][0] *= alpha_lo;
        o[j][1] *= alpha_lo;
        o[j][2] *= alpha_hi;
        o[j][3] *= alpha_hi;
      }
#pragma unroll
      for (int kk = 0; kk < kMmaTokens / 16; ++kk) {
        const float* prow = ps + (16 * mt + gr) * kPStride + 16 * kk + 2 * t4;
        const float2 p0 = *reinterpret_cast<const float2*>(prow);
        const float2 p1 = *reinterpret_cast<const float2*>(prow + 8 * kPStride);
        const float2 p2 = *reinterpret_cast<const float2*>(prow + 8);
        const float2 p3 = *reinterpret_cast<const float2*>(prow + 8 * kPStride + 8);
        uint32_t ah[4], al[4];
        SplitBf16(p0.x, p0.y, ah[0], al[0]);
        SplitBf16(p1.x, p1.y, ah[1], al[1]);
        SplitBf16(p2.x, p2.y, ah[2], al[2]);
        SplitBf16(p3.x, p3.y, ah[3], al[3]);
        const float* v = cs + (16 * kk + 2 * t4) * kCStride + 64 * ne + gr;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          uint32_t bh0, bl0, bh1, bl1;
          SplitBf16(v[8 * j], v[8 * j + kCStride], bh0, bl0);
          SplitBf16(v[8 * j + 8 * kCStride], v[8 * j + 9 * kCStride], bh1, bl1);
          MmaSplit(o[j], ah, al, bh0, bh1, bl0, bl1);
        }
      }
    }
  }
  __syncthreads();  // m_s / l_s final (also when there was no tile)

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int hl = 16 * mt + gr + 8 * half, h = head0 + hl;
    if (h >= p.heads) continue;
    const float l = l_s[hl];
    if (final_out) {
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* out = p.out + q_row * p.out_token_stride + h * p.out_head_stride + 64 * ne + 2 * t4;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        out[8 * j] = o[j][2 * half] * inv;
        out[8 * j + 1] = o[j][2 * half + 1] * inv;
      }
    } else {
      const int64_t idx =
          ((static_cast<int64_t>(b) * kSplitRows + qi) * p.heads + h) * a.splits + s;
      float* out = a.part_out + idx * kMmaLora + 64 * ne + 2 * t4;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        *reinterpret_cast<float2*>(out + 8 * j) = make_float2(o[j][2 * half], o[j][2 * half + 1]);
      }
      if (ne == 0 && t4 == 0) {
        a.part_ml[2 * idx] = m_s[hl];
        a.part_ml[2 * idx + 1] = l;
      }
    }
  }
}

// ---- 16-bit caches (bf16, fp8) ------------------------------------------------------------------
//
// The same work split as AttendRowMma, for a cache whose values are bf16 (or fp8 with a float32
// scale per 128 values, decoded to bf16 once per tile): the cache operand needs no split, so each
// product is one plain bf16 mma.sync with float32 accumulation, the query and the probabilities
// rounded to bf16 (three times fewer tensor-core instructions than the float32 core, half or less
// of its bytes). Precision against the float32 CPU reference on the same stored cache: the bf16
// rounding of q and P (2^-9 relative each), and for fp8 of value * scale; the accumulation stays
// float32.
//
// Shared memory: row offsets [2][32] int64, Q [32][kQStride] bf16 pairs, raw rows [2][32][raw
// stride] words (cp.async double buffer of the rows as stored), for fp8 one decoded tile
// [32][kTStride] bf16 pairs, scores [32][kPStride], per-head max / sum / rescale [32] each. A bf16
// tile is used as it arrives (its raw row is the decoded row).

constexpr int kTStride = kQWords + 4;  // words per bf16 row (bank spread as kQStride)
constexpr int kFp8RowWords = (kMmaLora + 4 * (kMmaLora / 128) + 2 * (kMmaWidth - kMmaLora)) / 4;
constexpr int kFp8RawStride = kFp8RowWords + 4;  // 168 words: rows stay 16-byte aligned
static_assert(kFp8RowWords == 164, "V3's fp8 row: 512 e4m3 + 4 scales + 64 bf16 = 656 bytes");

constexpr int RawStride(bool fp8) { return fp8 ? kFp8RawStride : kTStride; }

constexpr size_t Mma16SmemBytes(bool fp8) {
  return sizeof(int64_t) * 2 * kMmaTokens +
         sizeof(uint32_t) * (kMmaHeads * kQStride + 2 * kMmaTokens * RawStride(fp8) +
                             (fp8 ? kMmaTokens * kTStride : 0)) +
         sizeof(float) * (kMmaHeads * kPStride + 3 * kMmaHeads);
}

__device__ __forceinline__ uint32_t PackBf16(float x, float y) {
  return BitsOf(__floats2bfloat162_rn(x, y));
}

// Four 8x8 b16 matrices, transposed: lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void LdMatrixX4Trans(const void* row, uint32_t& d0, uint32_t& d1,
                                                uint32_t& d2, uint32_t& d3) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(d0), "=r"(d1), "=r"(d2), "=r"(d3)
               : "r"(addr));
}

// fp8 rows of a tile (raw, as stored) to bf16 pairs: latent word k (4 e4m3 values of group k / 32)
// becomes words 2k, 2k + 1; the rope key's bf16 pairs are copied. Absent rows are zeros and
// decode to zeros.
__device__ __forceinline__ void DecodeFp8Tile(const KvRowLayout& l, const uint32_t* raw,
                                              uint32_t* tile) {
  constexpr int kLatentWords = kMmaLora / 4, kRopeWords = (kMmaWidth - kMmaLora) / 2;
  constexpr int kTasks = kLatentWords + kRopeWords;
  for (int i = threadIdx.x; i < kMmaTokens * kTasks; i += kMmaThreads) {
    const int r = i / kTasks, k = i % kTasks;
    const uint32_t* src = raw + r * kFp8RawStride;
    uint32_t* dst = tile + r * kTStride;
    if (k < kLatentWords) {
      const uint32_t w = src[k];
      const float scale = __uint_as_float(src[l.scale_word + k / 32]);
      uint2 out;
      out.x = PackBf16(Fp8E4M3Value(w & 0xffu) * scale, Fp8E4M3Value((w >> 8) & 0xffu) * scale);
      out.y = PackBf16(Fp8E4M3Value((w >> 16) & 0xffu) * scale, Fp8E4M3Value(w >> 24) * scale);
      *reinterpret_cast<uint2*>(dst + 2 * k) = out;
    } else {
      dst[kQWords - kRopeWords + (k - kLatentWords)] = src[l.rope_byte / 4 + (k - kLatentWords)];
    }
  }
}

// Same contract and thread roles as AttendRowMma.
template <bool kFp8>
__device__ void AttendRowMma16(const DecodeArgs& a, float* smem, int b, int qi, int q_row, int g,
                               int t_begin, int t_end, bool final_out, int s) {
  constexpr int kRawStride = RawStride(kFp8);
  const MlaDecodeParams& p = a.p;
  const PagedLatentCache& c = p.cache;
  const int row_words = a.l.row_words;
  int64_t* row_offs = reinterpret_cast<int64_t*>(smem);  // [2][kMmaTokens]
  uint32_t* qh = reinterpret_cast<uint32_t*>(row_offs + 2 * kMmaTokens);
  uint32_t* raw = qh + kMmaHeads * kQStride;           // [2][kMmaTokens][kRawStride]
  uint32_t* conv = raw + 2 * kMmaTokens * kRawStride;  // fp8: [kMmaTokens][kTStride]
  float* ps = reinterpret_cast<float*>(conv + (kFp8 ? kMmaTokens * kTStride : 0));
  float* m_s = ps + kMmaHeads * kPStride;
  float* l_s = m_s + kMmaHeads;
  float* alpha_s = l_s + kMmaHeads;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gr = lane / 4, t4 = lane % 4, mt = warp % 2;
  const int nq = (warp / 2) % 4, kh = warp / 8, ne = warp / 2;
  const int head0 = g * kMmaHeads;
  const float scale_log2 = p.softmax_scale * kLog2e;

  __syncthreads();  // the previous unit's readers of shared memory are done
#pragma unroll 6
  for (int i = tid; i < kMmaHeads * kQWords; i += kMmaThreads) {
    const int h = i / kQWords, w = i % kQWords;
    float x = 0.0f, y = 0.0f;
    if (head0 + h < p.heads) {
      const float* q = p.q + q_row * p.q_token_stride + (head0 + h) * p.q_head_stride + 2 * w;
      x = q[0];
      y = q[1];
    }
    qh[h * kQStride + w] = PackBf16(x, y);
  }
  if (tid < kMmaHeads) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  float o[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.block_table_stride;

  const int tiles = t_end > t_begin ? (t_end - t_begin + kMmaTokens - 1) / kMmaTokens : 0;
  auto block_of = [&](int tile) -> int64_t {
    const int t = t_begin + tile * kMmaTokens + tid;
    return tile < tiles && t < t_end ? int64_t{table[t / c.block_size]} : int64_t{-1};
  };
  auto offset_of = [&](int tile, int64_t blk) -> int64_t {
    const int t = t_begin + tile * kMmaTokens + tid;
    if (tile >= tiles || t >= t_end || blk < 0 || blk >= c.num_blocks) return -1;
    return blk * c.block_stride + (t % c.block_size) * int64_t{row_words};
  };
  auto issue_tile = [&](int tile) {
    const int64_t* ro = row_offs + (tile % 2) * kMmaTokens;
    uint32_t* dst = raw + (tile % 2) * kMmaTokens * kRawStride;
    const int chunks = row_words / 4;
#pragma unroll
    for (int rr = 0; rr < kMmaTokens / kMmaWarps; ++rr) {
      const int r = warp * (kMmaTokens / kMmaWarps) + rr;
      const int64_t off = ro[r];
      const float* src = off >= 0 ? c.data + off : c.data;
      const int bytes = off >= 0 ? 16 : 0;
      for (int d4 = lane; d4 < chunks; d4 += 32) {
        CpAsync16(dst + r * kRawStride + 4 * d4, off >= 0 ? src + 4 * d4 : src, bytes);
      }
    }
    CpAsyncCommit();
  };
  int64_t next_blk = -1;
  if (tid < kMmaTokens && tiles > 0) {
    row_offs[tid] = offset_of(0, block_of(0));
    next_blk = block_of(1);
  }
  __syncthreads();
  if (tiles > 0) issue_tile(0);

  for (int tile = 0; tile < tiles; ++tile) {
    if (tid < kMmaTokens) {
      row_offs[((tile + 1) % 2) * kMmaTokens + tid] = offset_of(tile + 1, next_blk);
      next_blk = block_of(tile + 2);
    }
    __syncthreads();  // next offsets visible; the previous tile's readers of its buffers are done
    if (tile + 1 < tiles) {
      issue_tile(tile + 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const uint32_t* ts = raw + (tile % 2) * kMmaTokens * kRawStride;
    if constexpr (kFp8) {
      DecodeFp8Tile(a.l, ts, conv);
      __syncthreads();
      ts = conv;
    }
    const int64_t* row_off = row_offs + (tile % 2) * kMmaTokens;

    // Scores S[16 heads x 8 tokens] of (mt, nq) over half kh of the row.
    {
      constexpr int kSteps = kMmaWidth / 16 / 2;
      float acc3[3][4] = {};
      const uint32_t* qhr = qh + (16 * mt + gr) * kQStride + t4 + kh * 8 * kSteps;
      const uint32_t* trow = ts + (8 * nq + gr) * kTStride + t4 + kh * 8 * kSteps;
#pragma unroll 2
      for (int k0 = 0; k0 < kSteps; k0 += 3) {
#pragma unroll
        for (int u = 0; u < 3; ++u) {
          const int w0 = 8 * (k0 + u);
          const uint32_t ah[4] = {qhr[w0], qhr[w0 + 8 * kQStride], qhr[w0 + 4],
                                  qhr[w0 + 8 * kQStride + 4]};
          MmaBf16(acc3[u], ah, trow[w0], trow[w0 + 4]);
        }
      }
      float acc[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[e] = acc3[0][e] + acc3[1][e] + acc3[2][e];
      const int tok = 8 * nq + 2 * t4;
      float* prow = ps + (16 * mt + gr) * kPStride + tok;
      if (kh == 0) {
        *reinterpret_cast<float2*>(prow) = make_float2(acc[0], acc[1]);
        *reinterpret_cast<float2*>(prow + 8 * kPStride) = make_float2(acc[2], acc[3]);
      }
      __syncthreads();
      if (kh == 1) {
        const bool ok0 = row_off[tok] >= 0, ok1 = row_off[tok + 1] >= 0;
        const float2 lo = *reinterpret_cast<const float2*>(prow);
        const float2 hi = *reinterpret_cast<const float2*>(prow + 8 * kPStride);
        *reinterpret_cast<float2*>(prow) =
            make_float2(ok0 ? (lo.x + acc[0]) * scale_log2 : -INFINITY,
                        ok1 ? (lo.y + acc[1]) * scale_log2 : -INFINITY);
        *reinterpret_cast<float2*>(prow + 8 * kPStride) =
            make_float2(ok0 ? (hi.x + acc[2]) * scale_log2 : -INFINITY,
                        ok1 ? (hi.y + acc[3]) * scale_log2 : -INFINITY);
      }
    }
    __syncthreads();

    // Online softmax: warp w updates heads 2w and 2w + 1, one lane per token.
#pragma unroll
    for (int k = 0; k < kMmaHeads / kMmaWarps; ++k) {
      const int h = (kMmaHeads / kMmaWarps) * warp + k;
      const float x = ps[h * kPStride + lane];
      float tile_max = x;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) {
        tile_max = fmaxf(tile_max, __shfl_xor_sync(~0u, tile_max, off));
      }
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, tile_max);
      const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m_old - m_new);
      const float e = x == -INFINITY ? 0.0f : exp2f(x - m_new);
      ps[h * kPStride + lane] = e;
      float sum = e;
#pragma unroll
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(~0u, sum, off);
      if (lane == 0) {
        m_s[h] = m_new;
        l_s[h] = l_s[h] * alpha + sum;
        alpha_s[h] = alpha;
      }
    }
    __syncthreads();

    // O[16 heads x 64 columns] of (mt, ne) = alpha O + P V, V fragments by transposed ldmatrix
    // (matrices: tokens 0-7 / 8-15 of the k-step x columns 8j.. / 8(j + 1)..).
    {
      const float alpha_lo = alpha_s[16 * mt + gr], alpha_hi = alpha_s[16 * mt + gr + 8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[j][0] *= alpha_lo;
        o[j][1] *= alpha_lo;
        o[j][2] *= alpha_hi;
        o[j][3] *= alpha_hi;
      }
      const int mi = lane / 8, mr = lane % 8;
#pragma unroll
      for (int kk = 0; kk < kMmaTokens / 16; ++kk) {
        const float* prow = ps + (16 * mt + gr) * kPStride + 16 * kk + 2 * t4;
        const float2 p0 = *reinterpret_cast<const float2*>(prow);
        const float2 p1 = *reinterpret_cast<const float2*>(prow + 8 * kPStride);
        const float2 p2 = *reinterpret_cast<const float2*>(prow + 8);
        const float2 p3 = *reinterpret_cast<const float2*>(prow + 8 * kPStride + 8);
        const uint32_t pa[4] = {PackBf16(p0.x, p0.y), PackBf16(p1.x, p1.y), PackBf16(p2.x, p2.y),
                                PackBf16(p3.x, p3.y)};
        const uint16_t* vrow =
            reinterpret_cast<const uint16_t*>(ts + (16 * kk + 8 * (mi % 2) + mr) * kTStride) +
            64 * ne + 8 * (mi / 2);
#pragma unroll
        for (int j = 0; j < 8; j += 2) {
          uint32_t b00, b01, b10, b11;
          LdMatrixX4Trans(vrow + 8 * j, b00, b01, b10, b11);
          MmaBf16(o[j], pa, b00, b01);
          MmaBf16(o[j + 1], pa, b10, b11);
        }
      }
    }
  }
  __syncthreads();  // m_s / l_s final (also when there was no tile)

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int hl = 16 * mt + gr + 8 * half, h = head0 + hl;
    if (h >= p.heads) continue;
    const float l = l_s[hl];
    if (final_out) {
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* out = p.out + q_row * p.out_token_stride + h * p.out_head_stride + 64 * ne + 2 * t4;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        out[8 * j] = o[j][2 * half] * inv;
        out[8 * j + 1] = o[j][2 * half + 1] * inv;
      }
    } else {
      const int64_t idx =
          ((static_cast<int64_t>(b) * kSplitRows + qi) * p.heads + h) * a.splits + s;
      float* out = a.part_out + idx * kMmaLora + 64 * ne + 2 * t4;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        *reinterpret_cast<float2*>(out + 8 * j) = make_float2(o[j][2 * half], o[j][2 * half + 1]);
      }
      if (ne == 0 && t4 == 0) {
        a.part_ml[2 * idx] = m_s[hl];
        a.part_ml[2 * idx + 1] = l;
      }
    }
  }
}

}  // namespace
}  // namespace r2::cuda

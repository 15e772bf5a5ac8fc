// MlaDecodeAttention: the absorbed MLA form over the paged latent cache (written by KvCacheWrite,
// kv_cache.cu), in any of its formats (kernels/kv_cache_format.h).
//
// Decode is MQA: every head of a query token reads the same cache rows, so a thread block takes
// kHeads heads of one query row and streams the sequence's cache rows through shared memory once
// for all of them (scores S = Q K^T, then O += P V with V the first kv_lora_rank values of the same
// rows). Long contexts are split over the KV length: each split writes a partial (running max,
// sum, unnormalized output) to ctx.attention_scratch and a second kernel combines them.
//
// The host cannot read kv_lens or cu_seqlens (device arrays), so the launch shape depends only on
// num_seqs, heads and the device: each block reads its sequence's lengths and exits early when it
// has no work. A sequence with q_len <= kSplitRows (decode, decode plus one draft token) is split
// over the KV length; a longer one (a prefill chunk over cached context) has enough rows to fill
// the device, so its blocks take whole rows instead and write the output directly.
//
// Formats: the generic core (any dims) decodes each cache row to float32 into its shared tile
// once, for all the block's heads. V3's rows (512 + 64) run on a tensor-core core per format:
// float32 rows split into bf16 hi + lo parts (mla_decode_mma.cuh, float32-class accuracy); bf16
// rows used as they are stored and fp8 rows decoded to bf16 once per tile, both with plain bf16
// products (AttendRowMma16): the row bytes are 1/2 and 0.28 of float32's and a third of the
// tensor-core work.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/kv_cache_codec.cuh"
#include "kernels/cuda/smem_opt_in.h"

namespace r2::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSplitRows = 2;         // query rows per sequence that use split-KV partials
constexpr int kMinSplitTokens = 128;  // a split gets at least this many tokens
constexpr float kLog2e = 1.4426950408889634f;

// ---- MlaDecodeAttention ------------------------------------------------------------------------

// Row stride of the shared-memory tiles: the width rounded up to 4 floats, with an odd number of
// float4s so that lanes reading different rows with 16-byte loads hit different banks.
__host__ __device__ inline int TileStride(int width) {
  int w4 = (width + 3) / 4 * 4;
  if ((w4 / 4) % 2 == 0) w4 += 4;
  return w4;
}

struct DecodeArgs {
  MlaDecodeParams p;
  int width;        // kv_lora_rank + rope_dim
  int lora;         // kv_lora_rank
  int col0;         // first latent column this launch writes (latent widths past kCols * 32)
  int cols;         // latent columns this launch writes
  int splits;       // KV splits per query row (gridDim.y)
  bool vec4;        // cache rows are 16-byte aligned (rows and blocks a multiple of 4 words)
  KvRowLayout l;    // the cache's row format
  float* part_out;  // [num_seqs * kSplitRows * heads * splits][cols] (splits > 1)
  float* part_ml;   // [num_seqs * kSplitRows * heads * splits][2]: max (log2 units), sum
};

// Shared memory of one block: Q [kHeads][stride], C [kTokens][stride], P [kTokens][kHeads + 1]
// (padded: lanes walking tokens of one head hit different banks), row offsets [kTokens].
template <int kHeads, int kTokens>
size_t DecodeSmemBytes(int width) {
  const size_t stride = TileStride(width);
  return sizeof(float) * (kHeads * stride + kTokens * stride + kTokens * (kHeads + 1)) +
         sizeof(int64_t) * kTokens + 16;
}

// One unit of work: head group `g` of query row `qi` of sequence `b`, keys [t_begin, t_end).
// Writes the normalized output (final) or the partial max/sum/unnormalized output for split s.
template <int kHeads, int kTokens, int kCols>
__device__ __forceinline__ void AttendRow(const DecodeArgs& a, float* smem, int b, int qi,
                                          int q_row, int g, int t_begin, int t_end, bool final_out,
                                          int s) {
  static_assert(kThreads % kTokens == 0, "a thread's token must not change across its scores");
  static_assert(kHeads % kWarps == 0, "each warp owns kHeads / kWarps heads");
  constexpr int kHeadsPerWarp = kHeads / kWarps;
  const MlaDecodeParams& p = a.p;
  const PagedLatentCache& c = p.cache;
  const int stride = TileStride(a.width);
  float* qs = smem;
  float* cs = qs + kHeads * stride;
  constexpr int kPs = kHeads + 1;  // row stride of ps
  float* ps = cs + kTokens * stride;
  // Element offset of each tile row in the cache, -1 for a row past the range or in a bad block.
  int64_t* row_off =
      reinterpret_cast<int64_t*>((reinterpret_cast<uintptr_t>(ps + kTokens * kPs) + 15) / 16 * 16);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int head0 = g * kHeads;
  const float scale_log2 = p.softmax_scale * kLog2e;

  __syncthreads();  // the previous unit's readers of qs are done
  // Q tile: kHeads heads of this row, zero past the heads and the width.
  for (int i = tid; i < kHeads * stride; i += kThreads) {
    const int h = i / stride, d = i % stride;
    float v = 0.0f;
    if (head0 + h < p.heads && d < a.width) {
      v = p.q[q_row * p.q_token_stride + (head0 + h) * p.q_head_stride + d];
    }
    qs[i] = v;
  }

  float m[kHeadsPerWarp], l[kHeadsPerWarp], acc[kHeadsPerWarp][kCols];
#pragma unroll
  for (int k = 0; k < kHeadsPerWarp; ++k) {
    m[k] = -INFINITY;
    l[k] = 0.0f;
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[k][j] = 0.0f;
  }
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.block_table_stride;

  for (int t0 = t_begin; t0 < t_end; t0 += kTokens) {
    __syncthreads();  // the previous tile's readers of cs and ps are done
    // Cache tile: row pointers through the block table; rows in a bad block count as absent.
    if (tid < kTokens) {
      const int t = t0 + tid;
      int64_t off = -1;
      if (t < t_end) {
        const int64_t blk = table[t / c.block_size];
        if (blk >= 0 && blk < c.num_blocks) {
          off = blk * c.block_stride + (t % c.block_size) * int64_t{a.l.row_words};
        }
      }
      row_off[tid] = off;
    }
    __syncthreads();
    if (a.vec4 && a.l.dtype == KvCacheDType::kFloat32) {
      const int w4 = a.width / 4, s4 = stride / 4;
      for (int i = tid; i < kTokens * s4; i += kThreads) {
        const int r = i / s4, d4 = i % s4;
        const int64_t off = row_off[r];
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (off >= 0 && d4 < w4) v = reinterpret_cast<const float4*>(c.data + off)[d4];
        reinterpret_cast<float4*>(cs)[i] = v;
      }
    } else {
      for (int i = tid; i < kTokens * stride; i += kThreads) {
        const int r = i / stride, d = i % stride;
        const int64_t off = row_off[r];
        cs[i] = off >= 0 && d < a.width ? KvRowValue(a.l, c.data + off, d) : 0.0f;
      }
    }
    __syncthreads();

    // Scores: thread tid -> token tid % kTokens, heads (tid + e * kThreads) / kTokens, which are
    // the heads its warp owns below.
    {
      constexpr int kScores = kHeads * kTokens;
      constexpr int kPerThread = kScores >= kThreads ? kScores / kThreads : 1;
      const int tok = tid % kTokens;
      if (tid < kScores) {
        float sc[kPerThread];
        int hh[kPerThread];
#pragma unroll
        for (int e = 0; e < kPerThread; ++e) {
          hh[e] = (tid + e * kThreads) / kTokens;
          sc[e] = 0.0f;
        }
        const float4* crow = reinterpret_cast<const float4*>(cs + tok * stride);
        for (int d4 = 0; d4 < stride / 4; ++d4) {
          const float4 kv = crow[d4];
#pragma unroll
          for (int e = 0; e < kPerThread; ++e) {
            const float4 qv = reinterpret_cast<const float4*>(qs + hh[e] * stride)[d4];
            sc[e] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
          }
        }
        const bool ok = row_off[tok] >= 0;
#pragma unroll
        for (int e = 0; e < kPerThread; ++e) {
          ps[tok * kPs + hh[e]] = ok ? sc[e] * scale_log2 : -INFINITY;
        }
      }
    }
    __syncthreads();

    // Online softmax: warp `warp` owns heads warp + kWarps * k, lanes walk the tile's tokens.
#pragma unroll
    for (int k = 0; k < kHeadsPerWarp; ++k) {
      const int h = warp + kWarps * k;
      float tile_max = -INFINITY;
#pragma unroll
      for (int tt = 0; tt < (kTokens + 31) / 32; ++tt) {
        const int t = lane + 32 * tt;
        if (t < kTokens) tile_max = fmaxf(tile_max, ps[t * kPs + h]);
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) tile_max = fmaxf(tile_max, __shfl_xor_sync(~0u, tile_max, o));
      const float m_new = fmaxf(m[k], tile_max);
      const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m[k] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int tt = 0; tt < (kTokens + 31) / 32; ++tt) {
        const int t = lane + 32 * tt;
        if (t >= kTokens) break;
        const float x = ps[t * kPs + h];
        const float e = x == -INFINITY ? 0.0f : exp2f(x - m_new);
        ps[t * kPs + h] = e;
        sum += e;
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(~0u, sum, o);
      m[k] = m_new;
      l[k] = l[k] * alpha + sum;
#pragma unroll
      for (int j = 0; j < kCols; ++j) acc[k][j] *= alpha;
    }
    __syncwarp();

    // O += P V: thread owns heads warp + kWarps * k and latent columns col0 + lane + 32 j.
    for (int t = 0; t < kTokens; ++t) {
      float pv[kHeadsPerWarp];
#pragma unroll
      for (int k = 0; k < kHeadsPerWarp; ++k) pv[k] = ps[t * kPs + warp + kWarps * k];
      const float* vrow = cs + t * stride + a.col0;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int col = lane + 32 * j;
        const float v = col < a.cols ? vrow[col] : 0.0f;
#pragma unroll
        for (int k = 0; k < kHeadsPerWarp; ++k) acc[k][j] += pv[k] * v;
      }
    }
  }

  // Epilogue.
#pragma unroll
  for (int k = 0; k < kHeadsPerWarp; ++k) {
    const int h = head0 + warp + kWarps * k;
    if (h >= p.heads) continue;
    if (final_out) {
      const float inv = l[k] > 0.0f ? 1.0f / l[k] : 0.0f;
      float* out = p.out + q_row * p.out_token_stride + h * p.out_head_stride + a.col0;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int col = lane + 32 * j;
        if (col < a.cols) out[col] = acc[k][j] * inv;
      }
    } else {
      const int64_t idx =
          ((static_cast<int64_t>(b) * kSplitRows + qi) * p.heads + h) * a.splits + s;
      float* out = a.part_out + idx * a.cols;
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int col = lane + 32 * j;
        if (col < a.cols) out[col] = acc[k][j];
      }
      if (lane == 0) {
        a.part_ml[2 * idx] = m[k];
        a.part_ml[2 * idx + 1] = l[k];
      }
    }
  }
}

}  // namespace
}  // namespace r2::cuda

#include "kernels/cuda/mla_decode_mma.cuh"

namespace r2::cuda {
namespace {

// The core that computes a unit of work: the generic float32 one (any dims, any format, rows
// decoded to float32 tiles), or for V3's rows the tensor-core one of the cache's format.
enum DecodeCore : int { kCoreGeneric, kCoreMmaF32, kCoreMmaBf16, kCoreMmaFp8 };

template <int kHeads, int kTokens, int kCols, int kCore>
__device__ __forceinline__ void Attend(const DecodeArgs& a, float* smem, int b, int qi, int q_row,
                                       int g, int t_begin, int t_end, bool final_out, int s) {
  if constexpr (kCore == kCoreMmaF32) {
    AttendRowMma(a, smem, b, qi, q_row, g, t_begin, t_end, final_out, s);
  } else if constexpr (kCore == kCoreMmaBf16 || kCore == kCoreMmaFp8) {
    AttendRowMma16<kCore == kCoreMmaFp8>(a, smem, b, qi, q_row, g, t_begin, t_end, final_out, s);
  } else {
    AttendRow<kHeads, kTokens, kCols>(a, smem, b, qi, q_row, g, t_begin, t_end, final_out, s);
  }
}

// grid: x = kSplitRows * head groups, y = splits, z = sequences.
template <int kHeads, int kTokens, int kCols, int kCore>
__global__ void __launch_bounds__(kCore != kCoreGeneric ? kMmaThreads : kThreads, 1)
    MlaDecodeKernel(DecodeArgs a) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const MlaDecodeParams& p = a.p;
  const int b = blockIdx.z;
  const int q_begin = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q_begin;
  const int kv_len = p.kv_lens[b];
  if (q_len <= 0 || kv_len < q_len ||
      static_cast<int64_t>(kv_len) > p.block_table_stride * p.cache.block_size) {
    return;  // nothing to do, or metadata the caller should have rejected
  }
  const int groups = (p.heads + kHeads - 1) / kHeads;
  if (q_len <= kSplitRows) {
    const int qi = blockIdx.x / groups, g = blockIdx.x % groups, s = blockIdx.y;
    if (qi >= q_len) return;
    const int visible = kv_len - q_len + qi + 1;
    if (a.splits == 1) {
      Attend<kHeads, kTokens, kCols, kCore>(a, smem, b, qi, q_begin + qi, g, 0, visible, true, 0);
      return;
    }
    // Splits actually used for this row: at least kMinSplitTokens each, tile-aligned.
    const int used = min(a.splits, (visible + kMinSplitTokens - 1) / kMinSplitTokens);
    int chunk = (visible + used - 1) / used;
    chunk = (chunk + kTokens - 1) / kTokens * kTokens;
    if (s >= used) return;  // the combine reads splits [0, used) only
    const int t_begin = min(visible, s * chunk), t_end = min(visible, t_begin + chunk);
    Attend<kHeads, kTokens, kCols, kCore>(a, smem, b, qi, q_begin + qi, g, t_begin, t_end, false,
                                          s);
    return;
  }
  // Long query: blocks take (row, head group) items in turn over the whole visible range.
  const int blocks = gridDim.x * gridDim.y;
  for (int item = blockIdx.y * gridDim.x + blockIdx.x; item < q_len * groups; item += blocks) {
    const int qi = item / groups, g = item % groups;
    Attend<kHeads, kTokens, kCols, kCore>(a, smem, b, qi, q_begin + qi, g, 0,
                                          kv_len - q_len + qi + 1, true, 0);
  }
}

// grid: x = heads, y = kSplitRows, z = sequences; block: latent columns.
__global__ void MlaDecodeCombineKernel(DecodeArgs a) {
  const MlaDecodeParams& p = a.p;
  const int h = blockIdx.x, qi = blockIdx.y, b = blockIdx.z;
  const int q_begin = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q_begin;
  const int kv_len = p.kv_lens[b];
  if (q_len <= 0 || q_len > kSplitRows || qi >= q_len || kv_len < q_len ||
      static_cast<int64_t>(kv_len) > p.block_table_stride * p.cache.block_size) {
    return;
  }
  const int visible = kv_len - q_len + qi + 1;
  const int used = min(a.splits, (visible + kMinSplitTokens - 1) / kMinSplitTokens);
  const int64_t base = ((static_cast<int64_t>(b) * kSplitRows + qi) * p.heads + h) * a.splits;
  float m = -INFINITY;
  for (int s = 0; s < used; ++s) m = fmaxf(m, a.part_ml[2 * (base + s)]);
  float l = 0.0f;
  for (int s = 0; s < used; ++s) {
    const float ms = a.part_ml[2 * (base + s)], ls = a.part_ml[2 * (base + s) + 1];
    if (ls > 0.0f) l += ls * exp2f(ms - m);
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  float* out = p.out + (q_begin + qi) * p.out_token_stride + h * p.out_head_stride + a.col0;
  for (int col = threadIdx.x; col < a.cols; col += blockDim.x) {
    float o = 0.0f;
    for (int s = 0; s < used; ++s) {
      const float ms = a.part_ml[2 * (base + s)], ls = a.part_ml[2 * (base + s) + 1];
      if (ls > 0.0f) o += a.part_out[(base + s) * a.cols + col] * exp2f(ms - m);
    }
    out[col] = o * inv;
  }
}

absl::Status Invalid(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

absl::Status CheckCache(const char* op, const PagedLatentCache& c) {
  if (c.data == nullptr || c.num_blocks <= 0 || c.block_size <= 0 || c.kv_lora_rank <= 0 ||
      c.rope_dim < 0) {
    return Invalid(op, "empty or malformed cache");
  }
  if (c.row_bytes() <= 0) return Invalid(op, "unknown KV cache dtype");
  if (c.row_width() > (1 << 20)) return Invalid(op, "cache row width too large");
  if (c.block_stride < c.block_size * c.row_words()) {
    return Invalid(op, "cache block_stride smaller than one block");
  }
  if (c.num_blocks * c.block_stride >= (int64_t{1} << 40)) {
    return Invalid(op, "cache larger than 2^40 words");
  }
  return absl::OkStatus();
}

// Dynamic shared memory of a core (the generic one: 32 x 32 or 8 x 8 tiles).
template <int kCore>
size_t CoreSmemBytes(int width, int heads, int tokens) {
  if constexpr (kCore == kCoreMmaF32) return MmaSmemBytes();
  if constexpr (kCore == kCoreMmaBf16) return Mma16SmemBytes(false);
  if constexpr (kCore == kCoreMmaFp8) return Mma16SmemBytes(true);
  return heads == 32 ? DecodeSmemBytes<32, 32>(width) : DecodeSmemBytes<8, 8>(width);
}

// Launches the decode kernel for one tile configuration over latent columns [col0, col0 + cols).
template <int kHeads, int kTokens, int kCols, int kCore = kCoreGeneric>
absl::Status LaunchDecode(const Context& ctx, DecodeArgs a, dim3 grid) {
  const size_t smem = CoreSmemBytes<kCore>(a.width, kHeads, kTokens);
  auto* kernel = &MlaDecodeKernel<kHeads, kTokens, kCols, kCore>;
  static SmemOptIn opt_in;
  if (absl::Status s = EnsureSmemOptIn(opt_in, kernel, ctx, smem); !s.ok()) return s;
  kernel<<<grid, kCore != kCoreGeneric ? kMmaThreads : kThreads, smem, ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MlaDecodeKernel");
  return absl::OkStatus();
}

template <int kHeads, int kTokens>
absl::Status LaunchDecodeCols(const Context& ctx, DecodeArgs a, dim3 grid) {
  if (a.cols <= 32) return LaunchDecode<kHeads, kTokens, 1>(ctx, a, grid);
  if (a.cols <= 64) return LaunchDecode<kHeads, kTokens, 2>(ctx, a, grid);
  if (a.cols <= 128) return LaunchDecode<kHeads, kTokens, 4>(ctx, a, grid);
  return LaunchDecode<kHeads, kTokens, 16>(ctx, a, grid);
}

// The tensor-core core of the cache's format (V3's rows).
absl::Status LaunchDecodeMma(const Context& ctx, const DecodeArgs& a, dim3 grid,
                             KvCacheDType dtype) {
  switch (dtype) {
    case KvCacheDType::kFloat32:
      return LaunchDecode<kMmaHeads, kMmaTokens, 16, kCoreMmaF32>(ctx, a, grid);
    case KvCacheDType::kBF16:
      return LaunchDecode<kMmaHeads, kMmaTokens, 16, kCoreMmaBf16>(ctx, a, grid);
    case KvCacheDType::kFp8E4M3:
      return LaunchDecode<kMmaHeads, kMmaTokens, 16, kCoreMmaFp8>(ctx, a, grid);
  }
  return absl::InvalidArgumentError("MlaDecodeAttention: unknown KV cache dtype");
}

}  // namespace

absl::Status MlaDecodeAttention(const Context& ctx, const MlaDecodeParams& p) {
  constexpr char kOp[] = "MlaDecodeAttention";
  if (absl::Status s = CheckCache(kOp, p.cache); !s.ok()) return s;
  if (p.num_seqs < 0) return Invalid(kOp, "num_seqs must be >= 0");
  if (p.num_seqs == 0) return absl::OkStatus();
  if (p.heads <= 0) return Invalid(kOp, "heads must be > 0");
  if (!p.cu_seqlens_q || !p.kv_lens || !p.block_tables) return Invalid(kOp, "null metadata");
  if (!p.q || !p.out) return Invalid(kOp, "null q or out");
  if (p.block_table_stride <= 0) return Invalid(kOp, "block_table_stride must be > 0");
  if (p.q_token_stride < 0 || p.q_head_stride < 0 || p.out_token_stride < 0 ||
      p.out_head_stride < 0) {
    return Invalid(kOp, "negative stride");
  }
  if (p.num_seqs > 65535) return Invalid(kOp, "more than 65535 sequences in one call");
  const PagedLatentCache& c = p.cache;
  DecodeArgs a{};
  a.p = p;
  a.width = static_cast<int>(c.row_width());
  a.lora = static_cast<int>(c.kv_lora_rank);
  if (a.p.q_head_stride == 0) a.p.q_head_stride = a.width;
  if (a.p.q_token_stride == 0) a.p.q_token_stride = p.heads * a.p.q_head_stride;
  if (a.p.out_head_stride == 0) a.p.out_head_stride = a.lora;
  if (a.p.out_token_stride == 0) a.p.out_token_stride = p.heads * a.p.out_head_stride;
  a.l = MakeKvRowLayout(c);
  a.vec4 = c.row_words() % 4 == 0 && c.block_stride % 4 == 0 &&
           reinterpret_cast<uintptr_t>(c.data) % 16 == 0;

  // Tile shape: 32 heads x 32 tokens when the tiles fit in shared memory, else 8 x 8.
  constexpr int kBigHeads = 32, kBigTokens = 32, kSmallHeads = 8, kSmallTokens = 8;
  const int64_t smem_limit =
      ctx.max_smem_per_block_optin > 0 ? ctx.max_smem_per_block_optin : 48 * 1024;
  const bool big =
      static_cast<int64_t>(DecodeSmemBytes<kBigHeads, kBigTokens>(a.width)) <= smem_limit;
  if (!big && (a.width != kMmaWidth || a.lora != kMmaLora) &&
      static_cast<int64_t>(DecodeSmemBytes<kSmallHeads, kSmallTokens>(a.width)) > smem_limit) {
    return Invalid(kOp, absl::StrCat("cache row width ", a.width, " too large for shared memory"));
  }
  // V3's rows (512 + 64, 16-byte aligned) run on the tensor-core core of their format, with the
  // same 32-head groups.
  const bool fp8 = c.dtype == KvCacheDType::kFp8E4M3;
  const size_t mma_smem = c.dtype == KvCacheDType::kFloat32 ? MmaSmemBytes() : Mma16SmemBytes(fp8);
  const bool mma = a.width == kMmaWidth && a.lora == kMmaLora && a.vec4 &&
                   static_cast<int64_t>(mma_smem) <= smem_limit;
  const int tile_heads = big || mma ? kBigHeads : kSmallHeads;
  const int groups = static_cast<int>((p.heads + tile_heads - 1) / tile_heads);
  if (static_cast<int64_t>(groups) * kSplitRows > 65535) return Invalid(kOp, "too many heads");

  // Splits: enough blocks for about two waves, never more than the table's 64-token pages.
  const int64_t rows_blocks = p.num_seqs * groups;
  const int64_t max_tokens = p.block_table_stride * c.block_size;
  int64_t splits = (2 * std::max(ctx.sm_count, 1) + rows_blocks - 1) / rows_blocks;
  splits = std::clamp<int64_t>(splits, 1, 64);
  splits = std::min<int64_t>(splits, (max_tokens + kMinSplitTokens - 1) / kMinSplitTokens);
  splits = std::max<int64_t>(splits, 1);
  a.splits = static_cast<int>(splits);

  // Latent columns per launch: 512 per pass (the fast path covers V3's 512 in one).
  constexpr int kMaxCols = 512;
  const int passes = (a.lora + kMaxCols - 1) / kMaxCols;
  const int pass_cols = (a.lora + passes - 1) / passes;
  if (a.splits > 1) {
    const int64_t parts = p.num_seqs * kSplitRows * p.heads * a.splits;
    const size_t bytes = sizeof(float) * parts * (pass_cols + 2);
    absl::StatusOr<void*> scratch = ctx.attention_scratch.Get(bytes, ctx.stream);
    if (!scratch.ok()) return scratch.status();
    a.part_out = static_cast<float*>(*scratch);
    a.part_ml = a.part_out + parts * pass_cols;
  }
  const dim3 grid(static_cast<unsigned>(groups * kSplitRows), static_cast<unsigned>(a.splits),
                  static_cast<unsigned>(p.num_seqs));
  for (int pass = 0; pass < passes; ++pass) {
    a.col0 = pass * pass_cols;
    a.cols = std::min(pass_cols, a.lora - a.col0);
    const absl::Status s = mma   ? LaunchDecodeMma(ctx, a, grid, c.dtype)
                           : big ? LaunchDecodeCols<kBigHeads, kBigTokens>(ctx, a, grid)
                                 : LaunchDecodeCols<kSmallHeads, kSmallTokens>(ctx, a, grid);
    if (!s.ok()) return s;
    if (a.splits > 1) {
      const int threads = std::min(256, (a.cols + 31) / 32 * 32);
      MlaDecodeCombineKernel<<<dim3(static_cast<unsigned>(p.heads), kSplitRows,
                                    static_cast<unsigned>(p.num_seqs)),
                               threads, 0, ctx.stream>>>(a);
      R2_CUDA_RETURN_IF_LAUNCH_ERROR("MlaDecodeCombineKernel");
    }
  }
  return absl::OkStatus();
}

}  // namespace r2::cuda

// Integer-weight Linear on CUDA: y[r, o] (+)= x[r] . W[o] for I8 (W8A8) and U4 (W4A16) weights,
// the formats of kernels/quant_format.h; kernels/cpu/reference_quant.cc is the oracle.
//
// W8A8 (I8 weights, one scale per output channel):
//  1. QuantizeRowsKernel: each activation row quantized as the reference does it, s_x = max|x| /
//     127, q = clamp(round_half_even(x / s_x), -127, 127) (IEEE division and rounding: the same
//     int8 values and scales), into zero-padded rows of a multiple of 64 bytes.
//  2. int8 x int8 -> int32 sums, exact whatever their order: 1-2 rows a dp4a GEMV (the weight
//     streamed once with 16-byte loads, 4 output features per block); from 3 rows mma.sync
//     m16n8k32 s8 tensor cores (16 output features per warp, tiles of 64 rows, the weight
//     streamed once per 64 rows, in_features split over blocks when the grid is small, the
//     splits' int32 sums added exactly by a second kernel). Rows that are not 16-byte aligned (or
//     in_features not a multiple of 16) take a scalar kernel, one warp per output feature.
//  3. y = float(acc) * s_x * s_w (+ y), rounded as the reference rounds it (no fused multiply-add):
//     the result equals the reference's to float32 rounding (tested at 1e-6 relative).
//     The int32 sums bound in_features at 132104 (128 * 127 * in < 2^31).
// W4A16 (U4 weights, groups of group_size input columns, optional zero points):
//  - GEMV (1-4 rows; up to 8 rows per pass for shapes the tensor-core kernel does not take; every
//    row count on "cuda-fp32"): the packed weight streamed once per pass with 16-byte loads (32
//    values), each nibble turned into float(q - z) exactly with a float bit trick ((2^23 + nibble)
//    - (2^23 + 8 + z)), float32 products summed per 32 columns and scaled by the group's scale
//    (in_features and group_size multiples of 32, 16-byte aligned rows); other shapes take a
//    scalar kernel that dequantizes each element as the reference does. Error: float32 rounding
//    only (tested at 2e-5 relative).
//  - Tensor cores (5-64 rows on "cuda", in_features and group_size multiples of 128, aligned
//    rows): mma.sync m16n8k16 with q - z as exact bf16 and x rounded to bf16, float32
//    accumulation, the group scale applied per 128 columns; the packed weight streamed once.
//    Error: bf16 rounding of x, ~3e-3 relative (tested at 1e-2).
//  - Otherwise from 9 rows on "cuda" (more than 64 rows, or other shapes): bf16 weight tiles
//    ((q - z) * s rounded to bf16, DequantU4Tile) multiplied by cuBLASLt with x rounded to bf16,
//    as linear.cu does for FP8 weights (a first version: it reads and writes 4.5 bytes per weight
//    where the packed weight is 0.5). Error: bf16 rounding of both operands, ~1e-2 relative at
//    worst (tested at 1e-2).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/linear_int.h"
#include "kernels/quant_format.h"

namespace r2::cuda {
namespace {

// ---- shared helpers -----------------------------------------------------------------------------

enum ScaleKind : int { kScaleF32 = 0, kScaleBF16 = 1, kScaleF16 = 2 };

int ScaleKindOf(DType d) {
  return d == DType::kF32 ? kScaleF32 : (d == DType::kBF16 ? kScaleBF16 : kScaleF16);
}

// Element i of an F32/BF16/F16 scale tensor as float (exact: the same value the host reads).
__device__ __forceinline__ float ScaleAt(const void* s, int kind, int64_t i) {
  if (kind == kScaleF32) return __ldg(static_cast<const float*>(s) + i);
  const unsigned short bits = __ldg(static_cast<const unsigned short*>(s) + i);
  if (kind == kScaleBF16) return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  return __half2float(__ushort_as_half(bits));
}

// Signed zero point of row o, group g of a U4 weight's packed zero points (0 without them).
__device__ __forceinline__ int ZeroAt(const int32_t* z, int64_t groups, int64_t o, int64_t g) {
  if (z == nullptr) return 0;
  const auto word = static_cast<uint32_t>(__ldg(z + (o / 8) * groups + g));
  return static_cast<int>((word >> (4 * (o % 8))) & 0xfu) - 8;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPassRows = 8;  // rows per GEMV pass

// The scalar GEMVs (any shape and alignment), one warp per output feature: the lanes stride over
// in_features with acc[r] += w(j) * x(r, j) in T (int: exact; float: fused multiply-add), then
// lane 0 calls store(r, warp sum of acc[r]) for every row r < R.
template <int R, typename T, typename W, typename X, typename Store>
__device__ __forceinline__ void WarpDotRows(int64_t in, W&& w, X&& x, Store&& store) {
  const int lane = threadIdx.x % 32;
  T acc[R] = {};
  for (int64_t j = lane; j < in; j += 32) {
    const T wj = w(j);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if constexpr (std::is_same_v<T, float>) {
        acc[r] = fmaf(wj, x(r, j), acc[r]);
      } else {
        acc[r] += wj * x(r, j);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const T sum = WarpTotal(acc[r]);
    if (lane == 0) store(r, sum);
  }
}

// ---- W8A8 ---------------------------------------------------------------------------------------

// Largest in_features whose int8 dot products fit an int32: 128 * 127 * in < 2^31 (the activation
// codes are in [-127, 127]; an I8 weight byte may be -128 even though the converter never writes
// it).
constexpr int64_t kI8MaxIn = 132104;
// From this many rows the int8 tensor-core kernel (when the weight rows are 16-byte aligned).
constexpr int64_t kI8MmaMinRows = 3;

// Row r of x (stride xs) -> xq[r * in_pad ...] (zero padded to in_pad) and sx[r], the reference's
// QuantizeInt8Row. One block per row (grid-stride).
__global__ void __launch_bounds__(kThreads)
    QuantizeRowsKernel(const float* __restrict__ x, int64_t xs, int64_t rows, int64_t in,
                       int64_t in_pad, int8_t* __restrict__ xq, float* __restrict__ sx) {
  __shared__ float red[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * xs;
    float m = 0.0f;
    for (int64_t j = threadIdx.x; j < in; j += blockDim.x) m = fmaxf(m, fabsf(xr[j]));
    m = WarpMax(m);
    if (lane == 0) red[warp] = m;
    __syncthreads();
    float amax = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) amax = fmaxf(amax, red[w]);
    __syncthreads();  // red is rewritten by the next row
    const bool zero = !(amax > 0.0f);
    const float s = zero ? 0.0f : amax / 127.0f;
    int8_t* q = xq + r * in_pad;
    for (int64_t j = threadIdx.x; j < in_pad; j += blockDim.x) {
      int v = 0;
      if (!zero && j < in) v = min(max(__float2int_rn(xr[j] / s), -127), 127);
      q[j] = static_cast<int8_t>(v);
    }
    if (threadIdx.x == 0) sx[r] = s;
  }
}

struct I8Args {
  const int8_t* w;  // [out, in]
  const void* w_scale;
  int scale_kind;
  const int8_t* xq;  // [rows][xq_stride]
  int64_t xq_stride;
  const float* sx;  // [rows]
  float* y;
  int64_t ys;
  int64_t rows;
  int64_t out;
  int64_t in;
  bool accumulate;
  int32_t* partial;          // mma with splits: [splits][rows][out], else null
  int64_t chunks_per_split;  // mma: 64-column chunks per blockIdx.y
};

// y = float(acc) * s_x * s_w (+ y), each operation rounded on its own as in the reference.
__device__ __forceinline__ void StoreScaled(float* dst, int acc, float sx, float sw,
                                            bool accumulate) {
  const float v = __fmul_rn(__fmul_rn(static_cast<float>(acc), sx), sw);
  *dst = accumulate ? __fadd_rn(*dst, v) : v;
}

__device__ __forceinline__ int Dot16(const uint4& w, const uint4& x, int acc) {
  acc = __dp4a(static_cast<int>(w.x), static_cast<int>(x.x), acc);
  acc = __dp4a(static_cast<int>(w.y), static_cast<int>(x.y), acc);
  acc = __dp4a(static_cast<int>(w.z), static_cast<int>(x.z), acc);
  return __dp4a(static_cast<int>(w.w), static_cast<int>(x.w), acc);
}

// dp4a GEMV, R rows: one block per kTileOut output features, its threads striding together over
// the 16-byte chunks of those weight rows (in % 16 == 0, rows 16-byte aligned).
template <int R>
__global__ void __launch_bounds__(kThreads) I8GemvTileKernel(I8Args a) {
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * kTileOut;
  const int64_t nvec = a.in / 16;
  const int8_t* wrow[kTileOut];
#pragma unroll
  for (int i = 0; i < kTileOut; ++i) {
    wrow[i] = a.w + TileRow(o0 + i, a.out) * a.in;
  }
  int acc[kTileOut][R] = {};
#pragma unroll 2
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    uint4 wq[kTileOut];
#pragma unroll
    for (int i = 0; i < kTileOut; ++i) wq[i] = LoadStream(wrow[i] + 16 * v);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint4 xv = __ldg(reinterpret_cast<const uint4*>(a.xq + r * a.xq_stride) + v);
#pragma unroll
      for (int i = 0; i < kTileOut; ++i) acc[i][r] = Dot16(wq[i], xv, acc[i][r]);
    }
  }
  TileBlockSum(acc, o0, a.out, [&](int64_t o, int r, int sum) {
    StoreScaled(a.y + r * a.ys + o, sum, a.sx[r], ScaleAt(a.w_scale, a.scale_kind, o),
                a.accumulate);
  });
}

// Scalar GEMV, R rows, any alignment: one warp per output feature.
template <int R>
__global__ void __launch_bounds__(kThreads) I8GemvKernel(I8Args a) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (o >= a.out) return;
  const int8_t* wr = a.w + o * a.in;
  WarpDotRows<R, int>(
      a.in, [&](int64_t j) { return static_cast<int>(wr[j]); },
      [&](int r, int64_t j) { return static_cast<int>(a.xq[r * a.xq_stride + j]); },
      [&](int r, int sum) {
        StoreScaled(a.y + r * a.ys + o, sum, a.sx[r], ScaleAt(a.w_scale, a.scale_kind, o),
                    a.accumulate);
      });
}

// ---- int8 tensor cores: mma.sync m16n8k32 (s8 x s8 -> s32) ----
// A = 16 weight rows (output features) x 32 columns, B = 32 columns x 8 activation rows. A dot
// product does not depend on the order of its terms, so instead of the fragments' interleaved
// columns thread (g, t) loads 16 contiguous bytes at column 16 t of a 64-column chunk, for weight
// rows g and g + 8 and for activation row g: its registers 0 and 1 feed the first mma (the
// fragment's columns 4t.. and 16 + 4t..), registers 2 and 3 the second, and A and B see the same
// permutation of the columns.
constexpr int kMmaWarps = 8;
constexpr int kMmaOut = kMmaWarps * 16;  // output features per block
constexpr int kMmaRowTile = 64;          // activation rows per block (8 mma n-tiles)
constexpr int64_t kMaxGridZ = 65535;

// The weight loads of the integer skinny kernels: 16 bytes of chunks c and c + 1 (64 bytes apart:
// 64 int8 or 128 int4 columns) of the warp's rows a and b, both chunks first so that more bytes are
// in flight. A chunk at or past c_end, or one for which present(chunk) is false, reads as zeros.
template <typename Present>
__device__ __forceinline__ void LoadTwoChunks(const void* wa, const void* wb, int64_t c,
                                              int64_t c_end, Present&& present, uint4 (&qa)[2],
                                              uint4 (&qb)[2]) {
  const auto* pa = static_cast<const uint8_t*>(wa);
  const auto* pb = static_cast<const uint8_t*>(wb);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t cc = c + h;
    qa[h] = qb[h] = make_uint4(0, 0, 0, 0);
    if (cc < c_end && present(cc)) {
      qa[h] = LoadStream(pa + cc * 64);
      qb[h] = LoadStream(pb + cc * 64);
    }
  }
}

__device__ __forceinline__ void MmaS8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                      uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Grid (output blocks, in_features splits, row tiles). NT: 8-row n-tiles per row tile (the last
// ones masked when rows are fewer). Needs in % 16 == 0 and 16-byte aligned weight rows; xq rows
// are padded to a multiple of 64 bytes with zeros.
template <int NT>
__global__ void __launch_bounds__(kMmaWarps * 32) I8MmaKernel(I8Args a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kMmaOut + warp * 16;
  if (m0 >= a.out) return;
  const int64_t row0 = static_cast<int64_t>(blockIdx.z) * kMmaRowTile;
  const int64_t ra = min(m0 + g, a.out - 1), rb = min(m0 + g + 8, a.out - 1);
  const int8_t* wa = a.w + ra * a.in + t * 16;
  const int8_t* wb = a.w + rb * a.in + t * 16;
  const int64_t chunks = (a.in + 63) / 64;
  const int64_t c_begin = blockIdx.y * a.chunks_per_split;
  const int64_t c_end = min(chunks, c_begin + a.chunks_per_split);
  const int8_t* xrow[NT];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const int64_t row = row0 + n * 8 + g;
    xrow[n] = row < a.rows ? a.xq + row * a.xq_stride + t * 16 : nullptr;
  }
  int acc[NT][4] = {};
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int64_t c = c_begin; c < c_end; c += 2) {
    uint4 qa[2], qb[2];
    LoadTwoChunks(
        wa, wb, c, c_end, [&](int64_t cc) { return cc * 64 + t * 16 < a.in; }, qa, qb);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t cc = c + h;
      if (cc >= c_end) break;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const uint4 xv =
            xrow[n] != nullptr ? __ldg(reinterpret_cast<const uint4*>(xrow[n] + cc * 64)) : zero;
        MmaS8(acc[n], qa[h].x, qb[h].x, qa[h].y, qb[h].y, xv.x, xv.y);
        MmaS8(acc[n], qa[h].z, qb[h].z, qa[h].w, qb[h].w, xv.z, xv.w);
      }
    }
  }
  // C fragment: c0, c1 at (row g, cols 2t, 2t + 1), c2, c3 at (row g + 8, ...): features x rows.
  const float sw_a = ScaleAt(a.w_scale, a.scale_kind, ra);
  const float sw_b = ScaleAt(a.w_scale, a.scale_kind, rb);
  ForEachTileOutput(acc, m0, g, t, a.rows - row0, a.out, [&](int64_t o, int64_t r, int v, int i) {
    const int64_t row = row0 + r;
    if (a.partial != nullptr) {
      a.partial[(static_cast<int64_t>(blockIdx.y) * a.rows + row) * a.out + o] = v;
    } else {
      StoreScaled(a.y + row * a.ys + o, v, a.sx[row], i >= 2 ? sw_b : sw_a, a.accumulate);
    }
  });
}

// y[r, o] (+)= scaled sum over splits of partial[s][r][o] (exact integer sum).
__global__ void I8SplitSumKernel(const int32_t* __restrict__ partial, int64_t splits, I8Args a) {
  const int64_t total = a.rows * a.out;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = k / a.out, o = k % a.out;
    int sum = 0;
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * total + k];
    StoreScaled(a.y + r * a.ys + o, sum, a.sx[r], ScaleAt(a.w_scale, a.scale_kind, o),
                a.accumulate);
  }
}

// One GEMV pass of 1-8 rows (I8 or U4 arguments `a`): the vector kernel (one block per kTileOut
// output features, threads over `nvec` 16-byte chunks a row) when `vec`, else the scalar one (one
// warp per output feature). kernels(r), r an integral_constant, gives both for r rows.
template <typename Args, typename Kernels>
absl::Status LaunchIntGemv(const Context& ctx, const Args& a, int rows, bool vec, int64_t nvec,
                           Kernels&& kernels, const char* what) {
  const int threads = GemvThreads(nvec);
  const unsigned tile_blocks = static_cast<unsigned>(CeilDiv(a.out, kTileOut));
  const unsigned warp_blocks = static_cast<unsigned>(CeilDiv(a.out, kWarps));
  if (!ForCountUpTo8(rows, [&](auto r) {
        const auto [tile_kernel, scalar_kernel] = kernels(r);
        if (vec) {
          tile_kernel<<<tile_blocks, threads, 0, ctx.stream>>>(a);
        } else {
          scalar_kernel<<<warp_blocks, kThreads, 0, ctx.stream>>>(a);
        }
      })) {
    return absl::InternalError(absl::StrCat(what, ": bad row count ", rows));
  }
  R2_CUDA_RETURN_IF_LAUNCH_ERROR(what);
  return absl::OkStatus();
}

absl::Status LaunchI8Gemv(const Context& ctx, const I8Args& a, int rows, bool vec) {
  auto kernels = [](auto r) {
    return std::pair(&I8GemvTileKernel<decltype(r)::value>, &I8GemvKernel<decltype(r)::value>);
  };
  return LaunchIntGemv(ctx, a, rows, vec, a.in / 16, kernels, "Linear (int8 GEMV)");
}

absl::Status LaunchI8Mma(const Context& ctx, const I8Args& a, dim3 grid, int nt) {
  const int threads = kMmaWarps * 32;
  if (!ForCountUpTo8(nt, [&](auto n) {
        I8MmaKernel<decltype(n)::value><<<grid, threads, 0, ctx.stream>>>(a);
      })) {
    return absl::InternalError("Linear: bad int8 mma tile count");
  }
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (int8 mma)");
  return absl::OkStatus();
}

absl::Status RunInt8(const Context& ctx, const LinearParams& p, int64_t xs, int64_t ys) {
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features(), rows = p.rows;
  const int64_t in_pad = CeilDiv(in, 64) * 64;
  const bool vec = in % 16 == 0 && Aligned16(w.weight.data);
  const bool mma = vec && rows >= kI8MmaMinRows;
  // Tensor-core grid: split in_features when the output blocks and row tiles give fewer than
  // about four blocks per SM.
  const int64_t chunks = CeilDiv(in, 64);
  const int64_t blocks_x = CeilDiv(out, kMmaOut);
  const int64_t row_tiles = CeilDiv(rows, kMmaRowTile);
  int64_t splits = 1, per_split = chunks;
  if (mma && row_tiles <= kMaxGridZ) {
    const ChunkSplit split = SplitChunks(ctx.sm_count, blocks_x * row_tiles, chunks);
    splits = split.splits;
    per_split = split.per_split;
  }
  const size_t xq_bytes = Align256(static_cast<size_t>(rows * in_pad));
  const size_t sx_bytes = Align256(sizeof(float) * rows);
  const size_t part_bytes = splits > 1 ? Align256(sizeof(int32_t) * splits * rows * out) : 0;
  absl::StatusOr<void*> scratch =
      ctx.linear_scratch.Get(xq_bytes + sx_bytes + part_bytes, ctx.stream);
  if (!scratch.ok()) return scratch.status();
  auto* xq = static_cast<int8_t*>(*scratch);
  auto* sx = reinterpret_cast<float*>(static_cast<char*>(*scratch) + xq_bytes);
  auto* partial =
      splits > 1 ? reinterpret_cast<int32_t*>(static_cast<char*>(*scratch) + xq_bytes + sx_bytes)
                 : nullptr;
  QuantizeRowsKernel<<<GridCap(rows, 65535), kThreads, 0, ctx.stream>>>(p.x, xs, rows, in, in_pad,
                                                                        xq, sx);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (int8 activations)");

  I8Args a{};
  a.w = static_cast<const int8_t*>(w.weight.data);
  a.w_scale = w.scale.data;
  a.scale_kind = ScaleKindOf(w.scale.dtype);
  a.xq_stride = in_pad;
  a.ys = ys;
  a.out = out;
  a.in = in;
  a.accumulate = p.accumulate;
  if (!mma) {
    for (int64_t r0 = 0; r0 < rows; r0 += kPassRows) {
      const int n = static_cast<int>(std::min<int64_t>(kPassRows, rows - r0));
      a.xq = xq + r0 * in_pad;
      a.sx = sx + r0;
      a.y = p.y + r0 * ys;
      a.rows = n;
      if (absl::Status s = LaunchI8Gemv(ctx, a, n, vec); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  const int nt = static_cast<int>(std::min<int64_t>(8, CeilDiv(rows, 8)));
  a.chunks_per_split = per_split;
  // Launches of at most kMaxGridZ row tiles (one unless there are millions of rows).
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxGridZ * kMmaRowTile) {
    const int64_t n = std::min<int64_t>(kMaxGridZ * kMmaRowTile, rows - r0);
    a.xq = xq + r0 * in_pad;
    a.sx = sx + r0;
    a.y = p.y + r0 * ys;
    a.rows = n;
    a.partial = partial;
    const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(splits),
                    static_cast<unsigned>(CeilDiv(n, kMmaRowTile)));
    if (absl::Status s = LaunchI8Mma(ctx, a, grid, nt); !s.ok()) return s;
    if (partial != nullptr) {
      I8SplitSumKernel<<<GridCap(CeilDiv(n * out, 256), 1 << 16), 256, 0, ctx.stream>>>(partial,
                                                                                        splits, a);
      R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (int8 split sum)");
    }
  }
  return absl::OkStatus();
}

// ---- W4A16 --------------------------------------------------------------------------------------

struct U4Args {
  const uint8_t* w;  // [out][row_bytes], packed
  int64_t row_bytes;
  const void* scale;  // [out, groups]
  int scale_kind;
  int64_t groups;
  int64_t group_size;
  const int32_t* zero;  // [ceil(out / 8), groups] or null
  const float* x;
  int64_t xs;
  float* y;
  int64_t ys;
  int64_t out;
  int64_t in;
  bool accumulate;
};

// Element j of packed row wr as float(q - z) * s, the reference's DequantizeIntegerRow.
__device__ __forceinline__ float U4Element(const U4Args& a, const uint8_t* wr, int64_t o,
                                           int64_t j) {
  const int nib = (__ldg(wr + (j >> 1)) >> ((j & 1) * 4)) & 0xf;
  const int64_t g = j / a.group_size;
  const int q = nib - 8 - ZeroAt(a.zero, a.groups, o, g);
  return static_cast<float>(q) * ScaleAt(a.scale, a.scale_kind, o * a.groups + g);
}

// Word q (0..3) of a 16-byte vector.
template <int Q>
__device__ __forceinline__ uint32_t WordOf(const uint4& v) {
  if constexpr (Q == 0) return v.x;
  if constexpr (Q == 1) return v.y;
  if constexpr (Q == 2) return v.z;
  return v.w;
}

// Vector GEMV, R rows: one block per kTileOut output features, threads striding over 16-byte
// chunks (32 values, inside one group) of the packed rows. Needs in % 32 == 0, group_size % 32 ==
// 0, 16-byte aligned weight and x rows.
template <int R>
__global__ void __launch_bounds__(kThreads) U4GemvTileKernel(U4Args a) {
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * kTileOut;
  const int64_t nvec = a.in / 32;
  int64_t orow[kTileOut];
#pragma unroll
  for (int i = 0; i < kTileOut; ++i) orow[i] = TileRow(o0 + i, a.out);
  float acc[kTileOut][R] = {};
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    uint4 wq[kTileOut];
#pragma unroll
    for (int i = 0; i < kTileOut; ++i) wq[i] = LoadStream(a.w + orow[i] * a.row_bytes + 16 * v);
    const int64_t j0 = 32 * v, g = j0 / a.group_size;
    float s[kTileOut], bias[kTileOut];
#pragma unroll
    for (int i = 0; i < kTileOut; ++i) {
      s[i] = ScaleAt(a.scale, a.scale_kind, orow[i] * a.groups + g);
      // (2^23 + nibble) - (2^23 + 8 + z) = q - z exactly.
      bias[i] = 8388608.0f + static_cast<float>(8 + ZeroAt(a.zero, a.groups, orow[i], g));
    }
    float part[kTileOut][R];
#pragma unroll
    for (int i = 0; i < kTileOut; ++i) {
#pragma unroll
      for (int r = 0; r < R; ++r) part[i][r] = 0.0f;
    }
    auto step = [&](auto qtag) {
      constexpr int Q = decltype(qtag)::value;
      float xv[R][8];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4* xp = reinterpret_cast<const float4*>(a.x + r * a.xs + j0 + 8 * Q);
        const float4 f0 = __ldg(xp), f1 = __ldg(xp + 1);
        xv[r][0] = f0.x;
        xv[r][1] = f0.y;
        xv[r][2] = f0.z;
        xv[r][3] = f0.w;
        xv[r][4] = f1.x;
        xv[r][5] = f1.y;
        xv[r][6] = f1.z;
        xv[r][7] = f1.w;
      }
#pragma unroll
      for (int i = 0; i < kTileOut; ++i) {
        const uint32_t word = WordOf<Q>(wq[i]);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float wf = __uint_as_float(0x4B000000u | ((word >> (4 * k)) & 0xfu)) - bias[i];
#pragma unroll
          for (int r = 0; r < R; ++r) part[i][r] = fmaf(wf, xv[r][k], part[i][r]);
        }
      }
    };
    step(std::integral_constant<int, 0>{});
    step(std::integral_constant<int, 1>{});
    step(std::integral_constant<int, 2>{});
    step(std::integral_constant<int, 3>{});
#pragma unroll
    for (int i = 0; i < kTileOut; ++i) {
#pragma unroll
      for (int r = 0; r < R; ++r) acc[i][r] = fmaf(part[i][r], s[i], acc[i][r]);
    }
  }
  TileBlockSum(acc, o0, a.out, [&](int64_t o, int r, float sum) {
    StoreOut(a.y + r * a.ys + o, sum, a.accumulate);
  });
}

// Scalar GEMV, R rows, any shape and alignment: one warp per output feature.
template <int R>
__global__ void __launch_bounds__(kThreads) U4GemvKernel(U4Args a) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (o >= a.out) return;
  const uint8_t* wr = a.w + o * a.row_bytes;
  WarpDotRows<R, float>(
      a.in, [&](int64_t j) { return U4Element(a, wr, o, j); },
      [&](int r, int64_t j) { return __ldg(a.x + r * a.xs + j); },
      [&](int r, float sum) { StoreOut(a.y + r * a.ys + o, sum, a.accumulate); });
}

// Rows [o0, o0 + n) -> bf16 tile [n][in]; one block per row (grid-stride).
__global__ void __launch_bounds__(kThreads)
    DequantU4TileKernel(U4Args a, int64_t o0, int64_t n, __nv_bfloat16* __restrict__ tile) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t o = o0 + i;
    const uint8_t* wr = a.w + o * a.row_bytes;
    __nv_bfloat16* dst = tile + i * a.in;
    for (int64_t j = threadIdx.x; j < a.in; j += blockDim.x) {
      dst[j] = __float2bfloat16_rn(U4Element(a, wr, o, j));
    }
  }
}

U4Args MakeU4Args(const WeightView& w) {
  U4Args a{};
  a.w = static_cast<const uint8_t*>(w.weight.data);
  a.row_bytes = PackedU4RowBytes(w.in_features());
  a.scale = w.scale.data;
  a.scale_kind = ScaleKindOf(w.scale.dtype);
  a.groups = w.scale.shape[1];
  a.group_size = w.group_size;
  a.zero = static_cast<const int32_t*>(w.zero_point.data);
  a.out = w.out_features();
  a.in = w.in_features();
  return a;
}

absl::Status LaunchU4Gemv(const Context& ctx, const U4Args& a, int rows, bool vec) {
  auto kernels = [](auto r) {
    return std::pair(&U4GemvTileKernel<decltype(r)::value>, &U4GemvKernel<decltype(r)::value>);
  };
  return LaunchIntGemv(ctx, a, rows, vec, a.in / 32, kernels, "Linear (int4 GEMV)");
}

// ---- W4A16 tensor cores: mma.sync m16n8k16 bf16 on the packed weight ----
// A = 16 weight rows x 16 columns of q - z as bf16 (exact: |q - z| <= 15), B = 16 columns x 8
// rows of x rounded to bf16, float32 accumulation; the sum over each 128-column chunk (inside one
// group) is multiplied by the group's scale. Thread (g, t) loads 16 bytes (32 values) at column
// 32 t of the chunk for weight rows g and g + 8 and the same 32 columns of x row g; mma step s
// (0..7) takes its columns 4 s .. 4 s + 3, the first pair for registers a0 / a1 / b0 (the
// fragment's columns 2t, 2t + 1), the second for a2 / a3 / b1 (2t + 8, 2t + 9): the same
// permutation of the columns for A and B. Nibbles become bf16 with bit operations: 0x4300 | n is
// 128 + n, and (128 + n) - (136 + z) = q - z exactly. The weight is streamed once for up to 64
// rows; in_features is split over blocks for parallelism and the splits are added in a fixed
// order by a second kernel (deterministic). Error: bf16 rounding of x, ~3e-3 relative.
constexpr int kU4MmaWarps = 8;
constexpr int kU4MmaOut = kU4MmaWarps * 16;  // output features per block
constexpr int64_t kU4MmaMinRows = 5;
constexpr int64_t kU4MmaMaxRows = 64;

struct U4MmaArgs {
  U4Args w;
  const __nv_bfloat16* xb;  // [rows][in]
  int64_t rows;
  int64_t chunks_per_split;  // 128-column chunks per blockIdx.y
  float* partial;            // [splits][rows][out]
};

// bf16x2 a - b (exact here: small integers).
__device__ __forceinline__ uint32_t SubBf16x2(uint32_t a, __nv_bfloat162 b) {
  __nv_bfloat162 va;
  memcpy(&va, &a, 4);
  const __nv_bfloat162 d = __hsub2(va, b);
  uint32_t r;
  memcpy(&r, &d, 4);
  return r;
}

template <int NT>
__global__ void __launch_bounds__(kU4MmaWarps * 32) U4MmaKernel(U4MmaArgs m) {
  const U4Args& a = m.w;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kU4MmaOut + warp * 16;
  if (m0 >= a.out) return;
  const int64_t ra = min(m0 + g, a.out - 1), rb = min(m0 + g + 8, a.out - 1);
  const uint8_t* wa = a.w + ra * a.row_bytes + 16 * t;
  const uint8_t* wb = a.w + rb * a.row_bytes + 16 * t;
  const int64_t chunks = a.in / 128;
  const int64_t c_begin = blockIdx.y * m.chunks_per_split;
  const int64_t c_end = min(chunks, c_begin + m.chunks_per_split);
  float acc[NT][4] = {};
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int64_t c = c_begin; c < c_end; c += 2) {
    uint4 qa[2], qb[2];
    LoadTwoChunks(
        wa, wb, c, c_end, [](int64_t) { return true; }, qa, qb);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t cc = c + h;
      if (cc >= c_end) break;
      const int64_t grp = cc * 128 / a.group_size;
      const float sa = ScaleAt(a.scale, a.scale_kind, ra * a.groups + grp);
      const float sb = ScaleAt(a.scale, a.scale_kind, rb * a.groups + grp);
      const float za = static_cast<float>(136 + ZeroAt(a.zero, a.groups, ra, grp));
      const float zb = static_cast<float>(136 + ZeroAt(a.zero, a.groups, rb, grp));
      const __nv_bfloat162 bias_a = __floats2bfloat162_rn(za, za);
      const __nv_bfloat162 bias_b = __floats2bfloat162_rn(zb, zb);
      const uint32_t wa32[4] = {qa[h].x, qa[h].y, qa[h].z, qa[h].w};
      const uint32_t wb32[4] = {qb[h].x, qb[h].y, qb[h].z, qb[h].w};
      uint32_t A[8][4];
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        const uint32_t ua = wa32[s >> 1] >> (16 * (s & 1));
        const uint32_t ub = wb32[s >> 1] >> (16 * (s & 1));
        // Columns 4s, 4s + 1 (low half: the lower column) and 4s + 2, 4s + 3 as 128 + nibble.
        const uint32_t a01 = 0x43004300u | (ua & 0xfu) | ((ua & 0xf0u) << 12);
        const uint32_t a23 = 0x43004300u | ((ua >> 8) & 0xfu) | ((ua & 0xf000u) << 4);
        const uint32_t b01 = 0x43004300u | (ub & 0xfu) | ((ub & 0xf0u) << 12);
        const uint32_t b23 = 0x43004300u | ((ub >> 8) & 0xfu) | ((ub & 0xf000u) << 4);
        A[s][0] = SubBf16x2(a01, bias_a);
        A[s][1] = SubBf16x2(b01, bias_b);
        A[s][2] = SubBf16x2(a23, bias_a);
        A[s][3] = SubBf16x2(b23, bias_b);
      }
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int64_t row = n * 8 + g;
        uint4 x4[4] = {zero, zero, zero, zero};
        if (row < m.rows) {
          const auto* xp = reinterpret_cast<const uint4*>(m.xb + row * a.in + cc * 128 + 32 * t);
#pragma unroll
          for (int i = 0; i < 4; ++i) x4[i] = __ldg(xp + i);
        }
        const uint32_t xw[16] = {x4[0].x, x4[0].y, x4[0].z, x4[0].w, x4[1].x, x4[1].y,
                                 x4[1].z, x4[1].w, x4[2].x, x4[2].y, x4[2].z, x4[2].w,
                                 x4[3].x, x4[3].y, x4[3].z, x4[3].w};
        float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int s = 0; s < 8; ++s) {
          MmaBf16(part, A[s], xw[2 * s], xw[2 * s + 1]);
        }
        acc[n][0] = fmaf(part[0], sa, acc[n][0]);
        acc[n][1] = fmaf(part[1], sa, acc[n][1]);
        acc[n][2] = fmaf(part[2], sb, acc[n][2]);
        acc[n][3] = fmaf(part[3], sb, acc[n][3]);
      }
    }
  }
  StoreTilePartials(m.partial + static_cast<int64_t>(blockIdx.y) * m.rows * a.out, acc, m0, g, t,
                    m.rows, a.out);
}

bool CanUseU4Mma(const Context& ctx, const LinearParams& p) {
  const WeightView& w = p.weight;
  return !ctx.fp32_activations && p.rows >= kU4MmaMinRows && p.rows <= kU4MmaMaxRows &&
         w.in_features() % 128 == 0 && w.group_size % 128 == 0 && Aligned16(w.weight.data);
}

absl::Status RunU4Mma(const Context& ctx, const LinearParams& p, int64_t xs, int64_t ys) {
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features(), rows = p.rows;
  const int64_t chunks = in / 128;
  const int64_t blocks_x = CeilDiv(out, kU4MmaOut);
  // About four blocks per SM: enough weight bytes in flight to approach the copy bandwidth.
  const ChunkSplit split = SplitChunks(ctx.sm_count, blocks_x, chunks);
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(split.splits));
  const SkinnyPass pass{.x = p.x,
                        .xs = xs,
                        .rows = rows,
                        .in = in,
                        .out = out,
                        .splits = split.splits,
                        .x_mul = 1.0f,
                        .y = p.y,
                        .ys = ys,
                        .accumulate = p.accumulate};
  return RunSkinnyPass(ctx, pass, [&](const __nv_bfloat16* xb, float* partial) -> absl::Status {
    const U4MmaArgs m{MakeU4Args(w), xb, rows, split.per_split, partial};
    if (!ForCountUpTo8(static_cast<int>(CeilDiv(rows, 8)), [&](auto nt) {
          U4MmaKernel<decltype(nt)::value><<<grid, kU4MmaWarps * 32, 0, ctx.stream>>>(m);
        })) {
      return absl::InternalError("Linear: bad int4 mma tile count");
    }
    R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (int4 mma)");
    return absl::OkStatus();
  });
}

// ---- MoeExperts by expert -----------------------------------------------------------------------

// h[t, o] += sum_j w[t, j] * y[pos[t, j], o], j = 0, 1, ... (pos < 0: the pair is skipped).
__global__ void CombineGroupedKernel(const float* __restrict__ y, const int32_t* __restrict__ pos,
                                     const float* __restrict__ weights, int64_t rows, int64_t top_k,
                                     int64_t hidden, float* __restrict__ h, int64_t hs) {
  for (int64_t t = blockIdx.y; t < rows; t += gridDim.y) {
    for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < hidden;
         o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      float acc = 0.0f;
      for (int64_t j = 0; j < top_k; ++j) {
        const int32_t at = pos[t * top_k + j];
        if (at < 0) continue;
        acc += weights[t * top_k + j] * y[at * hidden + o];
      }
      h[t * hs + o] += acc;
    }
  }
}

absl::Status CheckExpertView(const WeightView& v, int64_t out, int64_t in, const char* which,
                             int64_t e) {
  if (v.weight.data == nullptr || v.weight.shape.size() != 2 || v.out_features() != out ||
      v.in_features() != in) {
    return Invalid("MoeExperts",
                   absl::StrCat("expert ", e, " ", which, " must be [", out, ", ", in, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

// ---- entry points -------------------------------------------------------------------------------

absl::Status LinearInteger(const Context& ctx, const LinearParams& p, bool* done) {
  *done = true;
  const WeightView& w = p.weight;
  if (absl::Status s = CheckIntegerWeight(w, "Linear"); !s.ok()) return s;
  const bool i8 = w.weight.dtype == DType::kI8;
  const std::string kind = i8 ? "i8" : "u4";
  if (p.rows < 0) return Invalid("Linear", "rows must be >= 0");
  if (p.batch != 1) {
    return Invalid("Linear", "batch > 1 takes bf16/f16/f32 weights only, got " + kind);
  }
  const int64_t in = w.in_features(), out = w.out_features();
  if (i8 && in > kI8MaxIn) {
    return Invalid("Linear", absl::StrCat("i8 weight with in_features ", in,
                                          ": the int32 sums take at most ", kI8MaxIn));
  }
  const size_t scale_align = w.scale.dtype == DType::kF32 ? 4 : 2;
  if (reinterpret_cast<uintptr_t>(w.scale.data) % scale_align != 0 ||
      reinterpret_cast<uintptr_t>(w.zero_point.data) % 4 != 0) {
    return Invalid("Linear", kind + " scale or zero_point is not aligned to its element size");
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr) return Invalid("Linear", "null x or y");
  const int64_t xs = StrideOr(p.x_stride, in), ys = StrideOr(p.y_stride, out);
  if (xs < in) return Invalid("Linear", "x_stride is smaller than in_features");
  if (ys < out) return Invalid("Linear", "y_stride is smaller than out_features");
  if (i8) return RunInt8(ctx, p, xs, ys);
  if (CanUseU4Mma(ctx, p)) return RunU4Mma(ctx, p, xs, ys);
  if (!ctx.fp32_activations && p.rows >= kU4LtMinRows) {
    *done = false;  // bf16 tiles for cuBLASLt (linear.cu)
    return absl::OkStatus();
  }
  return LinearU4Gemv(ctx, p);
}

absl::Status LinearU4Gemv(const Context& ctx, const LinearParams& p) {
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features();
  const int64_t xs = StrideOr(p.x_stride, in), ys = StrideOr(p.y_stride, out);
  U4Args a = MakeU4Args(w);
  a.xs = xs;
  a.ys = ys;
  a.accumulate = p.accumulate;
  const bool vec = in % 32 == 0 && w.group_size % 32 == 0 && Aligned16(w.weight.data) &&
                   xs % 4 == 0 && Aligned16(p.x);
  for (int64_t r0 = 0; r0 < p.rows; r0 += kPassRows) {
    const int n = static_cast<int>(std::min<int64_t>(kPassRows, p.rows - r0));
    a.x = p.x + r0 * xs;
    a.y = p.y + r0 * ys;
    if (absl::Status s = LaunchU4Gemv(ctx, a, n, vec); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DequantU4Tile(const Context& ctx, const WeightView& w, int64_t o0, int64_t n,
                           void* tile) {
  if (n <= 0) return absl::OkStatus();
  DequantU4TileKernel<<<GridCap(n, 1 << 16), kThreads, 0, ctx.stream>>>(
      MakeU4Args(w), o0, n, static_cast<__nv_bfloat16*>(tile));
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (int4 to bf16 tile)");
  return absl::OkStatus();
}

absl::Status MoeExpertsByExpert(const Context& ctx, const MoeExpertsParams& p) {
  const std::string op = "MoeExperts";
  if (p.rows < 0) return Invalid(op, absl::StrCat("rows must be >= 0, got ", p.rows));
  if (p.hidden <= 0 || p.width <= 0) return Invalid(op, "hidden and width must be > 0");
  if (p.num_experts <= 0) return Invalid(op, "num_experts must be > 0");
  if (p.top_k < 1) return Invalid(op, absl::StrCat("top_k must be >= 1, got ", p.top_k));
  if (p.x_stride != 0 && p.x_stride < p.hidden) return Invalid(op, "x_stride < hidden");
  if (p.h_stride != 0 && p.h_stride < p.hidden) return Invalid(op, "h_stride < hidden");
  const int64_t experts = p.num_experts, hidden = p.hidden, width = p.width, k = p.top_k;
  for (int64_t e = 0; e < experts; ++e) {
    const WeightView* v = p.expert_views;
    if (absl::Status s = CheckExpertView(v[e], width, hidden, "gate", e); !s.ok()) return s;
    if (absl::Status s = CheckExpertView(v[experts + e], width, hidden, "up", e); !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckExpertView(v[2 * experts + e], hidden, width, "down", e); !s.ok()) {
      return s;
    }
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.h == nullptr) return Invalid(op, "null x or h");
  if (p.expert_ids == nullptr || p.expert_weights == nullptr) {
    return Invalid(op, "null expert_ids or expert_weights");
  }
  const int64_t pairs = p.rows * k;
  std::vector<int32_t> ids(pairs);
  R2_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ids.data(), p.expert_ids, sizeof(int32_t) * pairs,
                                          cudaMemcpyDeviceToHost, ctx.stream));
  R2_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  // Counting sort by expert, tokens in order within each expert. staging = [grouped row ->
  // token (pairs)][pair -> grouped row or -1 (pairs)].
  std::vector<int64_t> start(experts + 1, 0);
  for (int32_t e : ids) {
    if (e >= 0 && e < experts) ++start[e + 1];
  }
  for (int64_t e = 0; e < experts; ++e) start[e + 1] += start[e];
  const int64_t used = start[experts];
  if (used == 0) return absl::OkStatus();
  std::vector<int32_t> staging(2 * pairs, -1);
  std::vector<int64_t> next(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < pairs; ++i) {
    const int32_t e = ids[i];
    if (e < 0 || e >= experts) continue;
    const int64_t at = next[e]++;
    staging[at] = static_cast<int32_t>(i / k);
    staging[pairs + i] = static_cast<int32_t>(at);
  }
  const size_t idx_bytes = Align256(sizeof(int32_t) * 2 * pairs);
  const size_t xg_bytes = Align256(sizeof(float) * used * hidden);
  const size_t gu_bytes = Align256(sizeof(float) * used * 2 * width);
  const size_t y_bytes = Align256(sizeof(float) * used * hidden);
  absl::StatusOr<void*> scratch =
      ctx.misc_scratch.Get(idx_bytes + xg_bytes + gu_bytes + y_bytes, ctx.stream);
  if (!scratch.ok()) return scratch.status();
  char* base = static_cast<char*>(*scratch);
  auto* d_idx = reinterpret_cast<int32_t*>(base);
  auto* xg = reinterpret_cast<float*>(base + idx_bytes);
  auto* gu = reinterpret_cast<float*>(base + idx_bytes + xg_bytes);
  auto* yg = reinterpret_cast<float*>(base + idx_bytes + xg_bytes + gu_bytes);
  // Pageable source: the call returns once the bytes are staged, so `staging` may go.
  R2_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d_idx, staging.data(), sizeof(int32_t) * 2 * pairs,
                                          cudaMemcpyHostToDevice, ctx.stream));
  const int64_t xs = StrideOr(p.x_stride, hidden), hs = StrideOr(p.h_stride, hidden);
  if (absl::Status s = GatherRows(ctx, {.x = p.x,
                                        .x_stride = xs,
                                        .x_rows = p.rows,
                                        .index = d_idx,
                                        .rows = used,
                                        .dim = hidden,
                                        .out = xg});
      !s.ok()) {
    return s;
  }
  const WeightView* v = p.expert_views;
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = start[e + 1] - start[e];
    if (n == 0) continue;
    float* g = gu + start[e] * 2 * width;
    const float* xe = xg + start[e] * hidden;
    if (absl::Status s =
            Linear(ctx, {.x = xe, .rows = n, .weight = v[e], .y = g, .y_stride = 2 * width});
        !s.ok()) {
      return s;
    }
    if (absl::Status s = Linear(
            ctx,
            {.x = xe, .rows = n, .weight = v[experts + e], .y = g + width, .y_stride = 2 * width});
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = SiluMul(ctx, {.gate = gu,
                                     .gate_stride = 2 * width,
                                     .up = gu + width,
                                     .up_stride = 2 * width,
                                     .out = gu,
                                     .out_stride = 2 * width,
                                     .rows = used,
                                     .dim = width});
      !s.ok()) {
    return s;
  }
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = start[e + 1] - start[e];
    if (n == 0) continue;
    if (absl::Status s = Linear(ctx, {.x = gu + start[e] * 2 * width,
                                      .x_stride = 2 * width,
                                      .rows = n,
                                      .weight = v[2 * experts + e],
                                      .y = yg + start[e] * hidden});
        !s.ok()) {
      return s;
    }
  }
  const dim3 grid(GridCap(CeilDiv(hidden, 256), 1 << 16), GridCap(p.rows, 65535));
  CombineGroupedKernel<<<grid, 256, 0, ctx.stream>>>(yg, d_idx + pairs, p.expert_weights, p.rows, k,
                                                     hidden, p.h, hs);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MoeExperts (combine)");
  return absl::OkStatus();
}

}  // namespace r2::cuda

#pragma once
// What the Linear kernels of linear.cu (float and FP8 weights) and linear_int.cu (I8 and U4
// weights) share: the streaming weight load, the end of the vector GEMV blocks, the 1-8 template
// dispatch, and for the tensor-core skinny kernels the bf16 mma, the C-fragment walk, the
// in_features split choice and the host side of a pass (RunSkinnyPass, on two launchers defined
// in linear.cu: x to bf16, the sum over splits). Internal to those two files.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"

namespace r2::cuda {

// ---- launchers (linear.cu) ----------------------------------------------------------------------

// x [batch][rows] (row stride xs, batch stride x_bs) times `mul` -> packed bf16 [batch][rows][in].
absl::Status ConvertToBf16(const Context& ctx, const float* x, int64_t xs, int64_t x_bs,
                           int64_t batch, int64_t rows, int64_t in, __nv_bfloat16* out, float mul);

// y[r, o] (+)= sum over s of partial[s][r][o] for r < rows, o < out, the splits added in order
// (deterministic).
absl::Status SplitSum(const Context& ctx, const float* partial, int64_t splits, int64_t rows,
                      int64_t out, float* y, int64_t ys, bool accumulate);

namespace {

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
inline size_t Align256(size_t b) { return (b + 255) / 256 * 256; }

// The in_features split of a tensor-core skinny kernel: `chunks` column chunks over about four
// blocks per SM given `blocks` blocks per split, at least one chunk per split.
struct ChunkSplit {
  int64_t splits;
  int64_t per_split;  // chunks per split; splits * per_split >= chunks
};
inline ChunkSplit SplitChunks(int sm_count, int64_t blocks, int64_t chunks) {
  const int64_t want = std::clamp<int64_t>(CeilDiv(4 * std::max(sm_count, 1), blocks), 1, chunks);
  const int64_t per_split = CeilDiv(chunks, want);
  return {CeilDiv(chunks, per_split), per_split};
}

// Calls f(std::integral_constant<int, N>{}) for n == N in [1, 8] and returns true; false for any
// other n (the kernels' row or tile counts are template parameters up to 8).
template <int N = 1, typename F>
bool ForCountUpTo8(int n, F&& f) {
  if constexpr (N > 8) {
    return false;
  } else {
    if (n == N) {
      f(std::integral_constant<int, N>{});
      return true;
    }
    return ForCountUpTo8<N + 1>(n, std::forward<F>(f));
  }
}

// Streaming 16-byte weight load: read once, keep L1 for the activations.
__device__ __forceinline__ uint4 LoadStream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// y (+)= v.
__device__ __forceinline__ void StoreOut(float* dst, float v, bool accumulate) {
  *dst = accumulate ? *dst + v : v;
}

// ---- vector GEMV blocks ----
// One block per kTileOut output features, at most kTileThreads threads striding together over the
// 16-byte chunks of those weight rows.
constexpr int kTileOut = 4;
constexpr int kTileThreads = 256;

// The weight row a GEMV tile reads for output feature o: past the end it recomputes the last one
// (and stores nothing for it).
__device__ __forceinline__ int64_t TileRow(int64_t o, int64_t out) { return o < out ? o : out - 1; }

// Threads for a vector GEMV over `nvec` 16-byte chunks per row: a multiple of 32, at most
// kTileThreads.
inline int GemvThreads(int64_t nvec) {
  return static_cast<int>(std::clamp<int64_t>(CeilDiv(nvec, 32) * 32, 32, kTileThreads));
}

template <typename T>
__device__ __forceinline__ T WarpTotal(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The end of a vector GEMV block: every thread's sums acc[i][r] (output feature o0 + i, row r)
// reduced per warp into shared memory, then one thread per (i, r) adds the warps' values in warp
// order (deterministic) and calls store(o, r, sum) for every o < out.
template <int R, typename T, typename Store>
__device__ __forceinline__ void TileBlockSum(const T (&acc)[kTileOut][R], int64_t o0, int64_t out,
                                             Store&& store) {
  __shared__ T partial[kTileThreads / 32][kTileOut * R];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < kTileOut; ++i) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const T s = WarpTotal(acc[i][r]);
      if (lane == 0) partial[warp][i * R + r] = s;
    }
  }
  __syncthreads();
  const int nwarps = blockDim.x / 32;
  for (int t = threadIdx.x; t < kTileOut * R; t += blockDim.x) {
    const int i = t / R, r = t % R;
    const int64_t o = o0 + i;
    if (o >= out) continue;
    T sum = 0;
    for (int w = 0; w < nwarps; ++w) sum += partial[w][t];
    store(o, r, sum);
  }
}

// ---- tensor-core skinny kernels (mma.sync m16n8kK: 16 output features x 8 rows a tile) ----

// c += a b for one m16n8k16 bf16 tile (row-major A, column-major B, float32 accumulation).
__device__ __forceinline__ void MmaBf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A warp's C fragments for output features m0.. m0 + 15 and NT tiles of 8 rows (thread (g, t):
// c0, c1 at feature m0 + g, rows 8 n + 2 t and 8 n + 2 t + 1; c2, c3 at feature m0 + g + 8):
// calls store(o, row, acc[n][i], i) for those with o < out and row < rows.
template <int NT, typename T, typename Store>
__device__ __forceinline__ void ForEachTileOutput(const T (&acc)[NT][4], int64_t m0, int g, int t,
                                                  int64_t rows, int64_t out, Store&& store) {
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t o = m0 + g + (i >= 2 ? 8 : 0);
      const int64_t row = n * 8 + 2 * t + (i & 1);
      if (o < out && row < rows) store(o, row, acc[n][i], i);
    }
  }
}

// One pass of a tensor-core skinny kernel over `rows` (<= 64) rows of x.
struct SkinnyPass {
  const float* x;
  int64_t xs;
  int64_t rows;
  int64_t in;
  int64_t out;
  int64_t splits;  // blocks along in_features (blockIdx.y)
  float x_mul;     // x is stored as bf16(x * x_mul)
  float* y;
  int64_t ys;
  bool accumulate;
};

// The host side of a pass: linear_scratch holds bf16(x * x_mul) packed [rows][in], then the
// splits' partial sums [splits][rows][out]; launch(xb, partial) launches the kernel (returning its
// status), then y (+)= the sum over splits.
template <typename Launch>
absl::Status RunSkinnyPass(const Context& ctx, const SkinnyPass& p, Launch&& launch) {
  const size_t x_bytes = Align256(sizeof(__nv_bfloat16) * p.rows * p.in);
  const size_t part_bytes = Align256(sizeof(float) * p.splits * p.rows * p.out);
  absl::StatusOr<void*> scratch = ctx.linear_scratch.Get(x_bytes + part_bytes, ctx.stream);
  if (!scratch.ok()) return scratch.status();
  auto* xb = static_cast<__nv_bfloat16*>(*scratch);
  auto* partial = reinterpret_cast<float*>(static_cast<char*>(*scratch) + x_bytes);
  if (absl::Status s = ConvertToBf16(ctx, p.x, p.xs, 0, 1, p.rows, p.in, xb, p.x_mul); !s.ok()) {
    return s;
  }
  if (absl::Status s = launch(xb, partial); !s.ok()) return s;
  return SplitSum(ctx, partial, p.splits, p.rows, p.out, p.y, p.ys, p.accumulate);
}

// The C fragments as one split's partial sums P[row][o] ([rows][out]).
template <int NT>
__device__ __forceinline__ void StoreTilePartials(float* P, const float (&acc)[NT][4], int64_t m0,
                                                  int g, int t, int64_t rows, int64_t out) {
  ForEachTileOutput(acc, m0, g, t, rows, out,
                    [&](int64_t o, int64_t row, float v, int) { P[row * out + o] = v; });
}

}  // namespace
}  // namespace r2::cuda

// Row-wise CUDA ops: Embedding, RmsNorm, Rope, SiluMul, Add, GatherRows, ScatterAddRows.
// Index arrays (token ids, positions, row indices) live on the device: a kernel that meets an
// out-of-range index writes zeros (Embedding, GatherRows) or skips the row (Rope, ScatterAddRows)
// instead of faulting; the caller validated them before upload.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"

namespace r2::cuda {
namespace {

constexpr int kThreads = 256;

// ---- Embedding --------------------------------------------------------------------------------

template <typename T>
__global__ void EmbeddingKernel(const T* __restrict__ table, int64_t vocab, int64_t dim,
                                const int32_t* __restrict__ ids, int64_t rows,
                                float* __restrict__ out, int64_t out_stride) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t id = ids[i];
    float* o = out + i * out_stride;
    if (id < 0 || id >= vocab) {
      for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = 0.0f;
      continue;
    }
    const T* row = table + id * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = ToFloat(row[j]);
  }
}

// ---- RmsNorm ----------------------------------------------------------------------------------

template <typename T>
__global__ void RmsNormKernel(const float* x, int64_t xs, float* y, int64_t ys, int64_t rows,
                              int64_t dim, const T* __restrict__ w, float eps) {
  __shared__ float partial[32];
  __shared__ float inv_rms_shared;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const float* xr = x + i * xs;
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) sum += xr[j] * xr[j];
    sum = WarpSum(sum);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = sum;
    __syncthreads();
    if (warp == 0) {
      const int nwarps = blockDim.x / 32;
      float v = lane < nwarps ? partial[lane] : 0.0f;
      v = WarpSum(v);
      if (lane == 0) inv_rms_shared = 1.0f / sqrtf(v / static_cast<float>(dim) + eps);
    }
    __syncthreads();
    const float inv_rms = inv_rms_shared;
    float* yr = y + i * ys;
    // Each thread rewrites only the elements it read, so x == y is safe.
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
      yr[j] = ToFloat(w[j]) * (xr[j] * inv_rms);
    __syncthreads();  // partial/inv_rms_shared are reused by the next row
  }
}

// ---- Rope -------------------------------------------------------------------------------------

__global__ void RopeKernel(float* x, int64_t rows, int64_t heads, int64_t token_stride,
                           int64_t head_stride, int64_t half, const int32_t* __restrict__ positions,
                           const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                           int64_t max_positions) {
  const int64_t total = rows * heads * half;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k % half;
    const int64_t h = (k / half) % heads;
    const int64_t t = k / (half * heads);
    const int64_t pos = positions[t];
    if (pos < 0 || pos >= max_positions) continue;
    const float c = cos_t[pos * half + i], s = sin_t[pos * half + i];
    float* p = x + t * token_stride + h * head_stride + 2 * i;
    const float a0 = p[0], a1 = p[1];
    p[0] = __fsub_rn(__fmul_rn(a0, c), __fmul_rn(a1, s));
    p[1] = __fadd_rn(__fmul_rn(a0, s), __fmul_rn(a1, c));
  }
}

// ---- SiluMul, Add -----------------------------------------------------------------------------

// Row ops on [rows, dim] views: grid.x covers the columns, grid.y the rows (looping past the
// grid's limit), so no element index is ever divided.
__global__ void SiluMulKernel(const float* gate, int64_t gs, const float* up, int64_t us,
                              float* out, int64_t os, int64_t rows, int64_t dim) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y) {
    const float g = gate[i * gs + j];
    out[i * os + j] = g / (1.0f + expf(-g)) * up[i * us + j];
  }
}

__global__ void AddKernel(const float* a, int64_t as, const float* b, int64_t bs, float* out,
                          int64_t os, int64_t rows, int64_t dim) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= dim) return;
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
    out[i * os + j] = a[i * as + j] + b[i * bs + j];
}

dim3 RowGrid(int64_t rows, int64_t dim) {
  return dim3(static_cast<unsigned>(CeilDiv(dim, 256)), GridCap(rows, 65535));
}

// ---- GatherRows -------------------------------------------------------------------------------

__global__ void GatherRowsKernel(const float* __restrict__ x, int64_t xs, int64_t x_rows,
                                 const int32_t* __restrict__ index, int64_t rows, int64_t dim,
                                 float* __restrict__ out, int64_t os) {
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t src = index != nullptr ? index[i] : i;
    float* o = out + i * os;
    if (src < 0 || src >= x_rows) {
      for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = 0.0f;
      continue;
    }
    const float* xr = x + src * xs;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = xr[j];
  }
}

// ---- ScatterAddRows ---------------------------------------------------------------------------
// Determinism: every output element receives its contributions in increasing source row order,
// exactly as the reference does. Few rows: one thread per column walks the rows in order. More:
// one block per destination scans the index array in order. Many rows and destinations: a stable
// radix sort of (index, row) groups the rows by destination, keeping their order, and one block
// per destination adds its rows in that order.

__device__ __forceinline__ float ScaledAdd(float acc, float scale, float x) {
  return __fadd_rn(acc, __fmul_rn(scale, x));  // no FMA contraction: matches the reference
}

__global__ void ScatterAddColumnsKernel(const float* __restrict__ x, int64_t xs,
                                        const int32_t* __restrict__ index,
                                        const float* __restrict__ scale, int64_t rows, int64_t dim,
                                        float* __restrict__ out, int64_t os, int64_t out_rows) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < dim;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t d = index[i];
      if (d < 0 || d >= out_rows) continue;
      const float s = scale != nullptr ? scale[i] : 1.0f;
      float* o = out + d * os + j;
      *o = ScaledAdd(*o, s, x[i * xs + j]);
    }
  }
}

// One block per destination row d: every warp walks the whole index array in order, 32 entries
// per ballot, and adds each matching source row to its own columns, so every output element
// sees its contributions in increasing source order without any sorting or shared state.
__global__ void ScatterScanKernel(const float* __restrict__ x, int64_t xs,
                                  const int32_t* __restrict__ index,
                                  const float* __restrict__ scale, int64_t rows, int64_t dim,
                                  float* __restrict__ out, int64_t os, int64_t out_rows) {
  const int lane = threadIdx.x % 32;
  for (int64_t d = blockIdx.x; d < out_rows; d += gridDim.x) {
    float* o = out + d * os;
    for (int64_t base = 0; base < rows; base += 32) {
      const int64_t i = base + lane;
      const bool hit = i < rows && index[i] == d;
      unsigned mask = __ballot_sync(0xffffffffu, hit);
      while (mask != 0) {
        const int64_t src = base + __ffs(mask) - 1;
        mask &= mask - 1;
        const float s = scale != nullptr ? scale[src] : 1.0f;
        const float* xr = x + src * xs;
        for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) o[j] = ScaledAdd(o[j], s, xr[j]);
      }
    }
  }
}

// keys[i] = index[i] (out_rows for an out-of-range index, sorted last and skipped), rows_of[i] = i.
__global__ void ScatterKeysKernel(const int32_t* __restrict__ index, int64_t rows, int64_t out_rows,
                                  int32_t* __restrict__ keys, int32_t* __restrict__ rows_of) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t d = index[i];
    keys[i] = (d < 0 || d >= out_rows) ? static_cast<int32_t>(out_rows) : d;
    rows_of[i] = static_cast<int32_t>(i);
  }
}

// begin[d], end[d]: the range of sorted positions whose key is d (left 0, 0 when none).
__global__ void SegmentBoundsKernel(const int32_t* __restrict__ keys, int64_t n, int64_t out_rows,
                                    int32_t* __restrict__ begin, int32_t* __restrict__ end) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t k = keys[p];
    if (k >= out_rows) continue;
    if (p == 0 || keys[p - 1] != k) begin[k] = static_cast<int32_t>(p);
    if (p == n - 1 || keys[p + 1] != k) end[k] = static_cast<int32_t>(p + 1);
  }
}

__global__ void ScatterSegmentsKernel(const float* __restrict__ x, int64_t xs,
                                      const float* __restrict__ scale, int64_t dim,
                                      const int32_t* __restrict__ rows_sorted,
                                      const int32_t* __restrict__ begin,
                                      const int32_t* __restrict__ end, float* __restrict__ out,
                                      int64_t os, int64_t out_rows) {
  for (int64_t d = blockIdx.x; d < out_rows; d += gridDim.x) {
    const int32_t b = begin[d], e = end[d];
    if (b >= e) continue;
    float* o = out + d * os;
    for (int64_t j = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < dim;
         j += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      float acc = o[j];
      for (int32_t p = b; p < e; ++p) {
        const int64_t i = rows_sorted[p];
        acc = ScaledAdd(acc, scale != nullptr ? scale[i] : 1.0f, x[i * xs + j]);
      }
      o[j] = acc;
    }
  }
}

// Rows at or below this use the column-serial kernel; up to rows * out_rows = kScatterScanWork
// the index-scanning kernel (one launch; decode batches); the sort beyond (long prefills).
constexpr int64_t kScatterSerialRows = 16;
constexpr int64_t kScatterScanWork = int64_t{1} << 24;

unsigned Blocks1D(int64_t total) { return GridCap(CeilDiv(total, kThreads), 65535LL * 16); }

}  // namespace

absl::Status Embedding(const Context& ctx, const EmbeddingParams& p) {
  const TensorView& t = p.table;
  if (t.data == nullptr || t.shape.size() != 2 || !IsFloatStorage(t.dtype)) {
    return Invalid("Embedding", "table must be a 2-d bf16/f16/f32 tensor");
  }
  if (t.dim(0) <= 0 || t.dim(1) <= 0) return Invalid("Embedding", "table has a zero dimension");
  if (p.rows < 0) return Invalid("Embedding", "rows must be >= 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.ids == nullptr || p.out == nullptr) return Invalid("Embedding", "null ids or out");
  const int64_t vocab = t.dim(0), dim = t.dim(1), os = StrideOr(p.out_stride, dim);
  if (os < dim) return Invalid("Embedding", "out_stride is smaller than dim");
  return DispatchFloat(t.dtype, [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    EmbeddingKernel<T><<<GridCap(p.rows, 65535), kThreads, 0, ctx.stream>>>(
        t.as<T>(), vocab, dim, p.ids, p.rows, p.out, os);
    R2_CUDA_RETURN_IF_LAUNCH_ERROR("Embedding");
    return absl::OkStatus();
  });
}

absl::Status RmsNorm(const Context& ctx, const RmsNormParams& p) {
  if (p.dim <= 0 || p.rows < 0) return Invalid("RmsNorm", "dim must be > 0 and rows >= 0");
  if (p.weight.data == nullptr || !IsFloatStorage(p.weight.dtype)) {
    return Invalid("RmsNorm", "weight must be bf16/f16/f32, got " + DTypeStr(p.weight.dtype));
  }
  if (p.weight.numel() != p.dim) {
    return Invalid("RmsNorm",
                   absl::StrCat("weight has ", p.weight.numel(), " values, expected ", p.dim));
  }
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr) return Invalid("RmsNorm", "null x or y");
  const int64_t xs = StrideOr(p.x_stride, p.dim), ys = StrideOr(p.y_stride, p.dim);
  if (xs < p.dim || ys < p.dim) return Invalid("RmsNorm", "a stride is smaller than dim");
  const int threads = p.dim >= 4096 ? 1024 : (p.dim >= 1024 ? 512 : 256);
  return DispatchFloat(p.weight.dtype, [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    RmsNormKernel<T><<<GridCap(p.rows, 65535), threads, 0, ctx.stream>>>(
        p.x, xs, p.y, ys, p.rows, p.dim, p.weight.as<T>(), p.eps);
    R2_CUDA_RETURN_IF_LAUNCH_ERROR("RmsNorm");
    return absl::OkStatus();
  });
}

absl::Status Rope(const Context& ctx, const RopeParams& p) {
  if (p.rope_dim <= 0 || p.rope_dim % 2 != 0) return Invalid("Rope", "rope_dim must be even");
  if (p.rows < 0 || p.heads <= 0) return Invalid("Rope", "rows must be >= 0 and heads > 0");
  if (p.max_positions <= 0) return Invalid("Rope", "max_positions must be > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.positions == nullptr || p.cos == nullptr || p.sin == nullptr) {
    return Invalid("Rope", "null x, positions or table");
  }
  if (p.token_stride < 0 || p.head_stride < 0) return Invalid("Rope", "negative stride");
  const int64_t half = p.rope_dim / 2;
  RopeKernel<<<Blocks1D(p.rows * p.heads * half), kThreads, 0, ctx.stream>>>(
      p.x, p.rows, p.heads, p.token_stride, p.head_stride, half, p.positions, p.cos, p.sin,
      p.max_positions);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Rope");
  return absl::OkStatus();
}

absl::Status SiluMul(const Context& ctx, const SiluMulParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("SiluMul", "rows must be >= 0 and dim > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.gate == nullptr || p.up == nullptr || p.out == nullptr) {
    return Invalid("SiluMul", "null gate, up or out");
  }
  const int64_t gs = StrideOr(p.gate_stride, p.dim), us = StrideOr(p.up_stride, p.dim);
  const int64_t os = StrideOr(p.out_stride, p.dim);
  SiluMulKernel<<<RowGrid(p.rows, p.dim), kThreads, 0, ctx.stream>>>(p.gate, gs, p.up, us, p.out,
                                                                     os, p.rows, p.dim);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("SiluMul");
  return absl::OkStatus();
}

absl::Status Add(const Context& ctx, const AddParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("Add", "rows must be >= 0 and dim > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.a == nullptr || p.b == nullptr || p.out == nullptr)
    return Invalid("Add", "null a, b or out");
  const int64_t as = StrideOr(p.a_stride, p.dim), bs = StrideOr(p.b_stride, p.dim);
  const int64_t os = StrideOr(p.out_stride, p.dim);
  AddKernel<<<RowGrid(p.rows, p.dim), kThreads, 0, ctx.stream>>>(p.a, as, p.b, bs, p.out, os,
                                                                 p.rows, p.dim);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Add");
  return absl::OkStatus();
}

absl::Status GatherRows(const Context& ctx, const GatherRowsParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("GatherRows", "rows must be >= 0 and dim > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.out == nullptr) return Invalid("GatherRows", "null x or out");
  if (p.index == nullptr && p.rows > p.x_rows) {
    return Invalid("GatherRows", absl::StrCat("index ", p.x_rows, " out of range"));
  }
  const int64_t xs = StrideOr(p.x_stride, p.dim), os = StrideOr(p.out_stride, p.dim);
  GatherRowsKernel<<<GridCap(p.rows, 65535), kThreads, 0, ctx.stream>>>(p.x, xs, p.x_rows, p.index,
                                                                        p.rows, p.dim, p.out, os);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("GatherRows");
  return absl::OkStatus();
}

absl::Status ScatterAddRows(const Context& ctx, const ScatterAddRowsParams& p) {
  if (p.rows < 0 || p.dim <= 0) return Invalid("ScatterAddRows", "rows must be >= 0, dim > 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.index == nullptr || p.out == nullptr) {
    return Invalid("ScatterAddRows", "null x, index or out");
  }
  if (p.out_rows <= 0) return Invalid("ScatterAddRows", "out_rows must be > 0");
  if (p.rows > INT32_MAX - 1 || p.out_rows > INT32_MAX - 1) {
    return Invalid("ScatterAddRows", "too many rows");
  }
  const int64_t xs = StrideOr(p.x_stride, p.dim), os = StrideOr(p.out_stride, p.dim);
  if (p.rows <= kScatterSerialRows) {
    ScatterAddColumnsKernel<<<Blocks1D(p.dim), kThreads, 0, ctx.stream>>>(
        p.x, xs, p.index, p.scale, p.rows, p.dim, p.out, os, p.out_rows);
    R2_CUDA_RETURN_IF_LAUNCH_ERROR("ScatterAddRows");
    return absl::OkStatus();
  }
  if (p.rows * p.out_rows <= kScatterScanWork) {
    ScatterScanKernel<<<GridCap(p.out_rows, 65535), kThreads, 0, ctx.stream>>>(
        p.x, xs, p.index, p.scale, p.rows, p.dim, p.out, os, p.out_rows);
    R2_CUDA_RETURN_IF_LAUNCH_ERROR("ScatterAddRows");
    return absl::OkStatus();
  }
  // Scratch: keys, sorted keys, rows, sorted rows (rows each), begin/end (out_rows each), then
  // cub's temporary storage.
  const int n = static_cast<int>(p.rows);
  int end_bit = 1;
  while ((int64_t{1} << end_bit) <= p.out_rows) ++end_bit;
  size_t cub_bytes = 0;
  R2_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      nullptr, cub_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0, end_bit,
      ctx.stream));
  auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  const size_t rows_bytes = align(sizeof(int32_t) * p.rows);
  const size_t seg_bytes = align(sizeof(int32_t) * p.out_rows);
  absl::StatusOr<void*> scratch =
      ctx.misc_scratch.Get(4 * rows_bytes + 2 * seg_bytes + align(cub_bytes), ctx.stream);
  if (!scratch.ok()) return scratch.status();
  char* base = static_cast<char*>(*scratch);
  auto* keys = reinterpret_cast<int32_t*>(base);
  auto* keys_sorted = reinterpret_cast<int32_t*>(base + rows_bytes);
  auto* rows_of = reinterpret_cast<int32_t*>(base + 2 * rows_bytes);
  auto* rows_sorted = reinterpret_cast<int32_t*>(base + 3 * rows_bytes);
  auto* begin = reinterpret_cast<int32_t*>(base + 4 * rows_bytes);
  auto* end = reinterpret_cast<int32_t*>(base + 4 * rows_bytes + seg_bytes);
  void* cub_tmp = base + 4 * rows_bytes + 2 * seg_bytes;

  ScatterKeysKernel<<<Blocks1D(p.rows), kThreads, 0, ctx.stream>>>(p.index, p.rows, p.out_rows,
                                                                   keys, rows_of);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("ScatterAddRows keys");
  R2_CUDA_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
      cub_tmp, cub_bytes, keys, keys_sorted, rows_of, rows_sorted, n, 0, end_bit, ctx.stream));
  R2_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(begin, 0, 2 * seg_bytes, ctx.stream));
  SegmentBoundsKernel<<<Blocks1D(p.rows), kThreads, 0, ctx.stream>>>(keys_sorted, p.rows,
                                                                     p.out_rows, begin, end);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("ScatterAddRows bounds");
  const dim3 grid(GridCap(p.out_rows, 65535), GridCap(CeilDiv(p.dim, kThreads), 64));
  ScatterSegmentsKernel<<<grid, kThreads, 0, ctx.stream>>>(p.x, xs, p.scale, p.dim, rows_sorted,
                                                           begin, end, p.out, os, p.out_rows);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("ScatterAddRows");
  return absl::OkStatus();
}

}  // namespace r2::cuda

// Linear on CUDA: y[r, o] (+)= sum_j x[r, j] * W[o, j], float32 activations and outputs.
//
// Paths by row count (thresholds measured on an H200 with tests/bench/cuda_gemm_bench.cc):
//  - GEMV (1-2 rows; up to 8 for F16 weights): the weight is streamed once per pass of up to 8
//    rows with 16-byte loads. Each block owns 4 output features and splits in_features over its
//    threads, loading each x chunk once for the 4 weight rows; weights (FP8 times its block
//    scale) are decoded to float32 in registers and multiplied with float32 activations.
//    Error: float32 accumulation only, ~1e-6 relative. Unaligned rows take a scalar kernel.
//  - FP8 skinny GEMM (3-32 rows, FP8 with 128x128-compatible blocks): tensor cores on the fp8
//    bytes decoded to bf16 in registers and x rounded to bf16; weight streamed once. Error: bf16
//    rounding of x, ~3e-3 relative.
//  - cuBLASLt (more rows): BF16 weights: x rounded to bf16 in scratch, then bf16 x bf16 -> fp32
//    (beta = 1 for accumulate, ldc = y_stride, strided batch). F32 weights: plain fp32 GEMM on x
//    as is (~1e-6). F16 and FP8 weights: dequantized to bf16 tiles in scratch, then the bf16 GEMM
//    per tile. Error: bf16 rounding of the operands, ~1e-2 relative at worst (typically 3e-3).
// When cuBLASLt offers no algorithm for a shape or alignment, the GEMV kernels run in passes of
// 8 rows instead.
#include <cublasLt.h>
#include <cuda_fp8.h>

#include <array>
#include <map>
#include <memory>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/linear_common.cuh"
#include "kernels/cuda/linear_int.h"

namespace r2::cuda {
namespace {

struct Fp8 {};  // tag: e4m3fn storage (one byte)

template <typename WT>
struct WTraits;
template <>
struct WTraits<float> {
  using Storage = float;
  static constexpr int kVec = 4;  // elements per 16-byte load
};
template <>
struct WTraits<__nv_bfloat16> {
  using Storage = __nv_bfloat16;
  static constexpr int kVec = 8;
};
template <>
struct WTraits<__half> {
  using Storage = __half;
  static constexpr int kVec = 8;
};
template <>
struct WTraits<Fp8> {
  using Storage = uint8_t;
  static constexpr int kVec = 16;
};

__device__ __forceinline__ float2 Fp8PairToFloat2(unsigned short pair) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
  return __half22float2(__half2(h));
}

template <typename WT>
__device__ __forceinline__ float LoadScalar(const typename WTraits<WT>::Storage* w, int64_t j) {
  if constexpr (std::is_same_v<WT, Fp8>) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(w[j], __NV_E4M3);
    return __half2float(__half(h));
  } else {
    return ToFloat(w[j]);
  }
}

struct GemvArgs {
  const float* x;
  int64_t xs;
  int64_t x_bs;
  const void* w;
  int64_t w_bs;  // elements
  const float* scale;
  int64_t scale_cols;
  int64_t block_out;
  int64_t block_in;
  float* y;
  int64_t ys;
  int64_t y_bs;
  int64_t out;
  int64_t in;
  bool accumulate;
};

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvMaxRows = 8;  // rows per weight pass

// The scalar GEMV (any alignment, any block size): one warp per output feature o, R rows of x
// per pass, lanes striding over in_features.
template <typename WT, int R, bool kScaled>
__global__ void __launch_bounds__(kGemvThreads) GemvKernel(GemvArgs a) {
  using S = typename WTraits<WT>::Storage;
  const int lane = threadIdx.x & 31;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
  if (o >= a.out) return;
  const int64_t b = blockIdx.y;
  const float* x = a.x + b * a.x_bs;
  float* y = a.y + b * a.y_bs;
  const S* wrow = static_cast<const S*>(a.w) + b * a.w_bs + o * a.in;
  const float* srow = kScaled ? a.scale + (o / a.block_out) * a.scale_cols : nullptr;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
#pragma unroll 4
  for (int64_t j = lane; j < a.in; j += 32) {
    float w = LoadScalar<WT>(wrow, j);
    if constexpr (kScaled) w *= __ldg(srow + j / a.block_in);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = fmaf(w, __ldg(x + r * a.xs + j), acc[r]);
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = WarpSum(acc[r]);
    if (lane == 0) StoreOut(y + r * a.ys + o, v, a.accumulate);
  }
}

// Four consecutive elements (sub-chunk q) of a 16-byte weight vector as float.
template <typename WT, int Q>
__device__ __forceinline__ void Decode4(const uint4& v, float* f) {
  const auto* w = reinterpret_cast<const uint32_t*>(&v);
  if constexpr (std::is_same_v<WT, float>) {
    static_assert(Q == 0);
    for (int k = 0; k < 4; ++k) f[k] = __uint_as_float(w[k]);
  } else if constexpr (std::is_same_v<WT, Fp8>) {
    const uint32_t word = w[Q];
    const float2 lo = Fp8PairToFloat2(static_cast<unsigned short>(word & 0xffffu));
    const float2 hi = Fp8PairToFloat2(static_cast<unsigned short>(word >> 16));
    f[0] = lo.x;
    f[1] = lo.y;
    f[2] = hi.x;
    f[3] = hi.y;
  } else {
    using T2 = std::conditional_t<std::is_same_v<WT, __half>, __half2, __nv_bfloat162>;
    const uint32_t pair[2] = {w[2 * Q], w[2 * Q + 1]};
    const auto* h = reinterpret_cast<const T2*>(pair);
    float2 a, b;
    if constexpr (std::is_same_v<WT, __half>) {
      a = __half22float2(h[0]);
      b = __half22float2(h[1]);
    } else {
      a = __bfloat1622float2(h[0]);
      b = __bfloat1622float2(h[1]);
    }
    f[0] = a.x;
    f[1] = a.y;
    f[2] = b.x;
    f[3] = b.y;
  }
}

// The vector GEMV: one block per kTileOut output features. The block's threads stride together
// over the 16-byte chunks of those weight rows (split along in_features), so each x chunk is
// loaded once for all kTileOut rows, and small layers still spread over every SM; a block
// reduction (fixed order: deterministic) finishes each output.
template <typename WT, int R, bool kScaled>
__global__ void __launch_bounds__(kTileThreads) GemvTileKernel(GemvArgs a) {
  using S = typename WTraits<WT>::Storage;
  constexpr int V = WTraits<WT>::kVec;
  constexpr int O = kTileOut;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * O;
  const int64_t b = blockIdx.y;
  const float* x = a.x + b * a.x_bs;
  float* y = a.y + b * a.y_bs;
  const S* wbase = static_cast<const S*>(a.w) + b * a.w_bs;
  const int64_t nvec = a.in / V;
  const uint4* wv[O];
  const float* srow[O];
#pragma unroll
  for (int i = 0; i < O; ++i) {
    const int64_t o = TileRow(o0 + i, a.out);
    wv[i] = reinterpret_cast<const uint4*>(wbase + o * a.in);
    srow[i] = kScaled ? a.scale + (o / a.block_out) * a.scale_cols : nullptr;
  }
  float acc[O][R];
#pragma unroll
  for (int i = 0; i < O; ++i) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[i][r] = 0.0f;
  }

#pragma unroll 2
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    uint4 wq[O];
#pragma unroll
    for (int i = 0; i < O; ++i) wq[i] = LoadStream(wv[i] + v);
    const int64_t j0 = v * V;
    float sc[O];
#pragma unroll
    for (int i = 0; i < O; ++i) sc[i] = kScaled ? __ldg(srow[i] + j0 / a.block_in) : 1.0f;
    auto step = [&](auto qtag) {
      constexpr int Q = decltype(qtag)::value;
      float wf[O][4];
#pragma unroll
      for (int i = 0; i < O; ++i) {
        Decode4<WT, Q>(wq[i], wf[i]);
        if constexpr (kScaled) {
#pragma unroll
          for (int k = 0; k < 4; ++k) wf[i][k] *= sc[i];
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 xv = __ldg(reinterpret_cast<const float4*>(x + r * a.xs + j0) + Q);
#pragma unroll
        for (int i = 0; i < O; ++i) {
          acc[i][r] = fmaf(wf[i][0], xv.x, acc[i][r]);
          acc[i][r] = fmaf(wf[i][1], xv.y, acc[i][r]);
          acc[i][r] = fmaf(wf[i][2], xv.z, acc[i][r]);
          acc[i][r] = fmaf(wf[i][3], xv.w, acc[i][r]);
        }
      }
    };
    step(std::integral_constant<int, 0>{});
    if constexpr (V >= 8) step(std::integral_constant<int, 1>{});
    if constexpr (V >= 16) {
      step(std::integral_constant<int, 2>{});
      step(std::integral_constant<int, 3>{});
    }
  }

  TileBlockSum(acc, o0, a.out,
               [&](int64_t o, int r, float sum) { StoreOut(y + r * a.ys + o, sum, a.accumulate); });
}

template <typename WT, bool kScaled>
absl::Status LaunchGemvTile(const Context& ctx, const GemvArgs& a, int rows, int64_t batch) {
  const int threads = GemvThreads(a.in / WTraits<WT>::kVec);
  const dim3 grid(static_cast<unsigned>(CeilDiv(a.out, kTileOut)), static_cast<unsigned>(batch));
  if (!ForCountUpTo8(rows, [&](auto r) {
        GemvTileKernel<WT, decltype(r)::value, kScaled><<<grid, threads, 0, ctx.stream>>>(a);
      })) {
    return absl::InternalError("Linear: bad GEMV row count");
  }
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (GEMV)");
  return absl::OkStatus();
}

template <typename WT, bool kScaled>
absl::Status LaunchGemvRows(const Context& ctx, const GemvArgs& a, int rows, int64_t batch) {
  const dim3 grid(static_cast<unsigned>(CeilDiv(a.out, kGemvWarps)), static_cast<unsigned>(batch));
  if (!ForCountUpTo8(rows, [&](auto r) {
        GemvKernel<WT, decltype(r)::value, kScaled><<<grid, kGemvThreads, 0, ctx.stream>>>(a);
      })) {
    return absl::InternalError("Linear: bad GEMV row count");
  }
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (GEMV)");
  return absl::OkStatus();
}

// Every row of x and W (and every batch) starts 16-byte aligned: the vector kernel applies.
template <typename WT>
bool CanVectorize(const LinearParams& p, int64_t xs) {
  constexpr int V = WTraits<WT>::kVec;
  const int64_t in = p.weight.in_features();
  const size_t wsize = sizeof(typename WTraits<WT>::Storage);
  if (in % V != 0 || xs % 4 != 0 || p.x_batch_stride % 4 != 0) return false;
  if (!Aligned16(p.x) || !Aligned16(p.weight.weight.data)) return false;
  if ((p.weight_batch_stride * wsize) % 16 != 0) return false;
  if constexpr (std::is_same_v<WT, Fp8>) {
    if (p.weight.block_in % V != 0) return false;
  }
  return true;
}

// All rows through the GEMV kernels, in passes of up to kGemvMaxRows rows.
absl::Status RunGemv(const Context& ctx, const LinearParams& p, int64_t xs, int64_t ys) {
  const WeightView& w = p.weight;
  GemvArgs a{};
  a.xs = xs;
  a.x_bs = p.x_batch_stride;
  a.w = w.weight.data;
  a.w_bs = p.weight_batch_stride;
  a.scale = w.block_scaled() ? w.scale_inv.as<float>() : nullptr;
  a.scale_cols = w.block_scaled() ? w.scale_inv.shape[1] : 0;
  a.block_out = w.block_out;
  a.block_in = w.block_in;
  a.ys = ys;
  a.y_bs = p.y_batch_stride;
  a.out = w.out_features();
  a.in = w.in_features();
  a.accumulate = p.accumulate;
  auto run = [&](auto tag) -> absl::Status {
    using WT = decltype(tag);
    const bool vec = CanVectorize<WT>(p, xs);
    for (int64_t r0 = 0; r0 < p.rows; r0 += kGemvMaxRows) {
      const int n = static_cast<int>(std::min<int64_t>(kGemvMaxRows, p.rows - r0));
      a.x = p.x + r0 * xs;
      a.y = p.y + r0 * ys;
      constexpr bool kScaled = std::is_same_v<WT, Fp8>;
      absl::Status s = vec ? LaunchGemvTile<WT, kScaled>(ctx, a, n, p.batch)
                           : LaunchGemvRows<WT, kScaled>(ctx, a, n, p.batch);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  };
  switch (w.weight.dtype) {
    case DType::kF32:
      return run(float{});
    case DType::kBF16:
      return run(__nv_bfloat16{});
    case DType::kF16:
      return run(__half{});
    case DType::kF8E4M3:
      return run(Fp8{});
    default:
      return Invalid("Linear", "unsupported weight dtype " + DTypeStr(w.weight.dtype));
  }
}

// ---- cuBLASLt path ----------------------------------------------------------------------------

// x [batch][rows] (strided) times `mul` -> packed bf16 [batch][rows][in]. One block per row
// (grid-stride); kVec: rows 16-byte aligned and in a multiple of 4, float4 in, 4 bf16 out.
template <bool kVec>
__global__ void ToBf16Kernel(const float* __restrict__ x, int64_t xs, int64_t x_bs, int64_t rows,
                             int64_t in, int64_t total_rows, __nv_bfloat16* __restrict__ out,
                             float mul) {
  for (int64_t br = blockIdx.x; br < total_rows; br += gridDim.x) {
    const float* xr = x + (br / rows) * x_bs + (br % rows) * xs;
    __nv_bfloat16* o = out + br * in;
    if constexpr (kVec) {
      for (int64_t j = 4 * threadIdx.x; j < in; j += 4 * blockDim.x) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(xr + j));
        __nv_bfloat162 h[2] = {__floats2bfloat162_rn(v.x * mul, v.y * mul),
                               __floats2bfloat162_rn(v.z * mul, v.w * mul)};
        *reinterpret_cast<uint2*>(o + j) = *reinterpret_cast<const uint2*>(h);
      }
    } else {
      for (int64_t j = threadIdx.x; j < in; j += blockDim.x) {
        o[j] = __float2bfloat16_rn(xr[j] * mul);
      }
    }
  }
}

// Weight rows [o0, o0 + n) of an F16 or FP8 weight -> packed bf16 [n][in].
template <typename WT>
__global__ void DequantTileKernel(const typename WTraits<WT>::Storage* __restrict__ w, int64_t in,
                                  int64_t o0, int64_t n, const float* __restrict__ scale,
                                  int64_t scale_cols, int64_t block_out, int64_t block_in,
                                  __nv_bfloat16* __restrict__ out) {
  const int64_t total = n * in;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = o0 + k / in, j = k % in;
    float v = LoadScalar<WT>(w, o * in + j);
    if (scale != nullptr) v *= scale[(o / block_out) * scale_cols + j / block_in];
    out[k] = __float2bfloat16_rn(v);
  }
}

// The same, 16 bytes of weight per thread (in_features a multiple of the vector width, rows
// 16-byte aligned, FP8 block_in a multiple of 16).
template <typename WT>
__global__ void DequantTileVecKernel(const typename WTraits<WT>::Storage* __restrict__ w,
                                     int64_t in, int64_t o0, int64_t n,
                                     const float* __restrict__ scale, int64_t scale_cols,
                                     int64_t block_out, int64_t block_in,
                                     __nv_bfloat16* __restrict__ out) {
  constexpr int V = WTraits<WT>::kVec;
  const int64_t vecs_per_row = in / V, total = n * vecs_per_row;
  const auto* src = reinterpret_cast<const uint4*>(w + o0 * in);
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 q = LoadStream(src + k);
    float sc = 1.0f;
    if (scale != nullptr) {
      const int64_t o = o0 + k / vecs_per_row, j = (k % vecs_per_row) * V;
      sc = scale[(o / block_out) * scale_cols + j / block_in];
    }
    float f[V];
    Decode4<WT, 0>(q, f);
    if constexpr (V >= 8) Decode4<WT, 1>(q, f + 4);
    if constexpr (V >= 16) {
      Decode4<WT, 2>(q, f + 8);
      Decode4<WT, 3>(q, f + 12);
    }
    __nv_bfloat162 packed[V / 2];
#pragma unroll
    for (int i = 0; i < V / 2; ++i)
      packed[i] = __floats2bfloat162_rn(f[2 * i] * sc, f[2 * i + 1] * sc);
    auto* dst = reinterpret_cast<uint4*>(out + k * V);
#pragma unroll
    for (int i = 0; i < V / 8; ++i) dst[i] = reinterpret_cast<const uint4*>(packed)[i];
  }
}

int AlignOf(const void* p, int64_t batch_stride_bytes) {
  uintptr_t v = reinterpret_cast<uintptr_t>(p) | static_cast<uintptr_t>(batch_stride_bytes);
  int a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

// One GEMM shape: C (m x n, column-major, ldc) = op(A) B with A stored k x m (lda), B k x n (ldb).
using PlanKey = std::array<int64_t, 16>;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // an algorithm was found
};

struct LinearState {
  std::map<PlanKey, Plan> plans;
  ~LinearState() {
    for (auto& [key, plan] : plans) {
      if (plan.a != nullptr) cublasLtMatrixLayoutDestroy(plan.a);
      if (plan.b != nullptr) cublasLtMatrixLayoutDestroy(plan.b);
      if (plan.c != nullptr) cublasLtMatrixLayoutDestroy(plan.c);
      if (plan.op != nullptr) cublasLtMatmulDescDestroy(plan.op);
    }
  }
};

struct Gemm {
  cudaDataType_t ab_type;  // CUDA_R_16BF or CUDA_R_32F
  int64_t m, n, k;
  const void* A;
  int64_t lda, stride_a;
  const void* B;
  int64_t ldb, stride_b;
  float* C;
  int64_t ldc, stride_c;
  int64_t batch;
  bool accumulate;
};

#define R2_LT_RETURN_IF_ERROR(call)                                                      \
  do {                                                                                   \
    cublasStatus_t _r2_st = (call);                                                      \
    if (_r2_st != CUBLAS_STATUS_SUCCESS) return ::r2::cuda::CublasStatus(_r2_st, #call); \
  } while (0)

absl::Status BuildPlan(const Context& ctx, const Gemm& g, int align_a, int align_b, int align_c,
                       Plan& plan) {
  R2_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  R2_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  R2_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  R2_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.a, g.ab_type, g.k, g.m, g.lda));
  R2_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.b, g.ab_type, g.k, g.n, g.ldb));
  R2_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, g.m, g.n, g.ldc));
  if (g.batch > 1) {
    const int32_t count = static_cast<int32_t>(g.batch);
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {plan.a, g.stride_a}, {plan.b, g.stride_b}, {plan.c, g.stride_c}};
    for (const auto& [layout, stride] : layouts) {
      R2_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
      R2_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  R2_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = ctx.lt_workspace_bytes;
  const uint32_t aa = align_a, ab = align_b, ac = align_c;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa,
                                       sizeof(aa));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab,
                                       sizeof(ab));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac,
                                       sizeof(ac));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac,
                                       sizeof(ac));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, plan.op, plan.a, plan.b, plan.c,
                                                           plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  plan.ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (plan.ok) plan.algo = result.algo;
  return absl::OkStatus();
}

// Runs one GEMM through cuBLASLt. *ran is false (and nothing was launched) when cuBLASLt has no
// algorithm for it.
absl::Status RunLt(const Context& ctx, const Gemm& g, bool* ran) {
  *ran = false;
  const int64_t ab_size = g.ab_type == CUDA_R_16BF ? 2 : 4;
  const int align_a = AlignOf(g.A, g.batch > 1 ? g.stride_a * ab_size : 0);
  const int align_b = AlignOf(g.B, g.batch > 1 ? g.stride_b * ab_size : 0);
  const int align_c = AlignOf(g.C, g.batch > 1 ? g.stride_c * 4 : 0);
  if (!ctx.linear_state) ctx.linear_state = std::make_shared<LinearState>();
  auto& plans = static_cast<LinearState*>(ctx.linear_state.get())->plans;
  const PlanKey key = {g.ab_type, g.m,     g.n,          g.k,        g.lda,      g.ldb,
                       g.ldc,     g.batch, g.stride_a,   g.stride_b, g.stride_c, align_a,
                       align_b,   align_c, g.accumulate, 0};
  auto it = plans.find(key);
  if (it == plans.end()) {
    Plan plan;
    absl::Status s = BuildPlan(ctx, g, align_a, align_b, align_c, plan);
    it = plans.emplace(key, plan).first;  // kept even when failed: destroyed with the state
    if (!s.ok()) it->second.ok = false;
  }
  const Plan& plan = it->second;
  if (!plan.ok) return absl::OkStatus();
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  R2_LT_RETURN_IF_ERROR(cublasLtMatmul(ctx.lt, plan.op, &alpha, g.A, plan.a, g.B, plan.b, &beta,
                                       g.C, plan.c, g.C, plan.c, &plan.algo, ctx.lt_workspace,
                                       ctx.lt_workspace_bytes, ctx.stream));
  *ran = true;
  return absl::OkStatus();
}

// From these row counts on, cuBLASLt (per weight dtype). Measured on an H200: the GEMV is faster
// than cuBLASLt for bf16 at 1-2 rows and slower from 4 on (its float32 FMAs become the limit);
// F16/FP8 weights first need a dequantization pass (~1-2 + 2 + 2 bytes per weight), so the
// GEMV's passes stay ahead up to 8 rows (FP8 takes the skinny kernel from 3 rows when it can).
constexpr int64_t kLtMinRowsPlain = 3;
constexpr int64_t kLtMinRowsDequant = 9;
// FP8 weights with 128x128-compatible blocks take the tensor-core skinny kernel for these rows
// (H200: 2-3x faster than the dequantize-then-cuBLASLt path up to 32 rows, slower from 64 on).
constexpr int64_t kSkinnyMinRows = 3;
constexpr int64_t kSkinnyMaxRowsTotal = 32;
// Dequantized bf16 weight tiles are at most this large: small enough to stay in the L2 cache
// (60 MB on H200) between the dequantization kernel writing a tile and the GEMM reading it.
constexpr size_t kDequantTileBytes = size_t{16} << 20;

absl::Status RunLinearLt(const Context& ctx, const LinearParams& p, int64_t xs, int64_t ys,
                         bool* ran) {
  *ran = false;
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features();
  const DType dt = w.weight.dtype;
  if (dt == DType::kF32) {
    const Gemm g{CUDA_R_32F,
                 out,
                 p.rows,
                 in,
                 w.weight.data,
                 in,
                 p.weight_batch_stride,
                 p.x,
                 xs,
                 p.x_batch_stride,
                 p.y,
                 ys,
                 p.y_batch_stride,
                 p.batch,
                 p.accumulate};
    return RunLt(ctx, g, ran);
  }
  // bf16 copy of x, packed [batch][rows][in].
  const size_t x_bytes = Align256(sizeof(__nv_bfloat16) * p.batch * p.rows * in);
  int64_t tile_rows = 0;
  if (dt != DType::kBF16) {
    tile_rows = std::max<int64_t>(
        1, std::min<int64_t>(out, kDequantTileBytes / (sizeof(__nv_bfloat16) * in)));
    if (tile_rows < out && tile_rows > 128) tile_rows = tile_rows / 128 * 128;
  }
  const size_t tile_bytes = Align256(sizeof(__nv_bfloat16) * tile_rows * in);
  absl::StatusOr<void*> scratch = ctx.linear_scratch.Get(x_bytes + tile_bytes, ctx.stream);
  if (!scratch.ok()) return scratch.status();
  auto* xb = static_cast<__nv_bfloat16*>(*scratch);
  auto* tile = reinterpret_cast<__nv_bfloat16*>(static_cast<char*>(*scratch) + x_bytes);
  if (absl::Status s = ConvertToBf16(ctx, p.x, xs, p.x_batch_stride, p.batch, p.rows, in, xb, 1.0f);
      !s.ok()) {
    return s;
  }
  if (dt == DType::kBF16) {
    const Gemm g{CUDA_R_16BF,           out,     p.rows,      in,          w.weight.data, in,
                 p.weight_batch_stride, xb,      in,          p.rows * in, p.y,           ys,
                 p.y_batch_stride,      p.batch, p.accumulate};
    return RunLt(ctx, g, ran);
  }
  // F16 / FP8: per product and per tile of output features.
  const int vw = dt == DType::kF16 ? 8 : 16;
  const bool vec_dequant = in % vw == 0 && Aligned16(w.weight.data) &&
                           (p.weight_batch_stride * 2) % 16 == 0 &&
                           (dt == DType::kF16 || w.block_in % 16 == 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t o0 = 0; o0 < out; o0 += tile_rows) {
      const int64_t n = std::min(tile_rows, out - o0);
      const unsigned blocks = GridCap(CeilDiv(n * in, 256), 1 << 16);
      const unsigned vblocks = GridCap(CeilDiv(n * in / 8, 256), 1 << 16);
      if (dt == DType::kU4) {  // linear_int.cu
        if (absl::Status s = DequantU4Tile(ctx, w, o0, n, tile); !s.ok()) return s;
      } else if (dt == DType::kF16 && vec_dequant) {
        DequantTileVecKernel<__half><<<vblocks, 256, 0, ctx.stream>>>(
            static_cast<const __half*>(w.weight.data) + b * p.weight_batch_stride, in, o0, n,
            nullptr, 0, 1, 1, tile);
      } else if (dt == DType::kF8E4M3 && vec_dequant) {
        DequantTileVecKernel<Fp8><<<vblocks, 256, 0, ctx.stream>>>(
            static_cast<const uint8_t*>(w.weight.data), in, o0, n, w.scale_inv.as<float>(),
            w.scale_inv.shape[1], w.block_out, w.block_in, tile);
      } else if (dt == DType::kF16) {
        DequantTileKernel<__half><<<blocks, 256, 0, ctx.stream>>>(
            static_cast<const __half*>(w.weight.data) + b * p.weight_batch_stride, in, o0, n,
            nullptr, 0, 1, 1, tile);
      } else {
        DequantTileKernel<Fp8><<<blocks, 256, 0, ctx.stream>>>(
            static_cast<const uint8_t*>(w.weight.data), in, o0, n, w.scale_inv.as<float>(),
            w.scale_inv.shape[1], w.block_out, w.block_in, tile);
      }
      R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (dequantize)");
      const Gemm g{CUDA_R_16BF,
                   n,
                   p.rows,
                   in,
                   tile,
                   in,
                   0,
                   xb + b * p.rows * in,
                   in,
                   0,
                   p.y + b * p.y_batch_stride + o0,
                   ys,
                   0,
                   1,
                   p.accumulate};
      bool tile_ran = false;
      if (absl::Status s = RunLt(ctx, g, &tile_ran); !s.ok()) return s;
      if (!tile_ran) {
        if (b == 0 && o0 == 0) return absl::OkStatus();  // nothing launched: caller falls back
        return absl::InternalError("Linear: cuBLASLt rejected a later tile of a started GEMM");
      }
    }
  }
  *ran = true;
  return absl::OkStatus();
}

// ---- FP8 weights, a few dozen rows: tensor-core skinny GEMM --------------------------------
// y^T (out x rows) = W (out x in, fp8) . x^T, with mma.sync m16n8k16 (bf16 in, fp32 accumulate):
// W tiles are the A operand (16 output features), x tiles (8 rows, rounded to bf16) the B
// operand. The weight is streamed once for up to 64 rows. FP8 e4m3 bytes become bf16 with bit
// operations only: the byte's exponent and mantissa bits placed in a bf16 are the value times
// 2^-120 exactly (subnormals included); the factor is undone with the block scale applied to
// each 64-wide chunk's partial sums. Error: bf16 rounding of x, ~3e-3 relative. Because a dot
// product does not depend on the order of its terms, thread t loads 16 contiguous weight bytes and
// the same 16 x values instead of the fragment's interleaved columns. Split over in_features across
// blocks for parallelism; a second kernel adds the splits in a fixed order (deterministic).

constexpr int kSkinnyWarps = 8;                // 16 output features each
constexpr int kSkinnyOut = kSkinnyWarps * 16;  // per block
constexpr int64_t kSkinnyMaxRows = 64;         // 8 tiles of 8 rows
// x is stored as bf16(x * 2^96) (exact power-of-two scaling; |x| up to 2^32 fits) so that the
// products with the 2^-120-scaled weights stay far from float32's subnormal range; the chunk
// sums are multiplied by scale_inv * 2^24.
constexpr float kSkinnyXScale = 0x1p96f;
constexpr float kSkinnyUnscale = 0x1p24f;

struct SkinnyArgs {
  const uint8_t* w;
  const float* scale;
  int64_t scale_cols;
  int64_t block_out;
  int64_t block_in;
  const __nv_bfloat16* xb;  // [rows][in]
  int64_t rows;
  int64_t in;
  int64_t out;
  int64_t chunks_per_split;  // 64-wide chunks of in_features per blockIdx.y
  float* partial;            // [splits][rows][out]
};

// Bytes 0 and 1 (kHigh: 2 and 3) of w, e4m3, as a bf16x2 of value * 2^-120.
template <bool kHigh>
__device__ __forceinline__ uint32_t Fp8PairToBf16Scaled(uint32_t w) {
  const uint32_t u = __byte_perm(w, 0, kHigh ? 0x3424 : 0x1404);  // [0, b0, 0, b1] bytes
  return (u & 0x80008000u) | ((u & 0x7f007f00u) >> 4);
}

template <int NT>
__global__ void __launch_bounds__(kSkinnyWarps * 32) Fp8SkinnyKernel(SkinnyArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kSkinnyOut + warp * 16;
  if (m0 >= a.out) return;
  const int64_t ra = min(m0 + g, a.out - 1), rb = min(m0 + g + 8, a.out - 1);
  const uint8_t* wa = a.w + ra * a.in + t * 16;
  const uint8_t* wb = a.w + rb * a.in + t * 16;
  const float* srow = a.scale + (m0 / a.block_out) * a.scale_cols;
  const int64_t chunks = a.in / 64;
  const int64_t c_begin = blockIdx.y * a.chunks_per_split;
  const int64_t c_end = min(chunks, c_begin + a.chunks_per_split);
  float acc[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[n][i] = 0.0f;
  }
  for (int64_t c = c_begin; c < c_end; c += 2) {
    const bool two = c + 1 < c_end;
    // Both chunks' weights first: more bytes in flight.
    uint4 qa[2], qb[2];
    qa[0] = LoadStream(reinterpret_cast<const uint4*>(wa + c * 64));
    qb[0] = LoadStream(reinterpret_cast<const uint4*>(wb + c * 64));
    if (two) {
      qa[1] = LoadStream(reinterpret_cast<const uint4*>(wa + (c + 1) * 64));
      qb[1] = LoadStream(reinterpret_cast<const uint4*>(wb + (c + 1) * 64));
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (h == 1 && !two) break;
      const int64_t cc = c + h;
      const uint32_t* wa32 = reinterpret_cast<const uint32_t*>(&qa[h]);
      const uint32_t* wb32 = reinterpret_cast<const uint32_t*>(&qb[h]);
      uint32_t A[4][4];
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        A[st][0] = Fp8PairToBf16Scaled<false>(wa32[st]);  // row g, k 4st, 4st+1
        A[st][1] = Fp8PairToBf16Scaled<false>(wb32[st]);  // row g+8
        A[st][2] = Fp8PairToBf16Scaled<true>(wa32[st]);   // row g, k 4st+2, 4st+3
        A[st][3] = Fp8PairToBf16Scaled<true>(wb32[st]);   // row g+8
      }
      const float sc = __ldg(srow + (cc * 64) / a.block_in) * kSkinnyUnscale;
      const int64_t k = cc * 64 + t * 16;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int64_t row = n * 8 + g;
        uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
        if (row < a.rows) {
          const auto* xp = reinterpret_cast<const uint4*>(a.xb + row * a.in + k);
          x0 = __ldg(xp);
          x1 = __ldg(xp + 1);
        }
        const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int st = 0; st < 4; ++st) MmaBf16(part, A[st], xw[2 * st], xw[2 * st + 1]);
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[n][i] = fmaf(part[i], sc, acc[n][i]);
      }
    }
  }
  StoreTilePartials(a.partial + static_cast<int64_t>(blockIdx.y) * a.rows * a.out, acc, m0, g, t,
                    a.rows, a.out);
}

// y[r, o] (+)= sum over splits of partial[s][r][o], splits in order.
__global__ void SplitSumKernel(const float* __restrict__ partial, int64_t splits, int64_t rows,
                               int64_t out, float* __restrict__ y, int64_t ys, bool accumulate) {
  const int64_t total = rows * out;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = k / out, o = k % out;
    float sum = partial[k];
    for (int64_t s = 1; s < splits; ++s) sum += partial[s * total + k];
    StoreOut(y + r * ys + o, sum, accumulate);
  }
}

bool CanUseSkinny(const LinearParams& p) {
  const WeightView& w = p.weight;
  return w.weight.dtype == DType::kF8E4M3 && p.batch == 1 && w.in_features() % 64 == 0 &&
         w.block_in % 64 == 0 && w.block_out % 16 == 0 && Aligned16(w.weight.data);
}

absl::Status RunFp8Skinny(const Context& ctx, const LinearParams& p, int64_t xs, int64_t ys) {
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features();
  const int64_t chunks = in / 64;
  const int64_t blocks_x = CeilDiv(out, kSkinnyOut);
  // About four blocks per SM: enough weight bytes in flight to approach the copy bandwidth.
  const ChunkSplit split = SplitChunks(ctx.sm_count, blocks_x, chunks);
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(split.splits));
  for (int64_t r0 = 0; r0 < p.rows; r0 += kSkinnyMaxRows) {
    const int64_t rows = std::min(kSkinnyMaxRows, p.rows - r0);
    const SkinnyPass pass{.x = p.x + r0 * xs,
                          .xs = xs,
                          .rows = rows,
                          .in = in,
                          .out = out,
                          .splits = split.splits,
                          .x_mul = kSkinnyXScale,
                          .y = p.y + r0 * ys,
                          .ys = ys,
                          .accumulate = p.accumulate};
    auto launch = [&](const __nv_bfloat16* xb, float* partial) -> absl::Status {
      const SkinnyArgs a{static_cast<const uint8_t*>(w.weight.data),
                         w.scale_inv.as<float>(),
                         w.scale_inv.shape[1],
                         w.block_out,
                         w.block_in,
                         xb,
                         rows,
                         in,
                         out,
                         split.per_split,
                         partial};
      if (!ForCountUpTo8(static_cast<int>(CeilDiv(rows, 8)), [&](auto nt) {
            Fp8SkinnyKernel<decltype(nt)::value><<<grid, kSkinnyWarps * 32, 0, ctx.stream>>>(a);
          })) {
        return absl::InternalError("Linear: bad skinny row tile count");
      }
      R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (fp8 skinny)");
      return absl::OkStatus();
    };
    if (absl::Status s = RunSkinnyPass(ctx, pass, launch); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status CheckLinear(const LinearParams& p) {
  const WeightView& w = p.weight;
  if (w.weight.data == nullptr || w.weight.shape.size() != 2) {
    return Invalid("Linear", "weight must be a 2-d tensor [out, in]");
  }
  if (w.out_features() <= 0 || w.in_features() <= 0) {
    return Invalid("Linear", "weight has a zero dimension");
  }
  if (w.weight.dtype == DType::kF8E4M3) {
    if (w.block_out <= 0 || w.block_in <= 0) return Invalid("Linear", "block sizes must be > 0");
    const TensorView& s = w.scale_inv;
    if (s.data == nullptr || s.dtype != DType::kF32) {
      return Invalid("Linear", "f8_e4m3 weight needs an f32 scale_inv");
    }
    const std::vector<int64_t> want = {CeilDiv(w.out_features(), w.block_out),
                                       CeilDiv(w.in_features(), w.block_in)};
    if (s.shape != want) {
      return Invalid("Linear",
                     absl::StrCat("scale_inv shape must be [", want[0], ", ", want[1], "]"));
    }
    if (p.batch > 1) return Invalid("Linear", "batch > 1 takes bf16/f16/f32 weights only");
  } else if (!IsFloatStorage(w.weight.dtype)) {
    return Invalid("Linear", "unsupported weight dtype " + DTypeStr(w.weight.dtype));
  } else if (w.block_scaled()) {
    return Invalid("Linear", "only f8_e4m3 weights take a scale_inv");
  }
  if (p.rows < 0) return Invalid("Linear", "rows must be >= 0");
  if (p.batch < 1 || p.batch > 65535) return Invalid("Linear", "batch must be in [1, 65535]");
  if (p.x_batch_stride < 0 || p.y_batch_stride < 0 || p.weight_batch_stride < 0) {
    return Invalid("Linear", "negative batch stride");
  }
  return absl::OkStatus();
}

}  // namespace

// ---- shared launchers (linear_common.cuh) ---------------------------------------------------

absl::Status ConvertToBf16(const Context& ctx, const float* x, int64_t xs, int64_t x_bs,
                           int64_t batch, int64_t rows, int64_t in, __nv_bfloat16* out, float mul) {
  const int64_t total_rows = batch * rows;
  const bool vec = in % 4 == 0 && xs % 4 == 0 && (batch == 1 || x_bs % 4 == 0) &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int threads = in >= 1024 ? 256 : 128;
  const unsigned blocks = GridCap(total_rows, 1 << 16);
  if (vec) {
    ToBf16Kernel<true>
        <<<blocks, threads, 0, ctx.stream>>>(x, xs, x_bs, rows, in, total_rows, out, mul);
  } else {
    ToBf16Kernel<false>
        <<<blocks, threads, 0, ctx.stream>>>(x, xs, x_bs, rows, in, total_rows, out, mul);
  }
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (x to bf16)");
  return absl::OkStatus();
}

absl::Status SplitSum(const Context& ctx, const float* partial, int64_t splits, int64_t rows,
                      int64_t out, float* y, int64_t ys, bool accumulate) {
  SplitSumKernel<<<GridCap(CeilDiv(rows * out, 256), 1 << 16), 256, 0, ctx.stream>>>(
      partial, splits, rows, out, y, ys, accumulate);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("Linear (split sum)");
  return absl::OkStatus();
}

absl::Status Linear(const Context& ctx, const LinearParams& p) {
  if (p.weight_transposed) {
    return absl::UnimplementedError(
        "Linear: transposed weights (LinearParams::weight_transposed) are not supported on cuda");
  }
  if (p.weight.integer_quantized()) {
    // I8 (W8A8) and U4 (W4A16): linear_int.cu, which checks the weight; U4 at many rows comes back
    // for cuBLASLt on bf16 weight tiles (RunLinearLt), or its GEMV when cuBLASLt has no algorithm.
    bool done = false;
    if (absl::Status s = LinearInteger(ctx, p, &done); !s.ok() || done) return s;
    const int64_t xs = StrideOr(p.x_stride, p.weight.in_features());
    const int64_t ys = StrideOr(p.y_stride, p.weight.out_features());
    bool ran = false;
    if (absl::Status s = RunLinearLt(ctx, p, xs, ys, &ran); !s.ok()) return s;
    return ran ? absl::OkStatus() : LinearU4Gemv(ctx, p);
  }
  if (absl::Status s = CheckLinear(p); !s.ok()) return s;
  if (p.rows == 0) return absl::OkStatus();
  if (p.x == nullptr || p.y == nullptr) return Invalid("Linear", "null x or y");
  const int64_t in = p.weight.in_features(), out = p.weight.out_features();
  const int64_t xs = StrideOr(p.x_stride, in), ys = StrideOr(p.y_stride, out);
  if (xs < in) return Invalid("Linear", "x_stride is smaller than in_features");
  if (ys < out) return Invalid("Linear", "y_stride is smaller than out_features");
  const DType dt = p.weight.weight.dtype;
  if (ctx.fp32_activations) return RunGemv(ctx, p, xs, ys);  // "cuda-fp32": no bf16 operands
  if (p.rows >= kSkinnyMinRows && p.rows <= kSkinnyMaxRowsTotal && CanUseSkinny(p)) {
    return RunFp8Skinny(ctx, p, xs, ys);
  }
  const bool dequant = dt == DType::kF8E4M3 || dt == DType::kF16;
  if (p.rows >= (dequant ? kLtMinRowsDequant : kLtMinRowsPlain)) {
    bool ran = false;
    if (absl::Status s = RunLinearLt(ctx, p, xs, ys, &ran); !s.ok()) return s;
    if (ran) return absl::OkStatus();
  }
  return RunGemv(ctx, p, xs, ys);
}

}  // namespace r2::cuda

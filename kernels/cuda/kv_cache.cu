// KvCacheWrite: each token's latent and rope key encoded into its slot of the paged latent cache,
// in the cache's format (kernels/kv_cache_format.h), byte for byte what EncodeKvCacheRow writes
// (kv_cache_codec.cuh does the conversions as the host does).
//
// One block of 128 threads (4 warps) per row, every thread writing whole 4-byte words:
//   float32  word d = value d
//   bf16     word w = values 2w, 2w + 1 (a zero half past the row's values)
//   fp8      warp-per-group: latent group g (128 values, 32 words) is read by one warp, 4 values a
//            lane; the warp's max |x| gives the scale, lane 0 stores it; then the rope key as bf16
//            pairs and zero padding.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/kv_cache_codec.cuh"

namespace r2::cuda {
namespace {

constexpr int kWriteThreads = 128;

struct WriteArgs {
  KvCacheWriteParams p;
  KvRowLayout l;
};

// Value i of the row [latent; k_pe] being written, 0 past its end.
__device__ __forceinline__ float SourceValue(const WriteArgs& a, const float* latent,
                                             const float* k_pe, int i) {
  if (i < a.l.lora) return latent[i];
  if (i < a.l.lora + a.l.rope) return k_pe[i - a.l.lora];
  return 0.0f;
}

// The rope key as bf16 pairs from word `first_word` of the row on (the rest of the row zero).
__device__ __forceinline__ void WriteRopeWords(const WriteArgs& a, const float* k_pe, uint32_t* row,
                                               int first_word) {
  for (int w = first_word + static_cast<int>(threadIdx.x); w < a.l.row_words; w += blockDim.x) {
    const int i = 2 * (w - first_word);
    const uint32_t lo = i < a.l.rope ? Bf16Bits(k_pe[i]) : 0u;
    const uint32_t hi = i + 1 < a.l.rope ? Bf16Bits(k_pe[i + 1]) : 0u;
    row[w] = lo | (hi << 16);
  }
}

__device__ void WriteFp8Row(const WriteArgs& a, const float* latent, const float* k_pe,
                            uint32_t* row) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  constexpr int kGroup = static_cast<int>(kKvFp8GroupSize);
  for (int g = warp; g < a.l.groups; g += warps) {
    const int begin = g * kGroup, end = min(a.l.lora, begin + kGroup);
    float x[4];
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = begin + 4 * lane + e;
      x[e] = i < end ? latent[i] : 0.0f;
      amax = fmaxf(amax, fabsf(x[e]));  // fmaxf skips a NaN, as std::max(amax, NaN) does
    }
#pragma unroll
    for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(~0u, amax, o));
    const float scale = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
    const float inv = __frcp_rn(scale);
    uint32_t word = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = begin + 4 * lane + e;
      if (i < end) word |= Fp8E4M3Bits(__fmul_rn(x[e], inv)) << (8 * e);
    }
    // Words of this group: [begin / 4, ceil(end / 4)); the last one's bytes past the latent are
    // the zero padding before the scales.
    if (begin + 4 * lane < end) row[begin / 4 + lane] = word;
    if (lane == 0) reinterpret_cast<float*>(row)[a.l.scale_word + g] = scale;
  }
  WriteRopeWords(a, k_pe, row, a.l.rope_byte / 4);
}

__global__ void __launch_bounds__(kWriteThreads) KvCacheWriteKernel(WriteArgs a) {
  const KvCacheWriteParams& p = a.p;
  const PagedLatentCache& c = p.cache;
  const int64_t num_slots = c.num_blocks * c.block_size;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int64_t slot = p.slot_mapping[r];
    if (slot < 0 || slot >= num_slots) continue;
    uint32_t* row = reinterpret_cast<uint32_t*>(c.data) + (slot / c.block_size) * c.block_stride +
                    (slot % c.block_size) * int64_t{a.l.row_words};
    const float* latent = p.latent + r * p.latent_stride;
    const float* k_pe = p.k_pe + r * p.k_pe_stride;
    switch (c.dtype) {
      case KvCacheDType::kFloat32:
        for (int d = threadIdx.x; d < a.l.row_words; d += blockDim.x) {
          row[d] = __float_as_uint(SourceValue(a, latent, k_pe, d));
        }
        break;
      case KvCacheDType::kBF16:
        for (int w = threadIdx.x; w < a.l.row_words; w += blockDim.x) {
          const uint32_t lo = Bf16Bits(SourceValue(a, latent, k_pe, 2 * w));
          const uint32_t hi = 2 * w + 1 < a.l.lora + a.l.rope
                                  ? Bf16Bits(SourceValue(a, latent, k_pe, 2 * w + 1))
                                  : 0u;
          row[w] = lo | (hi << 16);
        }
        break;
      case KvCacheDType::kFp8E4M3:
        WriteFp8Row(a, latent, k_pe, row);
        break;
    }
  }
}

}  // namespace

absl::Status KvCacheWrite(const Context& ctx, const KvCacheWriteParams& p) {
  constexpr char kOp[] = "KvCacheWrite";
  const PagedLatentCache& c = p.cache;
  if (c.data == nullptr || c.num_blocks <= 0 || c.block_size <= 0 || c.kv_lora_rank <= 0 ||
      c.rope_dim < 0) {
    return Invalid(kOp, "empty or malformed cache");
  }
  if (c.row_bytes() <= 0) return Invalid(kOp, "unknown KV cache dtype");
  if (c.row_width() > (1 << 24)) return Invalid(kOp, "cache row width too large");
  if (c.block_stride < c.block_size * c.row_words()) {
    return Invalid(kOp, "cache block_stride smaller than one block");
  }
  if (c.num_blocks * c.block_stride >= (int64_t{1} << 40)) {
    return Invalid(kOp, "cache larger than 2^40 words");
  }
  if (p.rows < 0) return Invalid(kOp, "rows must be >= 0");
  if (p.rows == 0) return absl::OkStatus();
  if (!p.latent || !p.k_pe || !p.slot_mapping) return Invalid(kOp, "null tensor");
  if (p.latent_stride < 0 || p.k_pe_stride < 0) return Invalid(kOp, "negative stride");
  WriteArgs a{};
  a.p = p;
  a.l = MakeKvRowLayout(c);
  if (a.p.latent_stride == 0) a.p.latent_stride = c.kv_lora_rank;
  if (a.p.k_pe_stride == 0) a.p.k_pe_stride = c.rope_dim;
  const int64_t blocks = std::min<int64_t>(p.rows, 65535);
  KvCacheWriteKernel<<<static_cast<unsigned>(blocks), kWriteThreads, 0, ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("KvCacheWriteKernel");
  return absl::OkStatus();
}

}  // namespace r2::cuda

#pragma once
// The KV cache row formats of kernels/kv_cache_format.h on the device: where the parts of a row
// lie, and the scalar conversions of the row codec (EncodeKvCacheRow / DecodeKvCacheRow) done bit
// for bit as the host does them, by hand rather than with the CUDA conversion intrinsics (whose
// NaN encodings differ from kernels/numeric.h's):
//   bf16:  round to nearest even; a NaN keeps its upper half with the quiet bit set.
//   e4m3:  round to nearest even code, saturating at +-448 (infinities too); NaN -> 0x7f.
//   fp8 group scale: max|x| / 448 (1 for an all-zero group), values stored as e4m3(x * (1 / s)),
//   with IEEE division and reciprocal (__fdiv_rn / __frcp_rn) as the host computes them.
// Internal to kernels/cuda; included by kv_cache.cu and mla_decode.cu.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/backend.h"
#include "kernels/kv_cache_format.h"

namespace r2::cuda {
namespace {

// Where the parts of one cache row lie, in the units the kernels use.
struct KvRowLayout {
  KvCacheDType dtype = KvCacheDType::kFloat32;
  int lora = 0;        // kv_lora_rank
  int rope = 0;        // rope_dim
  int row_words = 0;   // 4-byte words per row
  int scale_word = 0;  // fp8: word index of group 0's scale
  int rope_byte = 0;   // 16-bit formats: byte offset of the rope key (bf16)
  int groups = 0;      // fp8: latent groups of kKvFp8GroupSize values
};

inline KvRowLayout MakeKvRowLayout(const PagedLatentCache& c) {
  KvRowLayout l;
  l.dtype = c.dtype;
  l.lora = static_cast<int>(c.kv_lora_rank);
  l.rope = static_cast<int>(c.rope_dim);
  l.row_words = static_cast<int>(c.row_words());
  l.groups = static_cast<int>((c.kv_lora_rank + kKvFp8GroupSize - 1) / kKvFp8GroupSize);
  l.scale_word = static_cast<int>((c.kv_lora_rank + 3) / 4);
  l.rope_byte = c.dtype == KvCacheDType::kFp8E4M3 ? 4 * (l.scale_word + l.groups)
                                                  : static_cast<int>(2 * c.kv_lora_rank);
  return l;
}

// kernels/numeric.h FloatToBF16.
__device__ __forceinline__ uint32_t Bf16Bits(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x40u;
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return bits >> 16;
}

__device__ __forceinline__ float Bf16Value(uint32_t bits16) {
  return __uint_as_float(bits16 << 16);
}

// kernels/numeric.h FloatToFp8E4M3: the nearest e4m3 code (ties to the even code), saturating.
__device__ __forceinline__ uint32_t Fp8E4M3Bits(float f) {
  if (isnan(f)) return 0x7fu;
  const uint32_t sign = (__float_as_uint(f) >> 24) & 0x80u;
  const float a = fminf(fabsf(f), 448.0f);
  uint32_t code;
  if (a < 0.015625f) {
    // Subnormal codes 0..8 are multiples of 2^-9 (code 8 is the smallest normal, 2^-6).
    code = static_cast<uint32_t>(__float2int_rn(a * 512.0f));
  } else {
    // Round the float's 23 mantissa bits to 3, ties to even; a carry moves to the next binade,
    // which is the next code. Codes are (exponent + 7) << 3 | mantissa.
    uint32_t bits = __float_as_uint(a);
    bits += 0x7ffffu + ((bits >> 20) & 1u);
    code = (bits >> 20) - (120u << 3);
  }
  return sign | code;
}

// kernels/numeric.h Fp8E4M3ToFloat.
__device__ __forceinline__ float Fp8E4M3Value(uint32_t b) {
  const uint32_t e = (b >> 3) & 15u, m = b & 7u;
  float mag;
  if (e == 15u && m == 7u) {
    mag = __uint_as_float(0x7fc00000u);
  } else if (e == 0u) {
    mag = static_cast<float>(m) * 0.001953125f;  // m * 2^-9
  } else {
    mag = __uint_as_float(((e + 120u) << 23) | (m << 20));
  }
  return (b & 0x80u) ? -mag : mag;
}

// Value d (< lora + rope) of the row at `row` (4-byte aligned) as float32, as DecodeKvCacheRow.
__device__ __forceinline__ float KvRowValue(const KvRowLayout& l, const float* row, int d) {
  switch (l.dtype) {
    case KvCacheDType::kFloat32:
      return row[d];
    case KvCacheDType::kBF16:
      return Bf16Value(reinterpret_cast<const uint16_t*>(row)[d]);
    case KvCacheDType::kFp8E4M3:
      break;
  }
  if (d >= l.lora) {
    return Bf16Value(reinterpret_cast<const uint16_t*>(reinterpret_cast<const uint8_t*>(row) +
                                                       l.rope_byte)[d - l.lora]);
  }
  const float scale = row[l.scale_word + d / static_cast<int>(kKvFp8GroupSize)];
  return Fp8E4M3Value(reinterpret_cast<const uint8_t*>(row)[d]) * scale;
}

}  // namespace
}  // namespace r2::cuda

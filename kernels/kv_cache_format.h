#pragma once
// The storage formats of the paged MLA latent cache (`--kv-cache-dtype`). A cache row holds one
// token's [latent (L = kv_lora_rank values); rope key (R = rope_dim values)]; its bytes are
//
//   kFloat32  [L x f32][R x f32]                                   4 (L + R) bytes
//   kBF16     [L x bf16][R x bf16]                                 2 (L + R) bytes
//   kFp8E4M3  [L x e4m3][pad to 4][G x f32 scale][R x bf16]        G = ceil(L / 128)
//
// each rounded up to a whole number of 4-byte words (the unit of PagedLatentCache's strides).
// For DeepSeek-V3 (L = 512, R = 64) that is 2304, 1152 and 656 bytes: 2x and 3.5x the tokens of
// float32 in the same memory.
//
// fp8: latent group g (values [128 g, 128 g + 128)) is stored as e4m3(x / s_g) with
// s_g = max|x| / 448 over the group (s_g = 1 for an all-zero group), and read back as
// e4m3 * s_g; the rope key stays bf16 because the rotary dimensions carry position and lose it
// in 3 mantissa bits. A scale per 128 values (not per row) keeps one large latent value from
// flattening the rest of the row for 12 more bytes a row; it is the layout of DeepSeek's own FP8
// MLA cache (FlashMLA), so a future CUDA kernel can follow a known format. A stored latent value
// x comes back within 2^-4 |x| + 2^-10 s_g of itself (3 mantissa bits; the second term is the
// subnormal range, values below 2^-6 s_g).
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"

namespace r2 {

enum class KvCacheDType : uint8_t {
  kFloat32,
  kBF16,
  kFp8E4M3,  // latent e4m3 with per-128 f32 scales, rope key bf16 (see above)
};

// Latent values per fp8 scale.
inline constexpr int64_t kKvFp8GroupSize = 128;

// The flag spelling: "float32", "bf16", "fp8".
const char* KvCacheDTypeName(KvCacheDType dtype);
// Parses a `--kv-cache-dtype` value: "float32" (also "fp32"), "bf16", "fp8" (also "fp8_e4m3");
// "auto" gives nullopt (the backend's default). InvalidArgument naming the flag and the values.
absl::StatusOr<std::optional<KvCacheDType>> ParseKvCacheDType(std::string_view text);

// Bytes of one cache row (a multiple of 4).
int64_t KvCacheRowBytes(KvCacheDType dtype, int64_t kv_lora_rank, int64_t rope_dim);

// The row codec: the single definition of the formats above, used by every CPU kernel and by
// tests. `row` is one row of KvCacheRowBytes bytes.
void EncodeKvCacheRow(KvCacheDType dtype, int64_t kv_lora_rank, int64_t rope_dim,
                      const float* latent, const float* k_pe, void* row);
// out[0, L + R) = the row's values as float32.
void DecodeKvCacheRow(KvCacheDType dtype, int64_t kv_lora_rank, int64_t rope_dim, const void* row,
                      float* out);

}  // namespace r2

#include "kernels/kv_cache_format.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/numeric.h"

namespace r2 {
namespace {

int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

int64_t Fp8Groups(int64_t lora) { return (lora + kKvFp8GroupSize - 1) / kKvFp8GroupSize; }

// Byte offsets inside an fp8 row.
int64_t Fp8ScaleOffset(int64_t lora) { return RoundUp(lora, 4); }
int64_t Fp8RopeOffset(int64_t lora) { return Fp8ScaleOffset(lora) + 4 * Fp8Groups(lora); }

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

void EncodeBf16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t v = FloatToBF16(x[i]);
    std::memcpy(out + 2 * i, &v, 2);
  }
}

void DecodeBf16(const uint8_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, in + 2 * i, 2);
    out[i] = BF16ToFloat(v);
  }
}

void EncodeFp8Latent(const float* x, int64_t lora, uint8_t* row) {
  for (int64_t g = 0; g * kKvFp8GroupSize < lora; ++g) {
    const int64_t begin = g * kKvFp8GroupSize, end = std::min(lora, begin + kKvFp8GroupSize);
    float amax = 0.0f;
    for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
    // A non-finite value gives a non-finite scale, so the row reads back as NaN, not as garbage.
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
    const float inv = 1.0f / scale;
    for (int64_t i = begin; i < end; ++i) row[i] = FloatToFp8E4M3(x[i] * inv);
    std::memcpy(row + Fp8ScaleOffset(lora) + 4 * g, &scale, 4);
  }
}

void DecodeFp8Latent(const uint8_t* row, int64_t lora, float* out) {
  const std::array<float, 256>& table = Fp8Table();
  for (int64_t g = 0; g * kKvFp8GroupSize < lora; ++g) {
    const int64_t begin = g * kKvFp8GroupSize, end = std::min(lora, begin + kKvFp8GroupSize);
    float scale;
    std::memcpy(&scale, row + Fp8ScaleOffset(lora) + 4 * g, 4);
    for (int64_t i = begin; i < end; ++i) out[i] = table[row[i]] * scale;
  }
}

}  // namespace

const char* KvCacheDTypeName(KvCacheDType dtype) {
  switch (dtype) {
    case KvCacheDType::kFloat32:
      return "float32";
    case KvCacheDType::kBF16:
      return "bf16";
    case KvCacheDType::kFp8E4M3:
      return "fp8";
  }
  return "?";
}

absl::StatusOr<std::optional<KvCacheDType>> ParseKvCacheDType(std::string_view text) {
  if (text == "auto") return std::optional<KvCacheDType>();
  if (text == "float32" || text == "fp32") return std::optional(KvCacheDType::kFloat32);
  if (text == "bf16") return std::optional(KvCacheDType::kBF16);
  if (text == "fp8" || text == "fp8_e4m3") return std::optional(KvCacheDType::kFp8E4M3);
  return absl::InvalidArgumentError(absl::StrCat("--kv-cache-dtype: unknown value '",
                                                 std::string(text),
                                                 "' (expected auto, float32, bf16 or fp8)"));
}

int64_t KvCacheRowBytes(KvCacheDType dtype, int64_t kv_lora_rank, int64_t rope_dim) {
  switch (dtype) {
    case KvCacheDType::kFloat32:
      return 4 * (kv_lora_rank + rope_dim);
    case KvCacheDType::kBF16:
      return RoundUp(2 * (kv_lora_rank + rope_dim), 4);
    case KvCacheDType::kFp8E4M3:
      return RoundUp(Fp8RopeOffset(kv_lora_rank) + 2 * rope_dim, 4);
  }
  return 0;
}

void EncodeKvCacheRow(KvCacheDType dtype, int64_t kv_lora_rank, int64_t rope_dim,
                      const float* latent, const float* k_pe, void* row) {
  uint8_t* out = static_cast<uint8_t*>(row);
  switch (dtype) {
    case KvCacheDType::kFloat32:
      std::memcpy(out, latent, 4 * kv_lora_rank);
      std::memcpy(out + 4 * kv_lora_rank, k_pe, 4 * rope_dim);
      return;
    case KvCacheDType::kBF16:
      EncodeBf16(latent, kv_lora_rank, out);
      EncodeBf16(k_pe, rope_dim, out + 2 * kv_lora_rank);
      if ((kv_lora_rank + rope_dim) % 2 != 0)
        std::memset(out + 2 * (kv_lora_rank + rope_dim), 0, 2);
      return;
    case KvCacheDType::kFp8E4M3:
      std::memset(out, 0, KvCacheRowBytes(dtype, kv_lora_rank, rope_dim));
      EncodeFp8Latent(latent, kv_lora_rank, out);
      EncodeBf16(k_pe, rope_dim, out + Fp8RopeOffset(kv_lora_rank));
      return;
  }
}

void DecodeKvCacheRow(KvCacheDType dtype, int64_t kv_lora_rank, int64_t rope_dim, const void* row,
                      float* out) {
  const uint8_t* in = static_cast<const uint8_t*>(row);
  switch (dtype) {
    case KvCacheDType::kFloat32:
      std::memcpy(out, in, 4 * (kv_lora_rank + rope_dim));
      return;
    case KvCacheDType::kBF16:
      DecodeBf16(in, kv_lora_rank + rope_dim, out);
      return;
    case KvCacheDType::kFp8E4M3:
      DecodeFp8Latent(in, kv_lora_rank, out);
      DecodeBf16(in + Fp8RopeOffset(kv_lora_rank), rope_dim, out + kv_lora_rank);
      return;
  }
}

}  // namespace r2

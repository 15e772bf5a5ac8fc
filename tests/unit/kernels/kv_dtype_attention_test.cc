// The bf16 and fp8 KV cache formats (kernels/kv_cache_format.h): the row codec's error bounds,
// and the absorbed MLA attention (decode rows and multi-token chunks over cached context) of the
// reference and optimized CPU backends reading each format, against the float32 cache.
//
// Bounds (max |out - out_f32| / max |out_f32| over the output, the latent values N(0, 1) as after
// the model's RMSNorm):
//   bf16: 1e-2 (8 significant bits: 2^-8 of a value at worst; measured up to 4.1e-3)
//   fp8:  1e-1 (e4m3 latent: 2^-4 of a value at worst, scale per 128 values; bf16 rope key;
//         measured up to 6.3e-2: over short contexts an output is close to one latent row, so
//         its error is the rounding of single values)
// and the optimized backend equals the reference on the same stored cache within float32
// summation noise (1e-5).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/kv_cache_format.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;

double MaxRelative(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
    ref = std::max(ref, std::fabs(double(want[i])));
  }
  return ref == 0 ? diff : diff / ref;
}

TEST(KvCacheFormatTest, RowBytesForDeepseekV3) {
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kFloat32, 512, 64), 2304);
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kBF16, 512, 64), 1152);
  // 512 e4m3 + 4 f32 scales + 64 bf16.
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kFp8E4M3, 512, 64), 656);
  // Odd sizes round up to whole 4-byte words: bf16 2 * 46 = 92; fp8 37 -> 40, 1 scale, 9 bf16.
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kBF16, 37, 9), 92);
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kBF16, 37, 8), 92);
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kFp8E4M3, 37, 9), 40 + 4 + 20);
  EXPECT_EQ(KvCacheRowBytes(KvCacheDType::kFp8E4M3, 300, 9), 300 + 3 * 4 + 20);
}

TEST(KvCacheFormatTest, ParsesFlagValues) {
  EXPECT_EQ(*ParseKvCacheDType("auto"), std::nullopt);
  EXPECT_EQ(*ParseKvCacheDType("float32"), KvCacheDType::kFloat32);
  EXPECT_EQ(*ParseKvCacheDType("bf16"), KvCacheDType::kBF16);
  EXPECT_EQ(*ParseKvCacheDType("fp8"), KvCacheDType::kFp8E4M3);
  for (KvCacheDType d : {KvCacheDType::kFloat32, KvCacheDType::kBF16, KvCacheDType::kFp8E4M3}) {
    EXPECT_EQ(*ParseKvCacheDType(KvCacheDTypeName(d)), d);
  }
  absl::StatusOr<std::optional<KvCacheDType>> bad = ParseKvCacheDType("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--kv-cache-dtype"), std::string::npos);
  EXPECT_NE(bad.status().message().find("'int4'"), std::string::npos);
  EXPECT_NE(bad.status().message().find("bf16"), std::string::npos);
}

TEST(KvCacheFormatTest, Bf16RowRoundTripsWithinHalfAnUlp) {
  std::mt19937 rng(1);
  const int64_t lora = 37, rope = 9;
  std::vector<float> latent = RandomFloats(rng, lora, 3.0f), k_pe = RandomFloats(rng, rope);
  std::vector<uint8_t> row(KvCacheRowBytes(KvCacheDType::kBF16, lora, rope), 0xAB);
  EncodeKvCacheRow(KvCacheDType::kBF16, lora, rope, latent.data(), k_pe.data(), row.data());
  std::vector<float> back(lora + rope);
  DecodeKvCacheRow(KvCacheDType::kBF16, lora, rope, row.data(), back.data());
  for (int64_t i = 0; i < lora + rope; ++i) {
    const float x = i < lora ? latent[i] : k_pe[i - lora];
    EXPECT_LE(std::fabs(back[i] - x), std::ldexp(std::fabs(x), -8)) << i;
  }
}

TEST(KvCacheFormatTest, Fp8RowKeepsEachGroupsScaleAndTheRopeKeyInBf16) {
  std::mt19937 rng(2);
  const int64_t lora = 300, rope = 9;  // groups of 128, 128 and 44
  std::vector<float> latent = RandomFloats(rng, lora), k_pe = RandomFloats(rng, rope);
  latent[5] = 1000.0f;                                  // an outlier in group 0
  std::fill(latent.begin() + 256, latent.end(), 0.0f);  // group 2 all zero
  std::vector<uint8_t> row(KvCacheRowBytes(KvCacheDType::kFp8E4M3, lora, rope), 0xAB);
  EncodeKvCacheRow(KvCacheDType::kFp8E4M3, lora, rope, latent.data(), k_pe.data(), row.data());
  std::vector<float> back(lora + rope);
  DecodeKvCacheRow(KvCacheDType::kFp8E4M3, lora, rope, row.data(), back.data());
  for (int64_t g = 0; g < 3; ++g) {
    float amax = 0;
    for (int64_t i = 128 * g; i < std::min<int64_t>(lora, 128 * g + 128); ++i) {
      amax = std::max(amax, std::fabs(latent[i]));
    }
    const float scale = amax > 0 ? amax / 448 : 1;
    for (int64_t i = 128 * g; i < std::min<int64_t>(lora, 128 * g + 128); ++i) {
      EXPECT_LE(std::fabs(back[i] - latent[i]),
                std::ldexp(std::fabs(latent[i]), -4) + std::ldexp(scale, -10))
          << "value " << i;
    }
  }
  EXPECT_EQ(back[5], 1000.0f);  // a group's largest value is exact (448 * scale)
  // Group 1 is untouched by group 0's outlier: its values keep ~2^-4 relative precision.
  double worst = 0;
  for (int64_t i = 128; i < 256; ++i) {
    if (std::fabs(latent[i]) > 0.5) {
      worst = std::max(worst, std::fabs(double(back[i]) - latent[i]) / std::fabs(latent[i]));
    }
  }
  EXPECT_LE(worst, 1.0 / 16);
  for (int64_t i = 256; i < lora; ++i) EXPECT_EQ(back[i], 0.0f);
  for (int64_t i = 0; i < rope; ++i) {
    EXPECT_LE(std::fabs(back[lora + i] - k_pe[i]), std::ldexp(std::fabs(k_pe[i]), -8));
  }
}

// A paged cache of one dtype, two layers of which layer 1 is used, blocks shuffled.
struct PagedPool {
  std::vector<float> words;  // 4-byte storage words
  PagedLatentCache cache;
};

PagedPool MakePool(KvCacheDType dtype, int64_t num_blocks, int64_t block_size, int64_t lora,
                   int64_t rope) {
  PagedPool pool;
  const int64_t row_words = KvCacheRowBytes(dtype, lora, rope) / 4, layers = 2;
  pool.words.assign(num_blocks * layers * block_size * row_words, 0.0f);
  pool.cache = PagedLatentCache{.data = pool.words.data() + block_size * row_words,
                                .num_blocks = num_blocks,
                                .block_size = block_size,
                                .block_stride = layers * block_size * row_words,
                                .kv_lora_rank = lora,
                                .rope_dim = rope,
                                .dtype = dtype};
  return pool;
}

struct AttentionCase {
  int64_t heads, lora, rope, block_size;
  std::vector<int32_t> kv_lens, q_lens;  // q_len > 1: a prefill chunk over cached context
};

struct CaseData {
  std::vector<float> latent, k_pe, q;
  std::vector<int32_t> tables, cu;
  std::vector<int64_t> slots;
  int64_t max_blocks = 0, num_blocks = 0, q_stride = 0, out_stride = 0;
};

CaseData MakeCase(const AttentionCase& c, std::mt19937& rng) {
  CaseData d;
  const int64_t seqs = static_cast<int64_t>(c.kv_lens.size()), width = c.lora + c.rope;
  d.max_blocks = 1 + *std::max_element(c.kv_lens.begin(), c.kv_lens.end()) / c.block_size;
  d.num_blocks = seqs * d.max_blocks + 2;
  std::vector<int32_t> blocks(d.num_blocks);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  d.tables.assign(blocks.begin(), blocks.begin() + seqs * d.max_blocks);
  for (int64_t b = 0; b < seqs; ++b) {
    for (int64_t p = 0; p < c.kv_lens[b]; ++p) {
      d.slots.push_back(int64_t{d.tables[b * d.max_blocks + p / c.block_size]} * c.block_size +
                        p % c.block_size);
    }
  }
  const int64_t rows = static_cast<int64_t>(d.slots.size());
  d.latent = RandomFloats(rng, rows * c.lora);
  d.k_pe = RandomFloats(rng, rows * c.rope);
  d.cu = {0};
  for (int32_t n : c.q_lens) d.cu.push_back(d.cu.back() + n);
  d.q_stride = c.heads * width + 3;  // padded rows: strides are honoured
  d.out_stride = c.heads * c.lora + 5;
  d.q = RandomFloats(rng, d.cu.back() * d.q_stride, 0.3f);
  return d;
}

// Writes the case's rows into a `dtype` cache and runs the absorbed attention on `backend`.
std::vector<float> RunAttention(Backend& backend, KvCacheDType dtype, const AttentionCase& c,
                                const CaseData& d) {
  PagedPool pool = MakePool(dtype, d.num_blocks, c.block_size, c.lora, c.rope);
  absl::Status written = backend.KvCacheWrite({.latent = d.latent.data(),
                                               .k_pe = d.k_pe.data(),
                                               .slot_mapping = d.slots.data(),
                                               .rows = static_cast<int64_t>(d.slots.size()),
                                               .cache = pool.cache});
  EXPECT_TRUE(written.ok()) << written;
  std::vector<float> out(d.cu.back() * d.out_stride, 0.0f);
  absl::Status s = backend.MlaDecodeAttention({.q = d.q.data(),
                                               .q_token_stride = d.q_stride,
                                               .q_head_stride = c.lora + c.rope,
                                               .cache = pool.cache,
                                               .block_tables = d.tables.data(),
                                               .block_table_stride = d.max_blocks,
                                               .kv_lens = c.kv_lens.data(),
                                               .cu_seqlens_q = d.cu.data(),
                                               .num_seqs = static_cast<int64_t>(c.kv_lens.size()),
                                               .heads = c.heads,
                                               .softmax_scale = 0.25f,
                                               .out = out.data(),
                                               .out_token_stride = d.out_stride,
                                               .out_head_stride = c.lora});
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::vector<std::unique_ptr<Backend>> CpuBackends() {
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(MakeCpuReferenceBackend());
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (!CpuIsaSupported(isa)) continue;
    auto made = MakeCpuOptimizedBackend(isa);
    if (made.ok()) backends.push_back(*std::move(made));
  }
  return backends;
}

void CheckAgainstFloat32(const AttentionCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const CaseData d = MakeCase(c, rng);
  auto reference = MakeCpuReferenceBackend();
  const std::vector<float> want = RunAttention(*reference, KvCacheDType::kFloat32, c, d);
  for (auto [dtype, bound] :
       {std::pair{KvCacheDType::kBF16, 1e-2}, std::pair{KvCacheDType::kFp8E4M3, 1e-1}}) {
    const std::vector<float> ref = RunAttention(*reference, dtype, c, d);
    const double error = MaxRelative(ref, want);
    EXPECT_LT(error, bound) << KvCacheDTypeName(dtype);
    std::printf("%s: max relative error against float32 %.3g (bound %.0e)\n",
                KvCacheDTypeName(dtype), error, bound);
    EXPECT_GT(error, 0.0) << KvCacheDTypeName(dtype) << ": the cache was not rounded";
    for (const std::unique_ptr<Backend>& backend : CpuBackends()) {
      const std::vector<float> got = RunAttention(*backend, dtype, c, d);
      EXPECT_LT(MaxRelative(got, ref), 1e-5) << backend->name() << " " << KvCacheDTypeName(dtype);
      EXPECT_LT(MaxRelative(got, want), bound) << backend->name() << " " << KvCacheDTypeName(dtype);
    }
  }
}

TEST(KvDtypeAttentionTest, DecodeRowsOddSizesSmallBlocks) {
  CheckAgainstFloat32({.heads = 7,
                       .lora = 37,
                       .rope = 9,
                       .block_size = 5,
                       .kv_lens = {1, 13, 40, 6},
                       .q_lens = {1, 1, 1, 1}},
                      3);
}

TEST(KvDtypeAttentionTest, PrefillChunksOverCachedContextSeveralFp8Groups) {
  // lora 300: three fp8 groups, the last partial; chunks of 3 and 17 queries and a whole
  // 45-token prefill read through the cache; 18 heads: more than one decoded head group.
  CheckAgainstFloat32({.heads = 18,
                       .lora = 300,
                       .rope = 16,
                       .block_size = 16,
                       .kv_lens = {45, 20, 70, 1},
                       .q_lens = {45, 3, 17, 1}},
                      4);
}

TEST(KvDtypeAttentionTest, DeepseekV3RowWidthDefaultBlockSize) {
  CheckAgainstFloat32({.heads = 5,
                       .lora = 512,
                       .rope = 64,
                       .block_size = 64,
                       .kv_lens = {63, 64, 130},
                       .q_lens = {1, 2, 1}},
                      5);
}

TEST(KvDtypeAttentionTest, CacheWriteSkipsPaddingAndRejectsSlotsPastTheEnd) {
  for (KvCacheDType dtype : {KvCacheDType::kBF16, KvCacheDType::kFp8E4M3}) {
    for (const std::unique_ptr<Backend>& backend : CpuBackends()) {
      PagedPool pool = MakePool(dtype, 3, 2, 6, 4);
      // 3.5 makes the fp8 scale 3.5 / 448 = 2^-7: the stored values are exact.
      const std::vector<float> latent(2 * 6, 3.5f), k_pe(2 * 4, -2.0f);
      const std::vector<int64_t> slots = {-1, 3};
      ASSERT_TRUE(backend
                      ->KvCacheWrite({.latent = latent.data(),
                                      .k_pe = k_pe.data(),
                                      .slot_mapping = slots.data(),
                                      .rows = 2,
                                      .cache = pool.cache})
                      .ok());
      const int64_t row_words = pool.cache.row_words();
      std::vector<float> row(10);
      for (int64_t slot = 0; slot < 6; ++slot) {
        const float* stored =
            pool.cache.data + (slot / 2) * pool.cache.block_stride + (slot % 2) * row_words;
        DecodeKvCacheRow(dtype, 6, 4, stored, row.data());
        for (int64_t i = 0; i < 10; ++i) {
          EXPECT_EQ(row[i], slot == 3 ? (i < 6 ? 3.5f : -2.0f) : 0.0f) << slot << " " << i;
        }
      }
      const std::vector<int64_t> past = {6, 0};
      absl::Status s = backend->KvCacheWrite({.latent = latent.data(),
                                              .k_pe = k_pe.data(),
                                              .slot_mapping = past.data(),
                                              .rows = 2,
                                              .cache = pool.cache});
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << backend->name();
    }
  }
}

TEST(KvDtypeAttentionTest, BlockStrideIsCheckedInWordsOfTheFormat) {
  // A bf16 row of 6 + 4 values is 5 words: a stride of 2 rows * 5 words fits, 9 does not.
  PagedPool pool = MakePool(KvCacheDType::kBF16, 3, 2, 6, 4);
  pool.cache.block_stride = 9;
  const std::vector<float> latent(6, 1.0f), k_pe(4, 1.0f);
  const int64_t slot = 0;
  for (const std::unique_ptr<Backend>& backend : CpuBackends()) {
    EXPECT_EQ(backend
                  ->KvCacheWrite({.latent = latent.data(),
                                  .k_pe = k_pe.data(),
                                  .slot_mapping = &slot,
                                  .rows = 1,
                                  .cache = pool.cache})
                  .code(),
              absl::StatusCode::kInvalidArgument)
        << backend->name();
  }
}

TEST(KvDtypeAttentionTest, CheckedMemoryBackendSizesTheCacheByTheFormat) {
  // The checked-memory backend accepts a bf16 cache allocated at its real size (half the bytes
  // of float32) and refuses one a word short.
  auto backend = MakeCheckedMemoryBackend();
  const int64_t lora = 6, rope = 4, block_size = 2, blocks = 3;
  const int64_t words = blocks * block_size * KvCacheRowBytes(KvCacheDType::kBF16, lora, rope) / 4;
  absl::StatusOr<void*> mem = backend->Allocate(words * 4);
  ASSERT_TRUE(mem.ok());
  std::vector<float> latent(lora, 0.5f), k_pe(rope, 0.25f);
  float* dev_latent = static_cast<float*>(*backend->Allocate(sizeof(float) * lora));
  float* dev_k_pe = static_cast<float*>(*backend->Allocate(sizeof(float) * rope));
  int64_t* dev_slot = static_cast<int64_t*>(*backend->Allocate(sizeof(int64_t)));
  ASSERT_TRUE(backend->CopyToBackend(dev_latent, latent.data(), sizeof(float) * lora).ok());
  ASSERT_TRUE(backend->CopyToBackend(dev_k_pe, k_pe.data(), sizeof(float) * rope).ok());
  const int64_t slot = 5;
  ASSERT_TRUE(backend->CopyToBackend(dev_slot, &slot, sizeof slot).ok());
  PagedLatentCache cache{.data = static_cast<float*>(*mem),
                         .num_blocks = blocks,
                         .block_size = block_size,
                         .block_stride = block_size * 5,
                         .kv_lora_rank = lora,
                         .rope_dim = rope,
                         .dtype = KvCacheDType::kBF16};
  KvCacheWriteParams p{
      .latent = dev_latent, .k_pe = dev_k_pe, .slot_mapping = dev_slot, .rows = 1, .cache = cache};
  EXPECT_TRUE(backend->KvCacheWrite(p).ok());
  p.cache.data += 1;  // the last row now ends one word past the allocation
  EXPECT_EQ(backend->KvCacheWrite(p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace r2

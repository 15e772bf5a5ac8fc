// The bf16 and fp8 KV cache formats (kernels/kv_cache_format.h) on the CUDA backend, against the
// CPU: KvCacheWrite must store exactly the bytes of the row codec (EncodeKvCacheRow), and
// MlaDecodeAttention over a stored cache must match the CPU reference backend reading the same
// bytes. Through the Backend interface only: builds without CUDA, skips without a device.
//
// Decode bounds (max |cuda - ref| / max |ref| over the output, values N(0, 1)):
//   1e-4  rows outside V3's shape (the generic core decodes each row to float32 exactly and
//         accumulates in float32, as the reference does)
//   2e-2  V3's rows (512 + 64) in bf16 on the tensor-core core: the query and the softmax
//         weights are rounded to bf16 (2^-9 relative each), products and sums in float32
//   3e-2  the same in fp8: each value * scale is also rounded to bf16 once per tile
// Measured in a host emulation of the tensor-core core (512 threads, mma.sync and ldmatrix by
// their PTX fragment layouts) against float64, 32 heads, contexts 1 to 300: bf16 up to 4.7e-3,
// fp8 up to 9.6e-3.
// The outputs start poisoned with NaN: a NaN where a value is due, or a write anywhere else, fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/kv_cache_format.h"
#include "tests/unit/cuda/cuda_test_util.h"

namespace r2 {
namespace {

using cudatest::CudaTest;
using cudatest::DeviceBuffer;

constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();
constexpr double kExactCoreBound = 1e-4;
constexpr double kTensorCoreBf16Bound = 2e-2, kTensorCoreFp8Bound = 3e-2;

struct CacheDims {
  int64_t heads, lora, rope;
  int64_t block_size = 64;
  int64_t block_pad = 0;  // words between blocks beyond block_size rows
};

const CacheDims kV3{128, 512, 64};
const CacheDims kTinyPreset{4, 64, 16};     // tiny, tiny-noqlora, tiny-fp8
const CacheDims kSmallPreset{16, 256, 32};  // small
const CacheDims kOdd{3, 37, 9, 16, 5};      // odd widths, a partial fp8 group, padded blocks

bool OnTensorCores(const CacheDims& d) {
  return d.lora == 512 && d.rope == 64 && d.block_pad % 4 == 0;
}

double DecodeBound(const CacheDims& d, KvCacheDType dtype) {
  if (!OnTensorCores(d)) return kExactCoreBound;
  return dtype == KvCacheDType::kFp8E4M3 ? kTensorCoreFp8Bound : kTensorCoreBf16Bound;
}

std::string DimsString(const CacheDims& d, KvCacheDType dtype) {
  return absl::StrCat(KvCacheDTypeName(dtype), " heads ", d.heads, " lora ", d.lora, " rope ",
                      d.rope, " block ", d.block_size, " pad ", d.block_pad);
}

// Latent values as after the model's RMSNorm, with an outlier in some fp8 groups and an all-zero
// group in some rows (a group's scale then is 1).
std::vector<float> RowValues(std::mt19937& rng, int64_t lora, int64_t rope) {
  std::vector<float> v = cudatest::RandomFloats(rng, lora + rope);
  std::uniform_int_distribution<int> pick(0, 15);
  if (pick(rng) == 0) v[pick(rng) % lora] = 40.0f;
  if (pick(rng) == 0 && lora > 128)
    std::fill(v.begin() + 128, v.begin() + std::min<int64_t>(lora, 256), 0.0f);
  return v;
}

// A paged pool of encoded rows: every row of every block holds a random encoded row.
struct EncodedPool {
  std::vector<uint32_t> words;
  PagedLatentCache cache;  // data unset
  std::vector<int32_t> tables;
  int64_t table_stride = 0;
};

EncodedPool MakePool(const CacheDims& d, KvCacheDType dtype, const std::vector<int>& kv_lens,
                     std::mt19937& rng) {
  EncodedPool pool;
  const int64_t row_bytes = KvCacheRowBytes(dtype, d.lora, d.rope), row_words = row_bytes / 4;
  int64_t max_blocks = 1, total = 0;
  for (int kv : kv_lens) {
    const int64_t n = (kv + d.block_size - 1) / d.block_size;
    max_blocks = std::max(max_blocks, n);
    total += n;
  }
  const int64_t num_blocks = total + 3, block_stride = d.block_size * row_words + d.block_pad;
  pool.words.assign(num_blocks * block_stride, 0x7fc00000u);  // NaN in the padding
  for (int64_t b = 0; b < num_blocks; ++b) {
    for (int64_t r = 0; r < d.block_size; ++r) {
      const std::vector<float> v = RowValues(rng, d.lora, d.rope);
      EncodeKvCacheRow(dtype, d.lora, d.rope, v.data(), v.data() + d.lora,
                       pool.words.data() + b * block_stride + r * row_words);
    }
  }
  pool.cache = PagedLatentCache{.num_blocks = num_blocks,
                                .block_size = d.block_size,
                                .block_stride = block_stride,
                                .kv_lora_rank = d.lora,
                                .rope_dim = d.rope,
                                .dtype = dtype};
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  pool.table_stride = max_blocks + 1;
  pool.tables.assign(kv_lens.size() * pool.table_stride, -1);
  int64_t next = 0;
  for (size_t b = 0; b < kv_lens.size(); ++b) {
    const int64_t n = (kv_lens[b] + d.block_size - 1) / d.block_size;
    for (int64_t i = 0; i < n; ++i) pool.tables[b * pool.table_stride + i] = perm[next++];
  }
  return pool;
}

class CudaKvDtypeTest : public CudaTest {
 protected:
  // (q_len, kv_len) per sequence: CUDA decode over the encoded pool against the reference.
  void CheckDecode(const CacheDims& d, KvCacheDType dtype,
                   const std::vector<std::pair<int, int>>& lens, uint32_t seed) {
    std::string lens_text;
    for (auto [q, k] : lens) absl::StrAppend(&lens_text, "(", q, ",", k, ")");
    SCOPED_TRACE(DimsString(d, dtype) + " lens " + lens_text);
    std::mt19937 rng(seed);
    std::vector<int> kv_lens;
    std::vector<int32_t> cu_q = {0}, kv32;
    for (auto [q, k] : lens) {
      kv_lens.push_back(k);
      kv32.push_back(k);
      cu_q.push_back(cu_q.back() + q);
    }
    EncodedPool pool = MakePool(d, dtype, kv_lens, rng);
    const int64_t rows = cu_q.back(), width = d.lora + d.rope;
    const int64_t q_ts = d.heads * width + 4, out_ts = d.heads * d.lora + 3;
    const std::vector<float> q = cudatest::RandomFloats(rng, rows * q_ts);
    MlaDecodeParams p{.q_token_stride = q_ts,
                      .q_head_stride = width,
                      .cache = pool.cache,
                      .block_table_stride = pool.table_stride,
                      .num_seqs = static_cast<int64_t>(lens.size()),
                      .heads = d.heads,
                      .softmax_scale = 0.1352338f,
                      .out_token_stride = out_ts,
                      .out_head_stride = d.lora};

    std::vector<float> want(rows * out_ts, kPoison);
    MlaDecodeParams rp = p;
    rp.q = q.data();
    rp.cache.data = reinterpret_cast<float*>(pool.words.data());
    rp.block_tables = pool.tables.data();
    rp.kv_lens = kv32.data();
    rp.cu_seqlens_q = cu_q.data();
    rp.out = want.data();
    const absl::Status rs = cpu().MlaDecodeAttention(rp);
    ASSERT_TRUE(rs.ok()) << rs;

    DeviceBuffer dq = Upload(q), dpool = Upload(pool.words), dtables = Upload(pool.tables),
                 dkv = Upload(kv32), dcu = Upload(cu_q), dout = Poisoned(rows * out_ts);
    MlaDecodeParams cp = p;
    cp.q = dq.f32();
    cp.cache.data = dpool.f32();
    cp.block_tables = dtables.i32();
    cp.kv_lens = dkv.i32();
    cp.cu_seqlens_q = dcu.i32();
    cp.out = dout.f32();
    ASSERT_FALSE(HasFailure());
    const absl::Status s = gpu().MlaDecodeAttention(cp);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(gpu().Synchronize().ok());
    const std::vector<float> got = dout.Floats(want.size());

    double diff = 0, ref = 0;
    int64_t bad = 0, overwrites = 0;
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t i = 0; i < out_ts; ++i) {
        const int64_t k = t * out_ts + i;
        if (i >= d.heads * d.lora) {
          overwrites += !std::isnan(got[k]);
          continue;
        }
        if (!std::isfinite(got[k])) {
          ++bad;
          continue;
        }
        diff = std::max(diff, std::fabs(double(got[k]) - want[k]));
        ref = std::max(ref, std::fabs(double(want[k])));
      }
    }
    const double rel = ref == 0 ? diff : diff / ref;
    const double bound = DecodeBound(d, dtype);
    // One line per case for tests/gpu/device_check.sh's summary (the worst per format and core).
    std::printf("KvDecode %s %s rel %.3g bound %.0e (%s lens %s)\n", KvCacheDTypeName(dtype),
                OnTensorCores(d) ? "tensor-core" : "generic", rel, bound,
                DimsString(d, dtype).c_str(), lens_text.c_str());
    EXPECT_EQ(bad, 0) << "NaN or infinity in the output";
    EXPECT_EQ(overwrites, 0) << "wrote outside the output columns";
    EXPECT_LE(rel, bound);
    EXPECT_GT(ref, 0.0) << "an all-zero reference proves nothing";
  }
};

const KvCacheDType kDtypes[] = {KvCacheDType::kBF16, KvCacheDType::kFp8E4M3};

TEST_F(CudaKvDtypeTest, BackendReadsEveryFormat) {
  EXPECT_TRUE(gpu().SupportsKvCacheDType(KvCacheDType::kFloat32));
  EXPECT_TRUE(gpu().SupportsKvCacheDType(KvCacheDType::kBF16));
  EXPECT_TRUE(gpu().SupportsKvCacheDType(KvCacheDType::kFp8E4M3));
}

// KvCacheWrite stores exactly EncodeKvCacheRow's bytes (padding bytes included) at shuffled slots,
// skips padding rows (-1) and slots past the cache, and leaves every other byte as it was. Rows
// include rounding ties, values at the fp8 subnormal edge, saturation, an all-zero group, NaN
// and infinity.
TEST_F(CudaKvDtypeTest, KvCacheWriteStoresTheCodecsBytes) {
  for (KvCacheDType dtype : kDtypes) {
    for (const CacheDims& d : {kV3, kTinyPreset, kSmallPreset, kOdd, CacheDims{2, 300, 9}}) {
      SCOPED_TRACE(DimsString(d, dtype));
      std::mt19937 rng(static_cast<uint32_t>(91 + d.lora + 7 * static_cast<int>(dtype)));
      const int64_t width = d.lora + d.rope, stride = width + 3, rows = 150;
      const int64_t row_words = KvCacheRowBytes(dtype, d.lora, d.rope) / 4;
      const int64_t num_blocks = 5, block_stride = d.block_size * row_words + d.block_pad;
      const int64_t num_slots = num_blocks * d.block_size;
      std::vector<float> src = cudatest::RandomFloats(rng, rows * stride, 2.0f);
      // Row 1: group 0's largest is 448 (scale 1), so its other values are stored as they are:
      // midpoints between neighbouring e4m3 values (ties to the even code), the subnormal edge,
      // tiny values, and bf16 ties.
      float* special = src.data() + stride;
      special[0] = 448.0f;
      const float ties[] = {1.0625f,    1.1875f,       -1.0625f,          0.015625f * 1.0625f,
                            7.5f / 512, 0.5f / 512,    1.5f / 512,        1e-30f,
                            -0.0f,      240.0f + 8.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256};
      for (size_t i = 0; i < sizeof(ties) / sizeof(ties[0]) && 1 + i < static_cast<size_t>(d.lora);
           ++i) {
        special[1 + i] = ties[i];
      }
      // Row 2: a NaN in the latent and the rope key; row 4: an infinity; row 5 all zero.
      src[2 * stride + 3] = std::numeric_limits<float>::quiet_NaN();
      src[2 * stride + d.lora + 1] = std::numeric_limits<float>::quiet_NaN();
      src[4 * stride + 1] = std::numeric_limits<float>::infinity();
      std::fill(src.begin() + 5 * stride, src.begin() + 6 * stride, 0.0f);

      std::vector<int64_t> slots(num_slots);
      std::iota(slots.begin(), slots.end(), 0);
      std::shuffle(slots.begin(), slots.end(), rng);
      slots.resize(rows);
      for (int64_t i = 7; i < rows; i += 7) slots[i] = -1;
      slots[3] = num_slots + 5;  // past the cache: skipped

      std::vector<uint32_t> pool(num_blocks * block_stride);
      for (uint32_t& w : pool) w = static_cast<uint32_t>(rng());
      std::vector<uint32_t> want = pool;
      for (int64_t i = 0; i < rows; ++i) {
        if (slots[i] < 0 || slots[i] >= num_slots) continue;
        uint32_t* row = want.data() + (slots[i] / d.block_size) * block_stride +
                        (slots[i] % d.block_size) * row_words;
        EncodeKvCacheRow(dtype, d.lora, d.rope, src.data() + i * stride,
                         src.data() + i * stride + d.lora, row);
      }

      DeviceBuffer dsrc = Upload(src), dslots = Upload(slots), dpool = Upload(pool);
      ASSERT_FALSE(HasFailure());
      const absl::Status s =
          gpu().KvCacheWrite({.latent = dsrc.f32(),
                              .latent_stride = stride,
                              .k_pe = dsrc.f32() + d.lora,
                              .k_pe_stride = stride,
                              .slot_mapping = static_cast<const int64_t*>(dslots.get()),
                              .rows = rows,
                              .cache = {.data = dpool.f32(),
                                        .num_blocks = num_blocks,
                                        .block_size = d.block_size,
                                        .block_stride = block_stride,
                                        .kv_lora_rank = d.lora,
                                        .rope_dim = d.rope,
                                        .dtype = dtype}});
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_TRUE(gpu().Synchronize().ok());
      const std::vector<uint32_t> got = dpool.Read<uint32_t>(pool.size());
      int64_t first = -1, differing = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        if (got[i] != want[i]) {
          if (first < 0) first = static_cast<int64_t>(i);
          ++differing;
        }
      }
      EXPECT_EQ(differing, 0) << "first differing word " << first << " (block "
                              << (first >= 0 ? first / block_stride : 0) << ", word "
                              << (first >= 0 ? first % block_stride : 0) << "): got 0x" << std::hex
                              << (first >= 0 ? got[first] : 0) << ", codec 0x"
                              << (first >= 0 ? want[first] : 0);
    }
  }
}

TEST_F(CudaKvDtypeTest, DecodeDeepSeekV3DimsOnTensorCores) {
  for (KvCacheDType dtype : kDtypes) {
    CheckDecode(kV3, dtype, {{1, 1}, {2, 63}, {1, 64}, {1, 65}, {1, 701}}, 11);
    CheckDecode(kV3, dtype, {{1, 4097}}, 12);
    CheckDecode(kV3, dtype, {{2, 4100}, {1, 1}, {3, 301}}, 13);  // q_len 3: whole-row blocks
    CheckDecode(CacheDims{16, 512, 64}, dtype, {{1, 333}, {2, 4099}}, 14);    // bench-2b's heads
    CheckDecode(CacheDims{4, 512, 64, 16, 8}, dtype, {{1, 97}, {1, 5}}, 15);  // partial group
  }
}

TEST_F(CudaKvDtypeTest, DecodeChunkOverCachedContext) {
  for (KvCacheDType dtype : kDtypes) {
    CheckDecode(kV3, dtype, {{33, 131}, {4, 1001}}, 21);
    CheckDecode(kTinyPreset, dtype, {{70, 701}, {1, 5}, {5, 4099}}, 22);
  }
}

TEST_F(CudaKvDtypeTest, DecodeTinyPresetAndOddDims) {
  for (KvCacheDType dtype : kDtypes) {
    const std::vector<std::pair<int, int>> lens = {{1, 1}, {2, 37}, {1, 64}, {1, 129}, {2, 777}};
    CheckDecode(kTinyPreset, dtype, lens, 31);
    CheckDecode(kSmallPreset, dtype, lens, 32);
    CheckDecode(kOdd, dtype, lens, 33);
    CheckDecode(CacheDims{2, 300, 9, 64, 3}, dtype, {{1, 199}, {1, 3}}, 34);
    // V3's widths with rows that are not 16-byte aligned take the generic core.
    CheckDecode(CacheDims{8, 512, 64, 64, 1}, dtype, {{1, 130}, {2, 65}}, 35);
  }
}

TEST_F(CudaKvDtypeTest, DecodeManySequences) {
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> len(1, 900);
  std::vector<std::pair<int, int>> lens;
  for (int i = 0; i < 40; ++i) lens.push_back({1, len(rng)});
  for (KvCacheDType dtype : kDtypes) {
    CheckDecode(kV3, dtype, lens, 42);
    CheckDecode(kTinyPreset, dtype, lens, 43);
  }
}

// The model's order on a 16-bit cache: KvCacheWrite the step's row, then decode over the cache
// including it; the reference decodes the same bytes written by the codec.
TEST_F(CudaKvDtypeTest, WriteThenDecodeReadsWhatWasWritten) {
  for (KvCacheDType dtype : kDtypes) {
    for (const CacheDims& d : {kV3, kTinyPreset}) {
      SCOPED_TRACE(DimsString(d, dtype));
      std::mt19937 rng(51);
      EncodedPool pool = MakePool(d, dtype, {129}, rng);
      const int64_t width = d.lora + d.rope;
      const std::vector<float> kv = RowValues(rng, d.lora, d.rope);  // position 128
      const int64_t slot = int64_t{pool.tables[2]} * d.block_size;
      std::vector<uint32_t> host_pool = pool.words;
      EncodeKvCacheRow(dtype, d.lora, d.rope, kv.data(), kv.data() + d.lora,
                       host_pool.data() + pool.tables[2] * pool.cache.block_stride);
      const std::vector<float> q = cudatest::RandomFloats(rng, d.heads * width);
      std::vector<int32_t> kv_lens = {129}, cu = {0, 1};
      std::vector<float> want(d.heads * d.lora);
      MlaDecodeParams rp{.q = q.data(),
                         .q_token_stride = d.heads * width,
                         .q_head_stride = width,
                         .cache = pool.cache,
                         .block_tables = pool.tables.data(),
                         .block_table_stride = pool.table_stride,
                         .kv_lens = kv_lens.data(),
                         .cu_seqlens_q = cu.data(),
                         .num_seqs = 1,
                         .heads = d.heads,
                         .softmax_scale = 0.1352338f,
                         .out = want.data(),
                         .out_token_stride = d.heads * d.lora,
                         .out_head_stride = d.lora};
      rp.cache.data = reinterpret_cast<float*>(host_pool.data());
      ASSERT_TRUE(cpu().MlaDecodeAttention(rp).ok());

      DeviceBuffer dpool = Upload(pool.words), dkv = Upload(kv),
                   dslot = Upload(std::vector<int64_t>{slot}), dq = Upload(q),
                   dtables = Upload(pool.tables), dlens = Upload(kv_lens), dcu = Upload(cu),
                   dout = Poisoned(want.size());
      PagedLatentCache cache = pool.cache;
      cache.data = dpool.f32();
      ASSERT_FALSE(HasFailure());
      ASSERT_TRUE(gpu()
                      .KvCacheWrite({.latent = dkv.f32(),
                                     .k_pe = dkv.f32() + d.lora,
                                     .slot_mapping = static_cast<const int64_t*>(dslot.get()),
                                     .rows = 1,
                                     .cache = cache})
                      .ok());
      const std::vector<uint32_t> stored = dpool.Read<uint32_t>(pool.words.size());
      EXPECT_TRUE(std::equal(stored.begin(), stored.end(), host_pool.begin()))
          << "the written row differs from the codec's";
      MlaDecodeParams cp = rp;
      cp.q = dq.f32();
      cp.cache = cache;
      cp.block_tables = dtables.i32();
      cp.kv_lens = dlens.i32();
      cp.cu_seqlens_q = dcu.i32();
      cp.out = dout.f32();
      ASSERT_TRUE(gpu().MlaDecodeAttention(cp).ok());
      ASSERT_TRUE(gpu().Synchronize().ok());
      const std::vector<float> got = dout.Floats(want.size());
      double diff = 0, ref = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << i;
        diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
        ref = std::max(ref, std::fabs(double(want[i])));
      }
      EXPECT_LE(diff / ref, DecodeBound(d, dtype));
    }
  }
}

TEST_F(CudaKvDtypeTest, BadCacheArgumentsAreRefused) {
  DeviceBuffer pool = Alloc(4 * 64 * 164);
  const int64_t slot = 0;
  DeviceBuffer dslot = Upload(std::vector<int64_t>{slot}), src = Upload(std::vector<float>(576));
  PagedLatentCache cache{.data = pool.f32(),
                         .num_blocks = 1,
                         .block_size = 64,
                         .block_stride = 64 * 164 - 1,  // one word short of a block of fp8 rows
                         .kv_lora_rank = 512,
                         .rope_dim = 64,
                         .dtype = KvCacheDType::kFp8E4M3};
  const absl::Status s =
      gpu().KvCacheWrite({.latent = src.f32(),
                          .k_pe = src.f32() + 512,
                          .slot_mapping = static_cast<const int64_t*>(dslot.get()),
                          .rows = 1,
                          .cache = cache});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("block_stride"), std::string::npos) << s;
  MlaDecodeParams p{.cache = cache, .num_seqs = 1, .heads = 4};
  EXPECT_EQ(gpu().MlaDecodeAttention(p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace r2

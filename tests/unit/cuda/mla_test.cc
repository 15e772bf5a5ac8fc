// CUDA MLA kernels (MlaPrefillAttention, KvCacheWrite, MlaDecodeAttention) against the CPU
// reference backend on fresh random inputs, through the Backend interface only, so this file
// builds without CUDA and skips when MakeBackend("cuda") is Unavailable.
//
// Error bound: every op must match within max |cuda - ref| / max |ref| <= 1e-4 (KvCacheWrite is a
// copy: exact). Both backends accumulate in float32; the V3-shaped decode runs on tensor cores
// with each float32 operand split into two bfloat16 parts (about 2e-5 measured in simulation). The
// CUDA outputs start poisoned with NaN; a NaN or infinity anywhere a value is due fails, and
// columns and rows the op must not write have to still hold the poison afterwards.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace r2 {
namespace {

constexpr double kBound = 1e-4;
constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

std::vector<float> Random(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Device allocations of one test, freed at the end.
class DeviceArrays {
 public:
  explicit DeviceArrays(Backend& backend) : backend_(backend) {}
  ~DeviceArrays() {
    for (void* p : ptrs_) backend_.Free(p);
  }
  template <typename T>
  T* Upload(const std::vector<T>& host) {
    absl::StatusOr<void*> mem = backend_.Allocate(std::max<size_t>(1, host.size()) * sizeof(T));
    if (!mem.ok()) {
      ADD_FAILURE() << mem.status();
      return nullptr;
    }
    ptrs_.push_back(*mem);
    const absl::Status s = backend_.CopyToBackend(*mem, host.data(), host.size() * sizeof(T));
    if (!s.ok()) ADD_FAILURE() << s;
    return static_cast<T*>(*mem);
  }
  template <typename T>
  std::vector<T> Download(const T* dev, size_t n) {
    std::vector<T> host(n);
    const absl::Status s = backend_.CopyToHost(host.data(), dev, n * sizeof(T));
    if (!s.ok()) ADD_FAILURE() << s;
    return host;
  }

 private:
  Backend& backend_;
  std::vector<void*> ptrs_;
};

// The CUDA backend, or null when this build or machine has none (the test then skips).
std::unique_ptr<Backend> CudaOrNull(std::string* why) {
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend("cuda");
  if (!b.ok()) {
    *why = b.status().ToString();
    return nullptr;
  }
  return std::move(*b);
}

#define R2_CUDA_OR_SKIP(var)                        \
  std::string _why;                                 \
  std::unique_ptr<Backend> var = CudaOrNull(&_why); \
  if (var == nullptr) GTEST_SKIP() << "no CUDA backend: " << _why

// Compares the `due` elements (mask) of got and want; the others must still be poison.
struct Comparison {
  double rel = 0.0;
  int64_t bad_values = 0;  // non-finite where a value is due
  int64_t overwrites = 0;  // written where nothing is due
};

Comparison Compare(const std::vector<float>& got, const std::vector<float>& want,
                   const std::vector<bool>& due) {
  Comparison c;
  double diff = 0.0, ref = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!due[i]) {
      if (!std::isnan(got[i])) ++c.overwrites;
      continue;
    }
    if (!std::isfinite(got[i])) {
      ++c.bad_values;
      continue;
    }
    diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
    ref = std::max(ref, std::fabs(double(want[i])));
  }
  c.rel = ref == 0.0 ? diff : diff / ref;
  return c;
}

std::string LensString(const std::vector<std::pair<int, int>>& lens) {
  std::string s;
  for (auto [q, k] : lens) absl::StrAppend(&s, "(", q, ",", k, ")");
  return s;
}

// ---- MlaPrefillAttention -----------------------------------------------------------------------

struct PrefillDims {
  int64_t heads, nope, rope, v;
};

// Runs one prefill problem (q_len, k_len per sequence) on both backends with strided layouts like
// the model's: q rows padded, k_nope and v interleaved per head, k_pe inside a wider row, out rows
// padded (the padding must stay poisoned).
// aligned: every k / v row starts 16-byte aligned (the model's layout; V3 dims then run on the
// tensor-core kernel), else k_pe rows are misaligned on purpose (the generic kernel).
void CheckPrefill(Backend& cuda, const PrefillDims& d, const std::vector<std::pair<int, int>>& lens,
                  uint32_t seed, bool aligned = false) {
  SCOPED_TRACE(absl::StrCat("heads ", d.heads, " nope ", d.nope, " rope ", d.rope, " v ", d.v,
                            " lens ", LensString(lens)));
  std::mt19937 rng(seed);
  std::vector<int32_t> cu_q = {0}, cu_k = {0};
  for (auto [q, k] : lens) {
    cu_q.push_back(cu_q.back() + q);
    cu_k.push_back(cu_k.back() + k);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back(), dq = d.nope + d.rope, up = d.nope + d.v;
  const int64_t q_ts = d.heads * dq + 3, kv_ts = d.heads * up, pe_ts = d.rope + (aligned ? 4 : 5);
  const int64_t pe_off = aligned ? 4 : 2;
  const int64_t out_ts = d.heads * d.v + 7;
  const std::vector<float> q = Random(rng, tq * q_ts);
  const std::vector<float> kv = Random(rng, tk * kv_ts);
  const std::vector<float> pe = Random(rng, tk * pe_ts + pe_off);
  MlaPrefillParams p{.q_token_stride = q_ts,
                     .q_head_stride = dq,
                     .k_nope_token_stride = kv_ts,
                     .k_nope_head_stride = up,
                     .k_pe_token_stride = pe_ts,
                     .v_token_stride = kv_ts,
                     .v_head_stride = up,
                     .out_token_stride = out_ts,
                     .out_head_stride = d.v,
                     .num_seqs = static_cast<int64_t>(lens.size()),
                     .heads = d.heads,
                     .nope_dim = d.nope,
                     .rope_dim = d.rope,
                     .v_dim = d.v,
                     .softmax_scale = 1.0f / std::sqrt(float(dq))};

  std::vector<float> want(tq * out_ts, kPoison);
  MlaPrefillParams rp = p;
  rp.q = q.data();
  rp.k_nope = kv.data();
  rp.k_pe = pe.data() + pe_off;
  rp.v = kv.data() + d.nope;
  rp.out = want.data();
  rp.cu_seqlens_q = cu_q.data();
  rp.cu_seqlens_k = cu_k.data();
  ASSERT_TRUE(MakeCpuReferenceBackend()->MlaPrefillAttention(rp).ok());

  DeviceArrays dev(cuda);
  MlaPrefillParams cp = p;
  cp.q = dev.Upload(q);
  cp.k_nope = dev.Upload(kv);
  cp.k_pe = dev.Upload(pe) + pe_off;
  cp.v = cp.k_nope + d.nope;
  float* out = dev.Upload(std::vector<float>(tq * out_ts, kPoison));
  cp.out = out;
  cp.cu_seqlens_q = dev.Upload(cu_q);
  cp.cu_seqlens_k = dev.Upload(cu_k);
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_TRUE(cuda.MlaPrefillAttention(cp).ok());
  ASSERT_TRUE(cuda.Synchronize().ok());
  const std::vector<float> got = dev.Download(out, want.size());
  std::vector<bool> due(got.size(), false);
  for (int64_t t = 0; t < tq; ++t) {
    for (int64_t i = 0; i < d.heads * d.v; ++i) due[t * out_ts + i] = true;
  }
  const Comparison c = Compare(got, want, due);
  EXPECT_EQ(c.bad_values, 0) << "NaN or infinity in the output";
  EXPECT_EQ(c.overwrites, 0) << "wrote outside the output columns";
  EXPECT_LE(c.rel, kBound);
}

const PrefillDims kTinyPrefill{4, 16, 16, 16};
const PrefillDims kOddPrefill{3, 7, 6, 5};  // widths that are not multiples of 4
const PrefillDims kV3Prefill{128, 128, 64, 128};

TEST(CudaMlaTest, PrefillCausalVariableLengthTinyAndOddDims) {
  R2_CUDA_OR_SKIP(cuda);
  const std::vector<std::pair<int, int>> lens = {{1, 1}, {63, 63}, {64, 64}, {65, 65}, {700, 700}};
  CheckPrefill(*cuda, kTinyPrefill, lens, 1);
  CheckPrefill(*cuda, kOddPrefill, lens, 2);
  CheckPrefill(*cuda, kOddPrefill, {{130, 130}}, 3);
}

TEST(CudaMlaTest, PrefillChunkedQueriesShorterThanKeys) {
  R2_CUDA_OR_SKIP(cuda);
  // Bottom-right aligned: the queries are the last q_len tokens of each sequence.
  const std::vector<std::pair<int, int>> lens = {{1, 64}, {5, 700}, {64, 65}, {65, 4100}, {3, 3}};
  CheckPrefill(*cuda, kTinyPrefill, lens, 4);
  CheckPrefill(*cuda, kOddPrefill, lens, 5);
}

TEST(CudaMlaTest, PrefillDeepSeekV3Dims) {
  R2_CUDA_OR_SKIP(cuda);
  CheckPrefill(*cuda, kV3Prefill, {{1, 1}, {63, 63}, {65, 65}, {200, 200}}, 6);
  CheckPrefill(*cuda, kV3Prefill, {{40, 700}, {17, 4100}}, 7);
}

TEST(CudaMlaTest, PrefillDeepSeekV3DimsAlignedRowsOnTensorCores) {
  R2_CUDA_OR_SKIP(cuda);
  CheckPrefill(*cuda, kV3Prefill, {{1, 1}, {63, 63}, {129, 129}, {300, 300}}, 9, true);
  CheckPrefill(*cuda, kV3Prefill, {{40, 700}, {70, 2000}, {1, 33}}, 10, true);
  CheckPrefill(*cuda, PrefillDims{3, 128, 64, 128}, {{700, 700}, {5, 4100}}, 11, true);
}

TEST(CudaMlaTest, PrefillWideValueHeadsRunInColumnPasses) {
  R2_CUDA_OR_SKIP(cuda);
  CheckPrefill(*cuda, PrefillDims{2, 24, 8, 300}, {{70, 70}, {9, 130}}, 8);
}

TEST(CudaMlaTest, PrefillEmptyBatchAndBadArguments) {
  R2_CUDA_OR_SKIP(cuda);
  EXPECT_TRUE(cuda->MlaPrefillAttention(
                      {.num_seqs = 0, .heads = 4, .nope_dim = 8, .rope_dim = 8, .v_dim = 8})
                  .ok());
  const absl::Status s = cuda->MlaPrefillAttention(
      {.num_seqs = 1, .heads = 4, .nope_dim = 8, .rope_dim = 8, .v_dim = 8});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(cuda->MlaPrefillAttention({.num_seqs = 1, .heads = 0, .v_dim = 8}).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- paged cache: KvCacheWrite and MlaDecodeAttention -------------------------------------------

struct CacheDims {
  int64_t heads, lora, rope;
  int64_t block_size = 64;
  int64_t block_pad = 0;  // floats between blocks beyond block_size rows
};

// A random paged cache with shuffled block tables for the given kv lengths.
struct PagedProblem {
  std::vector<float> pool;
  PagedLatentCache cache;
  std::vector<int32_t> tables;  // [num_seqs][table_stride], unused entries -1
  int64_t table_stride = 0;
};

PagedProblem MakePaged(const CacheDims& d, const std::vector<int>& kv_lens, std::mt19937& rng) {
  PagedProblem pp;
  const int64_t width = d.lora + d.rope;
  int64_t max_blocks = 1, total = 0;
  for (int kv : kv_lens) {
    const int64_t n = (kv + d.block_size - 1) / d.block_size;
    max_blocks = std::max(max_blocks, n);
    total += n;
  }
  const int64_t num_blocks = total + 3;
  const int64_t block_stride = d.block_size * width + d.block_pad;
  pp.pool = Random(rng, num_blocks * block_stride);
  pp.cache = PagedLatentCache{.num_blocks = num_blocks,
                              .block_size = d.block_size,
                              .block_stride = block_stride,
                              .kv_lora_rank = d.lora,
                              .rope_dim = d.rope};
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  pp.table_stride = max_blocks + 1;
  pp.tables.assign(kv_lens.size() * pp.table_stride, -1);
  int64_t next = 0;
  for (size_t b = 0; b < kv_lens.size(); ++b) {
    const int64_t n = (kv_lens[b] + d.block_size - 1) / d.block_size;
    for (int64_t i = 0; i < n; ++i) pp.tables[b * pp.table_stride + i] = perm[next++];
  }
  return pp;
}

// (q_len, kv_len) per sequence.
void CheckDecode(Backend& cuda, const CacheDims& d, const std::vector<std::pair<int, int>>& lens,
                 uint32_t seed) {
  SCOPED_TRACE(absl::StrCat("heads ", d.heads, " lora ", d.lora, " rope ", d.rope, " block ",
                            d.block_size, " seqs ", lens.size(), " lens ",
                            lens.size() <= 8 ? LensString(lens) : "(many)"));
  std::mt19937 rng(seed);
  std::vector<int> kv_lens;
  std::vector<int32_t> cu_q = {0}, kv32;
  for (auto [q, k] : lens) {
    kv_lens.push_back(k);
    kv32.push_back(k);
    cu_q.push_back(cu_q.back() + q);
  }
  PagedProblem pp = MakePaged(d, kv_lens, rng);
  const int64_t rows = cu_q.back(), width = d.lora + d.rope;
  const int64_t q_ts = d.heads * width + 5, out_ts = d.heads * d.lora + 3;
  const std::vector<float> q = Random(rng, rows * q_ts);
  MlaDecodeParams p{.q_token_stride = q_ts,
                    .q_head_stride = width,
                    .cache = pp.cache,
                    .block_table_stride = pp.table_stride,
                    .num_seqs = static_cast<int64_t>(lens.size()),
                    .heads = d.heads,
                    .softmax_scale = 0.1352338f,
                    .out_token_stride = out_ts,
                    .out_head_stride = d.lora};

  std::vector<float> want(rows * out_ts, kPoison);
  MlaDecodeParams rp = p;
  rp.q = q.data();
  rp.cache.data = pp.pool.data();
  rp.block_tables = pp.tables.data();
  rp.kv_lens = kv32.data();
  rp.cu_seqlens_q = cu_q.data();
  rp.out = want.data();
  ASSERT_TRUE(MakeCpuReferenceBackend()->MlaDecodeAttention(rp).ok());

  DeviceArrays dev(cuda);
  MlaDecodeParams cp = p;
  cp.q = dev.Upload(q);
  cp.cache.data = dev.Upload(pp.pool);
  cp.block_tables = dev.Upload(pp.tables);
  cp.kv_lens = dev.Upload(kv32);
  cp.cu_seqlens_q = dev.Upload(cu_q);
  float* out = dev.Upload(std::vector<float>(rows * out_ts, kPoison));
  cp.out = out;
  ASSERT_FALSE(::testing::Test::HasFailure());
  const absl::Status s = cuda.MlaDecodeAttention(cp);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(cuda.Synchronize().ok());
  const std::vector<float> got = dev.Download(out, want.size());
  std::vector<bool> due(got.size(), false);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t i = 0; i < d.heads * d.lora; ++i) due[t * out_ts + i] = true;
  }
  const Comparison c = Compare(got, want, due);
  EXPECT_EQ(c.bad_values, 0) << "NaN or infinity in the output";
  EXPECT_EQ(c.overwrites, 0) << "wrote outside the output columns";
  EXPECT_LE(c.rel, kBound);
}

const CacheDims kTinyCache{4, 32, 16};
const CacheDims kOddCache{3, 20, 6, 16, 5};  // width 26: not a multiple of 4; padded blocks
const CacheDims kV3Cache{128, 512, 64};

TEST(CudaMlaTest, DecodeMixedLengthsTinyDims) {
  R2_CUDA_OR_SKIP(cuda);
  const std::vector<std::pair<int, int>> lens = {{1, 1}, {1, 63}, {2, 64}, {1, 65}, {3, 700}};
  CheckDecode(*cuda, kTinyCache, lens, 11);
  CheckDecode(*cuda, kTinyCache, {{1, 4100}, {2, 4100}}, 12);
  CheckDecode(*cuda, kOddCache, lens, 13);
  CheckDecode(*cuda, CacheDims{40, 64, 16}, lens, 14);  // a partial head group
}

TEST(CudaMlaTest, DecodeDeepSeekV3Dims) {
  R2_CUDA_OR_SKIP(cuda);
  CheckDecode(*cuda, kV3Cache, {{1, 1}, {2, 63}, {1, 64}, {1, 65}, {1, 700}}, 21);
  CheckDecode(*cuda, kV3Cache, {{1, 4100}}, 22);
  CheckDecode(*cuda, kV3Cache, {{2, 4100}, {1, 1}, {3, 300}}, 23);
  // Fewer heads than one 32-head group on the tensor-core kernel.
  CheckDecode(*cuda, CacheDims{20, 512, 64}, {{1, 300}, {2, 4100}}, 25);
  // Blocks one float apart: rows lose 16-byte alignment and take the generic (non-mma) kernel.
  CheckDecode(*cuda, CacheDims{128, 512, 64, 64, 1}, {{1, 700}, {2, 65}}, 24);
}

TEST(CudaMlaTest, DecodeLongQueryChunksOverCachedContext) {
  R2_CUDA_OR_SKIP(cuda);
  // q_len > 2: a prefill chunk through the absorbed form, blocks take whole query rows.
  CheckDecode(*cuda, kTinyCache, {{70, 700}, {1, 5}, {64, 64}, {5, 4100}}, 31);
  CheckDecode(*cuda, kV3Cache, {{33, 130}, {4, 1000}}, 32);
}

TEST(CudaMlaTest, DecodeManySequences) {
  R2_CUDA_OR_SKIP(cuda);
  // Enough sequences that the KV length is not split (outputs written directly).
  std::mt19937 rng(41);
  std::vector<std::pair<int, int>> lens;
  for (int i = 0; i < 400; ++i) {
    const int kv = 1 + static_cast<int>(rng() % 300);
    lens.push_back({1 + static_cast<int>(rng() % std::min(kv, 3)), kv});
  }
  CheckDecode(*cuda, kTinyCache, lens, 42);
  lens.resize(96);
  CheckDecode(*cuda, kV3Cache, lens, 43);
}

TEST(CudaMlaTest, DecodeSkipsBlocksOutsideTheCacheWithoutFaulting) {
  R2_CUDA_OR_SKIP(cuda);
  std::mt19937 rng(51);
  const CacheDims d = kTinyCache;
  PagedProblem pp = MakePaged(d, {200}, rng);
  pp.tables[1] = static_cast<int32_t>(pp.cache.num_blocks + 1000);  // tokens 64..127
  pp.tables[2] = -7;                                                // tokens 128..191
  const int64_t width = d.lora + d.rope;
  const std::vector<float> q = Random(rng, d.heads * width);
  DeviceArrays dev(*cuda);
  MlaDecodeParams cp{.q = dev.Upload(q),
                     .q_token_stride = d.heads * width,
                     .q_head_stride = width,
                     .cache = pp.cache,
                     .block_tables = dev.Upload(pp.tables),
                     .block_table_stride = pp.table_stride,
                     .kv_lens = dev.Upload(std::vector<int32_t>{200}),
                     .cu_seqlens_q = dev.Upload(std::vector<int32_t>{0, 1}),
                     .num_seqs = 1,
                     .heads = d.heads,
                     .softmax_scale = 0.2f,
                     .out_token_stride = d.heads * d.lora,
                     .out_head_stride = d.lora};
  cp.cache.data = dev.Upload(pp.pool);
  float* out = dev.Upload(std::vector<float>(d.heads * d.lora, kPoison));
  cp.out = out;
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_TRUE(cuda->MlaDecodeAttention(cp).ok());
  ASSERT_TRUE(cuda->Synchronize().ok());
  // The result is attention over the tokens in valid blocks (0..63 and 192..199): compare with
  // the reference over a table where the bad blocks' tokens are replaced by a copy that the
  // softmax ignores, i.e. recompute by hand.
  const std::vector<float> got = dev.Download(out, d.heads * d.lora);
  std::vector<int> tokens;
  for (int t = 0; t < 64; ++t) tokens.push_back(t);
  for (int t = 192; t < 200; ++t) tokens.push_back(t);
  double max_diff = 0.0, max_ref = 0.0;
  for (int64_t h = 0; h < d.heads; ++h) {
    std::vector<double> score;
    std::vector<const float*> rows;
    for (int t : tokens) {
      const float* row = pp.pool.data() + pp.tables[t / d.block_size] * pp.cache.block_stride +
                         (t % d.block_size) * width;
      double acc = 0.0;
      for (int64_t i = 0; i < width; ++i) acc += double(q[h * width + i]) * row[i];
      score.push_back(0.2 * acc);
      rows.push_back(row);
    }
    const double m = *std::max_element(score.begin(), score.end());
    double sum = 0.0;
    for (double& s : score) sum += s = std::exp(s - m);
    for (int64_t c = 0; c < d.lora; ++c) {
      double o = 0.0;
      for (size_t k = 0; k < rows.size(); ++k) o += score[k] / sum * rows[k][c];
      ASSERT_TRUE(std::isfinite(got[h * d.lora + c]));
      max_diff = std::max(max_diff, std::fabs(got[h * d.lora + c] - o));
      max_ref = std::max(max_ref, std::fabs(o));
    }
  }
  EXPECT_LE(max_diff / max_ref, kBound);
}

TEST(CudaMlaTest, DecodeBadArguments) {
  R2_CUDA_OR_SKIP(cuda);
  MlaDecodeParams p{.cache = {}, .num_seqs = 1, .heads = 4};
  EXPECT_EQ(cuda->MlaDecodeAttention(p).code(), absl::StatusCode::kInvalidArgument);
  DeviceArrays dev(*cuda);
  p.cache = PagedLatentCache{.data = dev.Upload(std::vector<float>(64 * 48, 1.0f)),
                             .num_blocks = 1,
                             .block_size = 64,
                             .block_stride = 64 * 48,
                             .kv_lora_rank = 32,
                             .rope_dim = 16};
  EXPECT_EQ(cuda->MlaDecodeAttention(p).code(), absl::StatusCode::kInvalidArgument)
      << "null metadata must be rejected";
  p.cache.block_stride = 10;
  EXPECT_EQ(cuda->MlaDecodeAttention(p).code(), absl::StatusCode::kInvalidArgument);
}

// KvCacheWrite: strided latent / k_pe rows scattered to shuffled slots with padding rows (-1) and
// a slot past the cache (skipped); every other cache element keeps its old value.
TEST(CudaMlaTest, KvCacheWriteScattersRowsAndSkipsPadding) {
  R2_CUDA_OR_SKIP(cuda);
  for (const CacheDims& d : {kTinyCache, kOddCache, kV3Cache}) {
    SCOPED_TRACE(absl::StrCat("lora ", d.lora));
    std::mt19937 rng(61 + d.lora);
    PagedProblem pp = MakePaged(d, {300, 65, 1}, rng);
    const int64_t width = d.lora + d.rope, rows = 150,
                  num_slots = pp.cache.num_blocks * d.block_size;
    const std::vector<float> kv = Random(rng, rows * (width + 3));
    std::vector<int64_t> slots(num_slots);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    slots.resize(rows);
    for (int64_t i = 0; i < rows; i += 7) slots[i] = -1;
    std::vector<int64_t> ref_slots = slots;
    slots[3] = num_slots + 5;  // past the cache: the device kernel skips it
    ref_slots[3] = -1;         // (the reference rejects it, so it gets padding)
    KvCacheWriteParams p{
        .latent_stride = width + 3, .k_pe_stride = width + 3, .rows = rows, .cache = {}};

    std::vector<float> want = pp.pool;
    KvCacheWriteParams rp = p;
    rp.latent = kv.data();
    rp.k_pe = kv.data() + d.lora + 1;
    rp.slot_mapping = ref_slots.data();
    rp.cache = pp.cache;
    rp.cache.data = want.data();
    ASSERT_TRUE(MakeCpuReferenceBackend()->KvCacheWrite(rp).ok());

    DeviceArrays dev(*cuda);
    KvCacheWriteParams cp = p;
    cp.latent = dev.Upload(kv);
    cp.k_pe = cp.latent + d.lora + 1;
    cp.slot_mapping = dev.Upload(slots);
    cp.cache = pp.cache;
    float* pool = dev.Upload(pp.pool);
    cp.cache.data = pool;
    ASSERT_FALSE(::testing::Test::HasFailure());
    ASSERT_TRUE(cuda->KvCacheWrite(cp).ok());
    ASSERT_TRUE(cuda->Synchronize().ok());
    const std::vector<float> got = dev.Download(pool, want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  }
}

TEST(CudaMlaTest, KvCacheWriteThenDecodeReadsWhatWasWritten) {
  R2_CUDA_OR_SKIP(cuda);
  // The model's order: write the step's rows, then attend over the cache including them.
  std::mt19937 rng(71);
  const CacheDims d = kV3Cache;
  PagedProblem pp = MakePaged(d, {129}, rng);
  const int64_t width = d.lora + d.rope;
  const std::vector<float> kv = Random(rng, width);  // the new token at position 128
  const int64_t slot = int64_t{pp.tables[2]} * d.block_size;
  std::vector<float> host_pool = pp.pool;
  std::copy(kv.begin(), kv.end(), host_pool.begin() + pp.tables[2] * pp.cache.block_stride);
  const std::vector<float> q = Random(rng, d.heads * width);
  std::vector<int32_t> kv_lens = {129}, cu = {0, 1};

  std::vector<float> want(d.heads * d.lora);
  MlaDecodeParams rp{.q = q.data(),
                     .q_token_stride = d.heads * width,
                     .q_head_stride = width,
                     .cache = pp.cache,
                     .block_tables = pp.tables.data(),
                     .block_table_stride = pp.table_stride,
                     .kv_lens = kv_lens.data(),
                     .cu_seqlens_q = cu.data(),
                     .num_seqs = 1,
                     .heads = d.heads,
                     .softmax_scale = 0.1352338f,
                     .out = want.data(),
                     .out_token_stride = d.heads * d.lora,
                     .out_head_stride = d.lora};
  rp.cache.data = host_pool.data();
  ASSERT_TRUE(MakeCpuReferenceBackend()->MlaDecodeAttention(rp).ok());

  DeviceArrays dev(*cuda);
  float* pool = dev.Upload(pp.pool);
  PagedLatentCache cache = pp.cache;
  cache.data = pool;
  const float* kv_dev = dev.Upload(kv);
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_TRUE(cuda->KvCacheWrite({.latent = kv_dev,
                                  .k_pe = kv_dev + d.lora,
                                  .slot_mapping = dev.Upload(std::vector<int64_t>{slot}),
                                  .rows = 1,
                                  .cache = cache})
                  .ok());
  MlaDecodeParams cp = rp;
  cp.q = dev.Upload(q);
  cp.cache = cache;
  cp.block_tables = dev.Upload(pp.tables);
  cp.kv_lens = dev.Upload(kv_lens);
  cp.cu_seqlens_q = dev.Upload(cu);
  float* out = dev.Upload(std::vector<float>(want.size(), kPoison));
  cp.out = out;
  ASSERT_TRUE(cuda->MlaDecodeAttention(cp).ok());
  ASSERT_TRUE(cuda->Synchronize().ok());
  const Comparison c =
      Compare(dev.Download(out, want.size()), want, std::vector<bool>(want.size(), true));
  EXPECT_EQ(c.bad_values, 0);
  EXPECT_LE(c.rel, kBound);
}

}  // namespace
}  // namespace r2

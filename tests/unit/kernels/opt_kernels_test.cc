// The optimized CPU backend against the reference ops, on every instruction set this machine
// supports (each path forced), on random shapes with odd sizes and tails. Error bounds are
// max |opt - ref| / max |ref| over the output (summation order differs; the reference is the
// oracle, not exact).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/cpu/opt_simd.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "tests/unit/kernels/cpu_isas.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::RelativeError;
using testing::Store;
using testing::StoredTensor;
using testing::SupportedIsas;

constexpr double kLinearBound = 2e-5;     // float32 dot products of up to ~1000 terms
constexpr double kElementBound = 1e-5;    // RMSNorm, SiLU (vector exp: ~2e-7 relative)
constexpr double kAttentionBound = 1e-5;  // softmax-weighted sums

class OptKernelsTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    auto made = MakeCpuOptimizedBackend(GetParam());
    ASSERT_TRUE(made.ok()) << made.status();
    opt_ = *std::move(made);
  }
  std::unique_ptr<Backend> opt_;
  std::unique_ptr<Backend> ref_ = MakeCpuReferenceBackend();
  std::mt19937 rng_{20261128};
  void CheckMlaDecode(int64_t heads);
  // p's attention through the reference into out_ref and the optimized backend into out_opt,
  // which must agree within kAttentionBound.
  void ExpectDecodeMatchesReference(MlaDecodeParams p, std::vector<float>& out_ref,
                                    std::vector<float>& out_opt) {
    p.out = out_ref.data();
    ASSERT_TRUE(ref_->MlaDecodeAttention(p).ok());
    p.out = out_opt.data();
    ASSERT_TRUE(opt_->MlaDecodeAttention(p).ok());
    EXPECT_LT(RelativeError(out_opt, out_ref), kAttentionBound);
  }
};

int64_t Uniform(std::mt19937& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

TEST_P(OptKernelsTest, NameSaysTheInstructionSet) {
  EXPECT_EQ(opt_->name(), "cpu (" + std::string(CpuIsaName(GetParam())) + ")");
}

struct LinearCase {
  DType dtype;
  int64_t rows, in, out;
  int64_t block_out = 128, block_in = 128;
  bool strided = false, accumulate = false;
  int64_t batch = 1;
  bool transposed = false;  // weight_transposed: the same values read as [in][out]
};

void CheckLinear(Backend& opt, Backend& ref, std::mt19937& rng, const LinearCase& c) {
  SCOPED_TRACE(std::string(DTypeName(c.dtype)) + " rows " + std::to_string(c.rows) + " in " +
               std::to_string(c.in) + " out " + std::to_string(c.out) + " batch " +
               std::to_string(c.batch) + (c.transposed ? " transposed" : ""));
  const int64_t xs = c.strided ? c.in + 3 : 0, ys = c.strided ? c.out + 5 : 0;
  const int64_t x_row = xs ? xs : c.in, y_row = ys ? ys : c.out;
  const int64_t x_batch = c.rows * x_row + 7, y_batch = c.rows * y_row + 2;
  const int64_t w_batch = c.in * c.out + 11;
  std::vector<float> x = RandomFloats(rng, c.batch * x_batch);
  StoredTensor w = Store(RandomFloats(rng, c.batch * w_batch, 0.5f), c.dtype,
                         {c.out, c.in});  // the view's shape is one product's
  StoredTensor scale;
  WeightView view{.weight = w.view, .block_out = c.block_out, .block_in = c.block_in};
  if (c.dtype == DType::kF8E4M3) {
    const int64_t so = (c.out + c.block_out - 1) / c.block_out;
    const int64_t si = (c.in + c.block_in - 1) / c.block_in;
    std::vector<float> scales(so * si);
    for (float& s : scales) s = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng);
    scale = Store(scales, DType::kF32, {so, si});
    view.scale_inv = scale.view;
  }
  std::vector<float> y0 = RandomFloats(rng, c.batch * y_batch);
  std::vector<float> y_opt = y0, y_ref = y0;
  LinearParams p{.x = x.data(),
                 .x_stride = xs,
                 .rows = c.rows,
                 .weight = view,
                 .y_stride = ys,
                 .accumulate = c.accumulate,
                 .batch = c.batch,
                 .x_batch_stride = x_batch,
                 .y_batch_stride = y_batch,
                 .weight_batch_stride = w_batch,
                 .weight_transposed = c.transposed};
  p.y = y_ref.data();
  ASSERT_TRUE(ref.Linear(p).ok());
  p.y = y_opt.data();
  ASSERT_TRUE(opt.Linear(p).ok());
  EXPECT_LT(RelativeError(y_opt, y_ref), kLinearBound);
  // Padding between strided rows and batches is untouched.
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t o = c.out; o < y_row; ++o) {
        ASSERT_EQ(y_opt[b * y_batch + r * y_row + o], y0[b * y_batch + r * y_row + o]);
      }
    }
  }
}

TEST_P(OptKernelsTest, LinearMatchesReferenceOnRandomShapes) {
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16, DType::kF8E4M3}) {
    for (int trial = 0; trial < 12; ++trial) {
      LinearCase c{.dtype = dtype,
                   .rows = Uniform(rng_, 1, 13),
                   .in = Uniform(rng_, 1, 300),
                   .out = Uniform(rng_, 1, 70),
                   .strided = trial % 2 == 1,
                   .accumulate = trial % 3 == 0};
      if (dtype == DType::kF8E4M3) {
        c.block_out = Uniform(rng_, 1, 40);  // partial edge blocks in both directions
        c.block_in = trial % 4 == 0 ? 128 : Uniform(rng_, 1, 70);
      }
      CheckLinear(*opt_, *ref_, rng_, c);
    }
  }
}

TEST_P(OptKernelsTest, LinearMatchesReferenceOnLargeThreadedShapes) {
  // Big enough to split across threads; row counts past one L2 row chunk; odd tails.
  CheckLinear(*opt_, *ref_, rng_, {.dtype = DType::kBF16, .rows = 1, .in = 1024, .out = 1031});
  CheckLinear(*opt_, *ref_, rng_, {.dtype = DType::kBF16, .rows = 8, .in = 517, .out = 300});
  CheckLinear(*opt_, *ref_, rng_,
              {.dtype = DType::kBF16, .rows = 77, .in = 1040, .out = 129, .accumulate = true});
  CheckLinear(*opt_, *ref_, rng_,
              {.dtype = DType::kF8E4M3, .rows = 33, .in = 515, .out = 260, .strided = true});
  CheckLinear(*opt_, *ref_, rng_, {.dtype = DType::kF32, .rows = 5, .in = 256, .out = 400});
}

TEST_P(OptKernelsTest, LinearStridedBatchMatchesReference) {
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16}) {
    CheckLinear(*opt_, *ref_, rng_,
                {.dtype = dtype, .rows = 3, .in = 67, .out = 33, .strided = true, .batch = 5});
    CheckLinear(*opt_, *ref_, rng_,
                {.dtype = dtype, .rows = 9, .in = 128, .out = 96, .accumulate = true, .batch = 16});
    // The small model's per-head absorbed products (W_UK^T and W_UV of 16 heads) at decode
    // batches 1 and 8; the model runs them on bf16 weights when the checkpoint's are bf16.
    for (int64_t rows : {1, 8}) {
      CheckLinear(
          *opt_, *ref_, rng_,
          {.dtype = dtype, .rows = rows, .in = 64, .out = 256, .strided = true, .batch = 16});
      CheckLinear(
          *opt_, *ref_, rng_,
          {.dtype = dtype, .rows = rows, .in = 256, .out = 64, .strided = true, .batch = 16});
    }
  }
}

TEST_P(OptKernelsTest, LinearOnTransposedWeightsMatchesReference) {
  EXPECT_TRUE(opt_->SupportsTransposedLinear());
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16}) {
    for (int trial = 0; trial < 12; ++trial) {
      // Rows past one register tile (8) and past the GEMM threshold (16); outputs with and
      // without whole vectors and tails.
      CheckLinear(*opt_, *ref_, rng_,
                  {.dtype = dtype,
                   .rows = Uniform(rng_, 1, trial % 4 == 0 ? 40 : 13),
                   .in = Uniform(rng_, 1, 300),
                   .out = Uniform(rng_, 1, trial % 3 == 0 ? 300 : 70),
                   .strided = trial % 2 == 1,
                   .accumulate = trial % 3 == 0,
                   .batch = Uniform(rng_, 1, 5),
                   .transposed = true});
    }
    // The small model's absorbed products, as the model runs them on the CPU: W_UK^T (kv_b's
    // own rows) and W_UV^T of 16 heads, at decode batches 1, 8 and 32.
    for (int64_t rows : {1, 8, 32}) {
      CheckLinear(*opt_, *ref_, rng_,
                  {.dtype = dtype,
                   .rows = rows,
                   .in = 64,
                   .out = 256,
                   .strided = true,
                   .batch = 16,
                   .transposed = true});
      CheckLinear(*opt_, *ref_, rng_,
                  {.dtype = dtype,
                   .rows = rows,
                   .in = 256,
                   .out = 64,
                   .strided = true,
                   .accumulate = rows == 8,
                   .batch = 16,
                   .transposed = true});
    }
  }
  // Threaded: one product wide enough to split over the threads.
  CheckLinear(*opt_, *ref_, rng_,
              {.dtype = DType::kBF16, .rows = 7, .in = 520, .out = 1029, .transposed = true});
}

TEST_P(OptKernelsTest, LinearRefusesTransposedQuantizedWeights) {
  StoredTensor f8 = Store(RandomFloats(rng_, 6), DType::kF8E4M3, {2, 3});
  StoredTensor scale = Store({1.0f}, DType::kF32, {1, 1});
  std::vector<float> x(3), y(2);
  const LinearParams p{
      .x = x.data(),
      .rows = 1,
      .weight = {.weight = f8.view, .scale_inv = scale.view, .block_out = 128, .block_in = 128},
      .y = y.data(),
      .weight_transposed = true};
  const absl::Status st = opt_->Linear(p);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_EQ(st.code(), ref_->Linear(p).code());
}

TEST_P(OptKernelsTest, LinearRejectsWhatTheReferenceRejects) {
  StoredTensor w = Store(RandomFloats(rng_, 6), DType::kBF16, {2, 3});
  StoredTensor f8 = Store(RandomFloats(rng_, 6), DType::kF8E4M3, {2, 3});
  StoredTensor i32 = Store(RandomFloats(rng_, 6), DType::kF32, {2, 3});
  i32.view.dtype = DType::kI32;
  std::vector<float> x(9), y(9);
  const LinearParams good{.x = x.data(), .rows = 1, .weight = {.weight = w.view}, .y = y.data()};
  std::vector<LinearParams> bad(6, good);
  bad[0].batch = 0;
  bad[1].x = nullptr;
  bad[2].weight.weight = i32.view;
  bad[3].weight.weight = f8.view;  // no scale_inv
  bad[4].weight.scale_inv = w.view;
  bad[5].rows = -1;
  for (const LinearParams& p : bad) {
    const absl::Status want = ref_->Linear(p), got = opt_->Linear(p);
    EXPECT_EQ(want.code(), absl::StatusCode::kInvalidArgument) << want;
    EXPECT_EQ(got, want);
  }
}

// Row gathers are exact (widening bf16/f16 to float32 is), so the outputs are equal, padding
// between rows untouched; a bad id gets the reference's error.
TEST_P(OptKernelsTest, EmbeddingEqualsReference) {
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (const int64_t dim : {1, 17, 1024}) {
      const int64_t vocab = 50, rows = 9, stride = dim + 3;
      StoredTensor table = Store(RandomFloats(rng_, vocab * dim), dtype, {vocab, dim});
      std::vector<int32_t> ids(rows);
      for (int32_t& id : ids) id = static_cast<int32_t>(Uniform(rng_, 0, vocab - 1));
      std::vector<float> out_ref(rows * stride, -3.0f), out_opt = out_ref;
      EmbeddingParams p{.table = table.view, .ids = ids.data(), .rows = rows, .out_stride = stride};
      p.out = out_ref.data();
      ASSERT_TRUE(ref_->Embedding(p).ok());
      p.out = out_opt.data();
      ASSERT_TRUE(opt_->Embedding(p).ok());
      EXPECT_EQ(out_opt, out_ref) << DTypeName(dtype) << " dim " << dim;
      ids[4] = static_cast<int32_t>(vocab);
      EXPECT_EQ(opt_->Embedding(p), ref_->Embedding(p));
      EXPECT_FALSE(opt_->Embedding(p).ok());
    }
  }
}

// The cache write is the reference's (after prefetching its slots): equal rows in every format,
// skipped slots left alone, and the reference's error for a slot past the cache.
TEST_P(OptKernelsTest, KvCacheWriteEqualsReference) {
  for (const KvCacheDType dtype :
       {KvCacheDType::kFloat32, KvCacheDType::kBF16, KvCacheDType::kFp8E4M3}) {
    const int64_t lora = 256, rope = 32, block_size = 8, num_blocks = 6, rows = 7;
    PagedLatentCache shape{
        .block_size = block_size, .kv_lora_rank = lora, .rope_dim = rope, .dtype = dtype};
    const int64_t words = shape.row_words();
    shape.num_blocks = num_blocks;
    shape.block_stride = 2 * block_size * words;  // two layers interleaved
    std::vector<float> pool_ref(num_blocks * shape.block_stride, 0.5f), pool_opt = pool_ref;
    const std::vector<float> latent = RandomFloats(rng_, rows * (lora + 1));
    const std::vector<float> k_pe = RandomFloats(rng_, rows * rope);
    std::vector<int64_t> slots = {0, 47, -1, 13, 9, 30, 8};
    KvCacheWriteParams p{.latent = latent.data(),
                         .latent_stride = lora + 1,
                         .k_pe = k_pe.data(),
                         .slot_mapping = slots.data(),
                         .rows = rows,
                         .cache = shape};
    p.cache.data = pool_ref.data();
    ASSERT_TRUE(ref_->KvCacheWrite(p).ok());
    p.cache.data = pool_opt.data();
    ASSERT_TRUE(opt_->KvCacheWrite(p).ok());
    // Bytes, not floats: an encoded bf16 / fp8 row read as float32 words may hold NaNs.
    EXPECT_EQ(std::memcmp(pool_opt.data(), pool_ref.data(), pool_ref.size() * 4), 0)
        << KvCacheDTypeName(dtype);
    slots[3] = num_blocks * block_size;
    EXPECT_EQ(opt_->KvCacheWrite(p), ref_->KvCacheWrite(p));
    EXPECT_FALSE(opt_->KvCacheWrite(p).ok());
  }
}

TEST_P(OptKernelsTest, RmsNormAndSiluMulMatchReference) {
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t rows = Uniform(rng_, 1, 40), dim = Uniform(rng_, 1, 600);
    const int64_t stride = dim + trial % 3;
    std::vector<float> x = RandomFloats(rng_, rows * stride, 3.0f);
    const DType wtype = trial % 3 == 0 ? DType::kF32 : trial % 3 == 1 ? DType::kBF16 : DType::kF16;
    StoredTensor w = Store(RandomFloats(rng_, dim), wtype, {dim});
    // Every other f32 weight one byte past its storage's start (a float32 tensor at an odd offset
    // of a mapped file): read through a widened copy, not in place.
    std::vector<uint8_t> shifted;
    if (wtype == DType::kF32 && trial % 2 == 1) {
      shifted.resize(dim * 4 + 1);
      std::memcpy(shifted.data() + 1, w.view.data, dim * 4);
      w.view.data = shifted.data() + 1;
    }
    std::vector<float> y_ref(rows * stride, 0.0f), y_opt = y_ref;
    RmsNormParams p{.x = x.data(),
                    .x_stride = stride,
                    .y_stride = stride,
                    .rows = rows,
                    .dim = dim,
                    .weight = w.view,
                    .eps = 1e-6f};
    p.y = y_ref.data();
    ASSERT_TRUE(ref_->RmsNorm(p).ok());
    p.y = y_opt.data();
    ASSERT_TRUE(opt_->RmsNorm(p).ok());
    EXPECT_LT(RelativeError(y_opt, y_ref), kElementBound)
        << "rmsnorm dim " << dim << " weight " << DTypeName(wtype);

    std::vector<float> gu = RandomFloats(rng_, rows * 2 * dim, 4.0f);
    gu[0] = -95.0f;  // exp(-g) beyond float range
    std::vector<float> out_ref(rows * dim), out_opt(rows * dim);
    SiluMulParams s{.gate = gu.data(),
                    .gate_stride = 2 * dim,
                    .up = gu.data() + dim,
                    .up_stride = 2 * dim,
                    .rows = rows,
                    .dim = dim};
    s.out = out_ref.data();
    ASSERT_TRUE(ref_->SiluMul(s).ok());
    s.out = out_opt.data();
    ASSERT_TRUE(opt_->SiluMul(s).ok());
    EXPECT_LT(RelativeError(out_opt, out_ref), kElementBound) << "silu dim " << dim;
  }
  RmsNormParams bad{.rows = 1, .dim = 0};
  EXPECT_EQ(opt_->RmsNorm(bad), ref_->RmsNorm(bad));
}

TEST_P(OptKernelsTest, MoeRouteMatchesReferenceExactly) {
  struct Shape {
    int64_t experts, groups, topk_group, top_k;
    MoeScoring scoring;
    MoeGroupScore group_score;
  };
  for (const Shape& s : {Shape{64, 8, 4, 6, MoeScoring::kSigmoid, MoeGroupScore::kTop2Sum},
                         Shape{16, 4, 2, 4, MoeScoring::kSoftmax, MoeGroupScore::kMax},
                         Shape{7, 1, 1, 3, MoeScoring::kSoftmax, MoeGroupScore::kMax}}) {
    const int64_t rows = 37;
    std::vector<float> logits = RandomFloats(rng_, rows * s.experts);
    logits[3] = logits[4];  // a tie
    std::vector<float> bias = RandomFloats(rng_, s.experts, 0.1f);
    std::vector<int32_t> ids_ref(rows * s.top_k), ids_opt(rows * s.top_k);
    std::vector<float> w_ref(rows * s.top_k), w_opt(rows * s.top_k);
    MoeRouteParams p{.logits = logits.data(),
                     .rows = rows,
                     .num_experts = s.experts,
                     .bias = bias.data(),
                     .scoring = s.scoring,
                     .group_score = s.group_score,
                     .n_group = s.groups,
                     .topk_group = s.topk_group,
                     .top_k = s.top_k,
                     .scaling_factor = 2.5f};
    p.expert_ids = ids_ref.data();
    p.expert_weights = w_ref.data();
    ASSERT_TRUE(ref_->MoeRoute(p).ok());
    p.expert_ids = ids_opt.data();
    p.expert_weights = w_opt.data();
    ASSERT_TRUE(opt_->MoeRoute(p).ok());
    EXPECT_EQ(ids_opt, ids_ref);
    EXPECT_EQ(w_opt, w_ref);
    p.top_k = s.experts + 1;
    EXPECT_EQ(opt_->MoeRoute(p), ref_->MoeRoute(p));
  }
}

// Head counts that fill the head groups of 4 exactly, and ones that leave a partial group.
TEST_P(OptKernelsTest, MlaDecodeAttentionMatchesReference) {
  for (const int64_t heads : {7, 16, 21}) {
    SCOPED_TRACE(heads);
    CheckMlaDecode(heads);
  }
}

void OptKernelsTest::CheckMlaDecode(int64_t heads) {
  const int64_t lora = 37, rope = 9, width = lora + rope, block_size = 5;
  const std::vector<int32_t> kv_lens = {1, 13, 40, 6}, q_lens = {1, 3, 1, 6};
  const int64_t seqs = 4, max_blocks = 9, num_blocks = seqs * max_blocks + 2, layers = 2;
  std::vector<float> pool = RandomFloats(rng_, num_blocks * layers * block_size * width);
  PagedLatentCache cache{.data = pool.data() + block_size * width,
                         .num_blocks = num_blocks,
                         .block_size = block_size,
                         .block_stride = layers * block_size * width,
                         .kv_lora_rank = lora,
                         .rope_dim = rope};
  std::vector<int32_t> tables(num_blocks);
  std::iota(tables.begin(), tables.end(), 0);
  std::shuffle(tables.begin(), tables.end(), rng_);
  std::vector<int32_t> cu = {0};
  for (int32_t n : q_lens) cu.push_back(cu.back() + n);
  const int64_t q_stride = heads * width + 4;
  std::vector<float> q = RandomFloats(rng_, cu.back() * q_stride);
  const int64_t out_stride = heads * lora + 3;
  std::vector<float> out_ref(cu.back() * out_stride, 0.0f), out_opt = out_ref;
  MlaDecodeParams p{.q = q.data(),
                    .q_token_stride = q_stride,
                    .q_head_stride = width,
                    .cache = cache,
                    .block_tables = tables.data(),
                    .block_table_stride = max_blocks,
                    .kv_lens = kv_lens.data(),
                    .cu_seqlens_q = cu.data(),
                    .num_seqs = seqs,
                    .heads = heads,
                    .softmax_scale = 0.3f,
                    .out_token_stride = out_stride,
                    .out_head_stride = lora};
  ExpectDecodeMatchesReference(p, out_ref, out_opt);
  p.out = out_opt.data();
  tables[0] = static_cast<int32_t>(num_blocks);  // a block past the cache
  EXPECT_EQ(opt_->MlaDecodeAttention(p), ref_->MlaDecodeAttention(p));
  EXPECT_FALSE(opt_->MlaDecodeAttention(p).ok());
}

// The decode's query transposition (heads into lanes) is exact: every value lands in place and
// the lanes past the last head are zero, for whole and partial blocks of heads and positions.
TEST_P(OptKernelsTest, TransposeHeadsPutsTheHeadsInTheLanes) {
  const cpu::SimdKernels& k = cpu::KernelsFor(GetParam());
  for (const int64_t heads : {1, 5, 16, 17, 40}) {
    for (const int64_t n : {1, 15, 16, 33, 288}) {
      const int64_t cols = (heads + k.lanes - 1) / k.lanes * k.lanes + (n % 2) * k.lanes;
      const int64_t q_stride = n + 3;
      const std::vector<float> q = RandomFloats(rng_, heads * q_stride);
      std::vector<float> qt(n * cols, std::numeric_limits<float>::quiet_NaN());
      k.transpose_heads(q.data(), q_stride, heads, n, qt.data(), cols);
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t h = 0; h < cols; ++h) {
          const float want = h < heads ? q[h * q_stride + j] : 0.0f;
          ASSERT_EQ(qt[j * cols + h], want)
              << "heads " << heads << " n " << n << " j " << j << " h " << h;
        }
      }
    }
  }
}

// Few query rows over long contexts: each token's positions are split over several work items
// and merged (one row; two rows, one of whose contexts is too short to fill every split), with
// head counts under one vector, of several vectors, and over one item's 64 heads.
TEST_P(OptKernelsTest, MlaDecodeAttentionSplitPositionsMatchReference) {
  const int64_t lora = 40, rope = 8, width = lora + rope, block_size = 16;
  struct Case {
    std::vector<int32_t> kv_lens;
    int64_t heads;
  };
  const std::vector<Case> cases = {{{100}, 16}, {{257}, 5},  {{3, 300}, 16}, {{1}, 16},
                                   {{64}, 70},  {{130}, 33}, {{33, 90}, 7}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "heads " << c.heads << " kv_lens[0] " << c.kv_lens[0]);
    const int64_t seqs = static_cast<int64_t>(c.kv_lens.size()), max_blocks = 20;
    const int64_t num_blocks = seqs * max_blocks;
    std::vector<float> pool = RandomFloats(rng_, num_blocks * block_size * width);
    std::vector<int32_t> tables(num_blocks);
    std::iota(tables.begin(), tables.end(), 0);
    std::shuffle(tables.begin(), tables.end(), rng_);
    std::vector<int32_t> cu(seqs + 1);
    std::iota(cu.begin(), cu.end(), 0);
    std::vector<float> q = RandomFloats(rng_, seqs * c.heads * width);
    std::vector<float> out_ref(seqs * c.heads * lora), out_opt(out_ref.size(), -7.0f);
    MlaDecodeParams p{.q = q.data(),
                      .q_token_stride = c.heads * width,
                      .q_head_stride = width,
                      .cache = {.data = pool.data(),
                                .num_blocks = num_blocks,
                                .block_size = block_size,
                                .block_stride = block_size * width,
                                .kv_lora_rank = lora,
                                .rope_dim = rope},
                      .block_tables = tables.data(),
                      .block_table_stride = max_blocks,
                      .kv_lens = c.kv_lens.data(),
                      .cu_seqlens_q = cu.data(),
                      .num_seqs = seqs,
                      .heads = c.heads,
                      .softmax_scale = 0.4f,
                      .out_token_stride = c.heads * lora,
                      .out_head_stride = lora};
    ExpectDecodeMatchesReference(p, out_ref, out_opt);
  }
}

TEST_P(OptKernelsTest, MlaPrefillAttentionMatchesReference) {
  const int64_t heads = 5, nope = 19, rope = 7, v_dim = 13, dq = nope + rope;
  const std::vector<int32_t> q_lens = {1, 9, 4, 17}, k_lens = {1, 9, 11, 30};
  std::vector<int32_t> cu_q = {0}, cu_k = {0};
  for (size_t b = 0; b < q_lens.size(); ++b) {
    cu_q.push_back(cu_q.back() + q_lens[b]);
    cu_k.push_back(cu_k.back() + k_lens[b]);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back();
  std::vector<float> q = RandomFloats(rng_, tq * heads * dq);
  std::vector<float> kv = RandomFloats(rng_, tk * heads * (nope + v_dim));
  std::vector<float> k_pe = RandomFloats(rng_, tk * rope);
  std::vector<float> out_ref(tq * heads * v_dim), out_opt(tq * heads * v_dim);
  MlaPrefillParams p{.q = q.data(),
                     .q_token_stride = heads * dq,
                     .q_head_stride = dq,
                     .k_nope = kv.data(),
                     .k_nope_token_stride = heads * (nope + v_dim),
                     .k_nope_head_stride = nope + v_dim,
                     .k_pe = k_pe.data(),
                     .k_pe_token_stride = rope,
                     .v = kv.data() + nope,
                     .v_token_stride = heads * (nope + v_dim),
                     .v_head_stride = nope + v_dim,
                     .out_token_stride = heads * v_dim,
                     .out_head_stride = v_dim,
                     .cu_seqlens_q = cu_q.data(),
                     .cu_seqlens_k = cu_k.data(),
                     .num_seqs = 4,
                     .heads = heads,
                     .nope_dim = nope,
                     .rope_dim = rope,
                     .v_dim = v_dim,
                     .softmax_scale = 0.25f};
  p.out = out_ref.data();
  ASSERT_TRUE(ref_->MlaPrefillAttention(p).ok());
  p.out = out_opt.data();
  ASSERT_TRUE(opt_->MlaPrefillAttention(p).ok());
  EXPECT_LT(RelativeError(out_opt, out_ref), kAttentionBound);
  p.cu_seqlens_q = cu_k.data();  // more queries than keys
  p.cu_seqlens_k = cu_q.data();
  EXPECT_EQ(opt_->MlaPrefillAttention(p), ref_->MlaPrefillAttention(p));
  EXPECT_FALSE(opt_->MlaPrefillAttention(p).ok());
}

TEST(CpuIsaTest, DetectsTheBestSupportedSetAndRegistersAsCpu) {
  const CpuIsa best = DetectCpuIsa();
  EXPECT_TRUE(CpuIsaSupported(best));
  EXPECT_TRUE(CpuIsaSupported(CpuIsa::kPortable));
  auto cpu = MakeBackend("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->name(), "cpu (" + std::string(CpuIsaName(best)) + ")");
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (!CpuIsaSupported(isa)) {
      EXPECT_EQ(MakeCpuOptimizedBackend(isa).status().code(), absl::StatusCode::kUnavailable);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EverySupportedIsa, OptKernelsTest, ::testing::ValuesIn(SupportedIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

}  // namespace
}  // namespace r2

namespace r2::cpu {
namespace {

TEST(CpuThreadPoolTest, RunsEveryItemExactlyOnceAcrossManyLoops) {
  CpuThreadPool pool(3);
  EXPECT_EQ(pool.threads(), 3);
  for (int64_t items : {0, 1, 2, 5, 64, 1000}) {
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(items);
      pool.ParallelFor(items, [&](int64_t i) { hits[i].fetch_add(1); });
      for (int64_t i = 0; i < items; ++i) ASSERT_EQ(hits[i].load(), 1) << items << " " << i;
    }
  }
}

// A worker that read the item counter of one loop and then slept could wake while the next loop
// was being published, read that loop's (larger) item count and claim an index of the finished
// loop: it then ran the new loop's function on a stale index and counted it as done, so the
// caller could return while an item was still running (a closure used after its scope ended).
// Oversubscribed workers and alternating small and large loops make that interleaving likely;
// every item must run exactly once and never after its ParallelFor returned.
TEST(CpuThreadPoolTest, NoItemRunsTwiceOrAfterItsLoopReturned) {
  CpuThreadPool pool(8);
  struct Job {
    std::vector<std::atomic<int>> hits;
    std::atomic<bool> returned{false};
    explicit Job(int64_t n) : hits(n) {}
  };
  std::atomic<int64_t> late{0};
  std::vector<std::unique_ptr<Job>> jobs;  // kept alive so a late item is counted, not a crash
  constexpr int kLoops = 100000;
  jobs.reserve(kLoops);
  for (int k = 0; k < kLoops; ++k) {
    const int64_t items = (k % 2 == 0) ? 2 : 33;
    jobs.push_back(std::make_unique<Job>(items));
    Job* job = jobs.back().get();
    pool.ParallelFor(items, [job, &late](int64_t i) {
      if (job->returned.load()) late.fetch_add(1);
      job->hits[i].fetch_add(1);
    });
    job->returned.store(true);
    for (int64_t i = 0; i < items; ++i) {
      ASSERT_EQ(job->hits[i].load(), 1) << "loop " << k << " item " << i;
    }
  }
  EXPECT_EQ(late.load(), 0);
}

TEST(CpuThreadPoolTest, ConcurrentCallersBothFinishAndSerialFlagRunsInline) {
  CpuThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  std::thread other([&] {
    for (int rep = 0; rep < 300; ++rep) pool.ParallelFor(17, [&](int64_t i) { sum += i; });
  });
  for (int rep = 0; rep < 300; ++rep) pool.ParallelFor(17, [&](int64_t i) { sum += i; });
  other.join();
  EXPECT_EQ(sum.load(), 2 * 300 * (16 * 17 / 2));
  const std::thread::id self = std::this_thread::get_id();
  bool inline_only = true;
  pool.ParallelFor(
      50, [&](int64_t) { inline_only &= std::this_thread::get_id() == self; }, false);
  EXPECT_TRUE(inline_only);
}

}  // namespace
}  // namespace r2::cpu

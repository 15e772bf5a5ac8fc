// DeepseekModel::Forward invariants on every tiny preset: cached decode (absorbed MLA over the
// paged cache) equals one prefill (plain MLA); batching does not change a sequence's logits;
// chunked prefill equals one prefill; the logits are far from flat.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/unit/model/model_test_util.h"

namespace r2::model {
namespace {

using testing::ArgMax;
using testing::MakeCache;
using testing::PrefillLogits;
using testing::PresetModel;
using testing::RandomTokens;
using testing::RelativeDiff;
using testing::ShuffledBlocks;

class ForwardTest : public ::testing::TestWithParam<testing::PresetOnBackend> {
 protected:
  void SetUp() override {
    const std::string reason = testing::BackendUnavailable(backend());
    if (!reason.empty()) GTEST_SKIP() << backend() << " unavailable: " << reason;
  }
  const std::string& backend() const { return std::get<1>(GetParam()); }
  DeepseekModel& model() { return PresetModel(std::get<0>(GetParam()), 0, backend()); }
  double bound() const { return testing::LogitsBound(backend(), 1e-4); }
  int64_t vocab() { return model().config().vocab_size; }
  std::mt19937 rng_{42};
};

absl::Span<const float> Row(const std::vector<float>& logits, int64_t vocab, int64_t i) {
  return absl::MakeConstSpan(logits.data() + i * vocab, vocab);
}

TEST_P(ForwardTest, TokenByTokenDecodeMatchesPrefill) {
  const std::vector<int32_t> ids = RandomTokens(rng_, 21, vocab());
  const std::vector<float> prefill = PrefillLogits(model(), ids);
  ASSERT_FALSE(prefill.empty());
  // Block size 8 so the sequence spans three scattered blocks.
  auto cache = MakeCache(model(), 16, 8);
  const std::vector<int32_t> table = ShuffledBlocks(rng_, 16);
  for (size_t i = 0; i < ids.size(); ++i) {
    SequenceInput seq{.token_ids = absl::MakeConstSpan(&ids[i], 1),
                      .start_pos = static_cast<int64_t>(i),
                      .block_table = table};
    auto out = model().Forward({&seq, 1}, LogitsMode::kLastPerSequence, *cache);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->logit_rows(), 1);
    EXPECT_LE(RelativeDiff(out->logits_row(0), Row(prefill, vocab(), i)), bound())
        << "position " << i;
  }
}

TEST_P(ForwardTest, ChunkedPrefillMatchesOnePrefill) {
  if (testing::RoundingDependsOnBatchShape(backend())) {
    GTEST_SKIP() << "batch-shape comparison: run on cuda-fp32 (see RoundingDependsOnBatchShape)";
  }
  const std::vector<int32_t> ids = RandomTokens(rng_, 30, vocab());
  const std::vector<float> prefill = PrefillLogits(model(), ids);
  auto cache = MakeCache(model(), 8, 8);
  const std::vector<int32_t> table = ShuffledBlocks(rng_, 8);
  const std::vector<int64_t> cuts = {0, 9, 10, 23, 30};
  for (size_t c = 0; c + 1 < cuts.size(); ++c) {
    SequenceInput seq{.token_ids = absl::MakeConstSpan(ids).subspan(cuts[c], cuts[c + 1] - cuts[c]),
                      .start_pos = cuts[c],
                      .block_table = table};
    auto out = model().Forward({&seq, 1}, LogitsMode::kAll, *cache);
    ASSERT_TRUE(out.ok()) << out.status();
    for (int64_t i = cuts[c]; i < cuts[c + 1]; ++i) {
      EXPECT_LE(RelativeDiff(out->logits_row(i - cuts[c]), Row(prefill, vocab(), i)), bound())
          << "position " << i;
    }
  }
}

// Three sequences of different lengths: prefilled together, then mixed steps (decode, chunked
// prefill, a new sequence joining). Each gets the logits it gets alone.
TEST_P(ForwardTest, BatchedSequencesGetTheirOwnLogits) {
  if (testing::RoundingDependsOnBatchShape(backend())) {
    GTEST_SKIP() << "batch-shape comparison: run on cuda-fp32 (see RoundingDependsOnBatchShape)";
  }
  const std::vector<std::vector<int32_t>> prompts = {RandomTokens(rng_, 7, vocab()),
                                                     RandomTokens(rng_, 19, vocab()),
                                                     RandomTokens(rng_, 12, vocab())};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) alone.push_back(PrefillLogits(model(), p));
  auto cache = MakeCache(model(), 24, 4);
  const std::vector<int32_t> blocks = ShuffledBlocks(rng_, 24);
  std::vector<std::vector<int32_t>> tables;
  for (int s = 0; s < 3; ++s)
    tables.emplace_back(blocks.begin() + 8 * s, blocks.begin() + 8 * s + 8);

  // Each step: (sequence, first position, token count); sequence 2 joins at step 1.
  struct Chunk {
    int seq;
    int64_t start, count;
  };
  const std::vector<std::vector<Chunk>> steps = {
      {{0, 0, 5}, {1, 0, 11}},
      {{0, 5, 1}, {1, 11, 4}, {2, 0, 12}},
      {{0, 6, 1}, {1, 15, 1}},
  };
  for (size_t st = 0; st < steps.size(); ++st) {
    std::vector<SequenceInput> batch;
    for (const Chunk& ch : steps[st]) {
      batch.push_back(
          {.token_ids = absl::MakeConstSpan(prompts[ch.seq]).subspan(ch.start, ch.count),
           .start_pos = ch.start,
           .block_table = tables[ch.seq]});
    }
    auto out = model().Forward(batch, LogitsMode::kAll, *cache);
    ASSERT_TRUE(out.ok()) << out.status();
    int64_t row = 0;
    for (const Chunk& ch : steps[st]) {
      for (int64_t i = ch.start; i < ch.start + ch.count; ++i, ++row) {
        EXPECT_LE(RelativeDiff(out->logits_row(row), Row(alone[ch.seq], vocab(), i)), bound())
            << "step " << st << " sequence " << ch.seq << " position " << i;
      }
    }
    // The hidden states come back in batch order as well.
    EXPECT_EQ(static_cast<int64_t>(out->hidden.size()), row * model().config().hidden_size);
  }
  // Last step: only the last token of each sequence, one logits row per sequence.
  std::vector<SequenceInput> batch = {{.token_ids = absl::MakeConstSpan(prompts[1]).subspan(16, 3),
                                       .start_pos = 16,
                                       .block_table = tables[1]}};
  auto out = model().Forward(batch, LogitsMode::kLastPerSequence, *cache);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->logit_rows(), 1);
  EXPECT_LE(RelativeDiff(out->logits_row(0), Row(alone[1], vocab(), 18)), bound());
}

TEST_P(ForwardTest, NextTokenIsFarFromUniform) {
  const std::vector<int32_t> ids = RandomTokens(rng_, 16, vocab());
  const std::vector<float> logits = PrefillLogits(model(), ids);
  absl::Span<const float> last = Row(logits, vocab(), 15);
  const float max = last[ArgMax(last)];
  double sum = 0;
  for (float l : last) sum += std::exp(double(l) - max);
  const double top1 = 1.0 / sum;
  EXPECT_GE(top1, 5.0 / vocab()) << "top-1 probability " << top1;
}

TEST_P(ForwardTest, RejectsBadInputWithoutTouchingTheCache) {
  auto cache = MakeCache(model(), 2, 4);
  const std::vector<int32_t> table = {0, 1};
  const std::vector<int32_t> bad_id = {1, static_cast<int32_t>(vocab())};
  SequenceInput seq{.token_ids = bad_id, .start_pos = 0, .block_table = table};
  EXPECT_EQ(model().Forward({&seq, 1}, LogitsMode::kAll, *cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> ids = RandomTokens(rng_, 9, vocab());  // needs 3 blocks of 4
  seq = {.token_ids = ids, .start_pos = 0, .block_table = table};
  EXPECT_EQ(model().Forward({&seq, 1}, LogitsMode::kAll, *cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> outside = {0, 7};
  seq = {
      .token_ids = absl::MakeConstSpan(ids).subspan(0, 5), .start_pos = 0, .block_table = outside};
  EXPECT_EQ(model().Forward({&seq, 1}, LogitsMode::kAll, *cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  seq = {.token_ids = absl::MakeConstSpan(ids).subspan(0, 1),
         .start_pos = model().config().max_position_embeddings,
         .block_table = table};
  EXPECT_EQ(model().Forward({&seq, 1}, LogitsMode::kAll, *cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto wrong_cache = PagedKvCache::Create(
      {.num_blocks = 2, .num_layers = 1, .block_size = 4, .kv_lora_rank = 8, .rope_dim = 2});
  ASSERT_TRUE(wrong_cache.ok());
  seq = {.token_ids = absl::MakeConstSpan(ids).subspan(0, 1), .start_pos = 0, .block_table = table};
  EXPECT_EQ(model().Forward({&seq, 1}, LogitsMode::kAll, **wrong_cache).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Presets, ForwardTest,
                         ::testing::Combine(::testing::Values("tiny", "tiny-noqlora", "tiny-fp8"),
                                            ::testing::ValuesIn(testing::ModelTestBackends())),
                         testing::PresetOnBackendName);

}  // namespace
}  // namespace r2::model

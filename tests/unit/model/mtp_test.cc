// DeepseekModel::ForwardMtp: pairs (h_i, t_{i+1}) run in one pass equal the same pairs run one at
// a time through the MTP layer's cache; the MTP layer's cache does not disturb the main layers.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "tests/unit/model/model_test_util.h"

namespace r2::model {
namespace {

using testing::MakeCache;
using testing::PrefillLogits;
using testing::PresetModel;
using testing::RandomTokens;
using testing::RelativeDiff;
using testing::ShuffledBlocks;

class MtpTest : public ::testing::TestWithParam<testing::PresetOnBackend> {
 protected:
  void SetUp() override {
    const std::string reason = testing::BackendUnavailable(backend());
    if (!reason.empty()) GTEST_SKIP() << backend() << " unavailable: " << reason;
  }
  const std::string& backend() const { return std::get<1>(GetParam()); }
  DeepseekModel& model() { return PresetModel(std::get<0>(GetParam()), 0, backend()); }
  double bound() const { return testing::LogitsBound(backend(), 1e-4); }
  std::mt19937 rng_{7};
};

TEST_P(MtpTest, IncrementalMatchesOnePass) {
  const int64_t vocab = model().config().vocab_size, d = model().config().hidden_size;
  const std::vector<int32_t> ids = RandomTokens(rng_, 14, vocab);
  auto cache = MakeCache(model(), 8, 4);
  const std::vector<int32_t> table = ShuffledBlocks(rng_, 8);
  SequenceInput main{.token_ids = ids, .start_pos = 0, .block_table = table};
  auto main_out = model().Forward({&main, 1}, LogitsMode::kAll, *cache);
  ASSERT_TRUE(main_out.ok()) << main_out.status();
  // One pass over pairs (h_i, ids[i + 1]) for i = 0 .. n-2.
  const int64_t n = static_cast<int64_t>(ids.size()) - 1;
  SequenceInput pairs{
      .token_ids = absl::MakeConstSpan(ids).subspan(1), .start_pos = 0, .block_table = table};
  auto once = model().ForwardMtp({&pairs, 1}, absl::MakeConstSpan(main_out->hidden).first(n * d),
                                 LogitsMode::kAll, *cache);
  ASSERT_TRUE(once.ok()) << once.status();
  ASSERT_EQ(once->logit_rows(), n);

  // The same pairs one at a time, in a second cache (absorbed attention over the MTP layer).
  auto cache2 = MakeCache(model(), 8, 4);
  for (int64_t i = 0; i < n; ++i) {
    SequenceInput pair{
        .token_ids = absl::MakeConstSpan(&ids[i + 1], 1), .start_pos = i, .block_table = table};
    auto step =
        model().ForwardMtp({&pair, 1}, absl::MakeConstSpan(main_out->hidden).subspan(i * d, d),
                           LogitsMode::kLastPerSequence, *cache2);
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_LE(RelativeDiff(step->logits_row(0), once->logits_row(i)), bound()) << "position " << i;
  }
}

TEST_P(MtpTest, MtpLayerCacheLeavesMainLayersAlone) {
  if (testing::RoundingDependsOnBatchShape(backend())) {
    GTEST_SKIP() << "batch-shape comparison: run on cuda-fp32 (see RoundingDependsOnBatchShape)";
  }
  const int64_t vocab = model().config().vocab_size, d = model().config().hidden_size;
  const std::vector<int32_t> ids = RandomTokens(rng_, 11, vocab);
  const std::vector<float> prefill = PrefillLogits(model(), ids);
  auto cache = MakeCache(model(), 4, 4);
  const std::vector<int32_t> table = {3, 1, 0};
  SequenceInput head{
      .token_ids = absl::MakeConstSpan(ids).first(8), .start_pos = 0, .block_table = table};
  auto main_out = model().Forward({&head, 1}, LogitsMode::kNone, *cache);
  ASSERT_TRUE(main_out.ok()) << main_out.status();
  EXPECT_EQ(main_out->logit_rows(), 0);
  SequenceInput pairs{
      .token_ids = absl::MakeConstSpan(ids).subspan(1, 7), .start_pos = 0, .block_table = table};
  ASSERT_TRUE(model()
                  .ForwardMtp({&pairs, 1}, absl::MakeConstSpan(main_out->hidden).first(7 * d),
                              LogitsMode::kLastPerSequence, *cache)
                  .ok());
  SequenceInput tail{
      .token_ids = absl::MakeConstSpan(ids).subspan(8), .start_pos = 8, .block_table = table};
  auto out = model().Forward({&tail, 1}, LogitsMode::kAll, *cache);
  ASSERT_TRUE(out.ok()) << out.status();
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_LE(RelativeDiff(out->logits_row(i),
                           absl::MakeConstSpan(prefill).subspan((8 + i) * vocab, vocab)),
              bound());
  }
}

TEST_P(MtpTest, RejectsMismatchedHiddenAndUnknownModule) {
  auto cache = MakeCache(model(), 2, 4);
  const std::vector<int32_t> table = {0, 1}, ids = {5, 6};
  std::vector<float> hidden(model().config().hidden_size);  // one row for two tokens
  SequenceInput seq{.token_ids = ids, .start_pos = 0, .block_table = table};
  EXPECT_EQ(model().ForwardMtp({&seq, 1}, hidden, LogitsMode::kAll, *cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  hidden.resize(2 * hidden.size());
  EXPECT_EQ(model().ForwardMtp({&seq, 1}, hidden, LogitsMode::kAll, *cache, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Presets, MtpTest,
                         ::testing::Combine(::testing::Values("tiny", "tiny-noqlora", "tiny-fp8"),
                                            ::testing::ValuesIn(testing::ModelTestBackends())),
                         testing::PresetOnBackendName);

}  // namespace
}  // namespace r2::model

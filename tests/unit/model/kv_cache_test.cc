// PagedKvCache addressing and StepPlan construction (token order, slots, validation).
#include "engine/model/kv_cache.h"

#include <gtest/gtest.h>

#include <vector>

#include "engine/model/step_plan.h"

namespace r2::model {
namespace {

TEST(PagedKvCacheTest, LayerViewsAndRowsAddressTheSameStorage) {
  auto cache = PagedKvCache::Create(
      {.num_blocks = 3, .num_layers = 2, .block_size = 4, .kv_lora_rank = 3, .rope_dim = 2});
  ASSERT_TRUE(cache.ok()) << cache.status();
  PagedLatentCache layer1 = (*cache)->Layer(1);
  EXPECT_EQ(layer1.block_stride, 2 * 4 * 5);
  // Slot 9 = block 2, offset 1.
  float* row = layer1.data + 2 * layer1.block_stride + 1 * layer1.row_width();
  for (int i = 0; i < 5; ++i) row[i] = static_cast<float>(i + 1);
  EXPECT_EQ((*cache)->Row(1, 9), (std::vector<float>{1, 2, 3, 4, 5}));
  EXPECT_EQ((*cache)->Row(0, 9)[0], 0.0f);  // layer 0 untouched
  EXPECT_EQ((*cache)->BlocksFor(9), 3);
  // Copying block 2 to block 0 carries every layer's rows.
  ASSERT_TRUE((*cache)->CopyBlock(2, 0).ok());
  EXPECT_EQ((*cache)->Row(1, 1)[4], 5.0f);
  EXPECT_EQ((*cache)->CopyBlock(3, 0).code(), absl::StatusCode::kInvalidArgument);
}

// On a device backend the storage is backend memory: copies go through CopyWithin, Row reads
// back through CopyToHost, and a fresh cache reads as zeros.
TEST(PagedKvCacheTest, DeviceStorageComesFromTheBackend) {
  auto backend = MakeBackend("checked-memory");
  ASSERT_TRUE(backend.ok());
  auto cache = PagedKvCache::Create(
      {.num_blocks = 3, .num_layers = 2, .block_size = 4, .kv_lora_rank = 3, .rope_dim = 2},
      backend->get());
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ((*cache)->backend(), backend->get());
  EXPECT_EQ((*cache)->Row(1, 9), std::vector<float>(5, 0.0f));
  PagedLatentCache layer1 = (*cache)->Layer(1);
  const std::vector<float> row = {1, 2, 3, 4, 5};
  float* at = layer1.data + 2 * layer1.block_stride + 1 * layer1.row_width();  // slot 9
  ASSERT_TRUE((*backend)->CopyToBackend(at, row.data(), row.size() * sizeof(float)).ok());
  EXPECT_EQ((*cache)->Row(1, 9), row);
  ASSERT_TRUE((*cache)->CopyBlock(2, 0).ok());
  EXPECT_EQ((*cache)->Row(1, 1), row);
  EXPECT_EQ((*cache)->Row(0, 1), std::vector<float>(5, 0.0f));
  // The storage is this backend's: another checked-memory backend does not know it.
  auto other = MakeBackend("checked-memory");
  ASSERT_TRUE(other.ok());
  std::vector<float> out(5);
  EXPECT_EQ((*other)->CopyToHost(out.data(), at, 20).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagedKvCacheTest, RejectsBadShapes) {
  EXPECT_FALSE(PagedKvCache::Create({.num_blocks = 0, .num_layers = 1, .kv_lora_rank = 4}).ok());
  EXPECT_FALSE(
      PagedKvCache::Create({.num_blocks = 1 << 30, .num_layers = 1 << 20, .kv_lora_rank = 512})
          .ok());
  ModelConfig config;
  config.num_nextn_predict_layers = 1;
  const KvCacheShape shape = PagedKvCache::ShapeFor(config, 10);
  EXPECT_EQ(shape.num_layers, 62);
  EXPECT_EQ(shape.row_width(), 576);
  EXPECT_EQ(shape.block_size, 64);
}

TEST(StepPlanTest, PrefillSequencesFirstThenCachedOnes) {
  const std::vector<int32_t> a = {5, 6}, b = {7}, c = {8, 9, 10};
  const std::vector<int32_t> ta = {3}, tb = {0, 1}, tc = {2};
  const std::vector<SequenceInput> batch = {{.token_ids = a, .start_pos = 2, .block_table = ta},
                                            {.token_ids = b, .start_pos = 4, .block_table = tb},
                                            {.token_ids = c, .start_pos = 0, .block_table = tc}};
  auto plan =
      BuildStepPlan(batch, LogitsMode::kLastPerSequence,
                    {.vocab_size = 11, .max_positions = 100, .num_blocks = 4, .block_size = 4});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->token_ids, (std::vector<int32_t>{8, 9, 10, 5, 6, 7}));
  EXPECT_EQ(plan->positions, (std::vector<int32_t>{0, 1, 2, 2, 3, 4}));
  EXPECT_EQ(plan->slots, (std::vector<int64_t>{8, 9, 10, 14, 15, 4}));
  EXPECT_EQ(plan->prefill_rows, 3);
  EXPECT_EQ(plan->prefill_cu_seqlens, (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(plan->decode_cu_seqlens, (std::vector<int32_t>{0, 2, 3}));
  EXPECT_EQ(plan->decode_kv_lens, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(plan->decode_block_table_stride, 2);
  EXPECT_EQ(plan->decode_block_tables, (std::vector<int32_t>{3, -1, 0, 1}));
  EXPECT_EQ(plan->batch_row, (std::vector<int32_t>{3, 4, 5, 0, 1, 2}));
  EXPECT_EQ(plan->logit_rows, (std::vector<int32_t>{4, 5, 2}));  // last of a, b, c
}

TEST(StepPlanTest, RejectsBadSequencesNamingThem) {
  const std::vector<int32_t> ids = {1, 2}, table = {0};
  const StepPlanLimits limits{
      .vocab_size = 3, .max_positions = 8, .num_blocks = 1, .block_size = 4};
  auto check = [&](SequenceInput s) {
    const std::vector<SequenceInput> batch = {{.token_ids = ids, .block_table = table}, s};
    auto plan = BuildStepPlan(batch, LogitsMode::kAll, limits);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(plan.status().message().find("sequence 1"), absl::string_view::npos) << plan.status();
  };
  check({.token_ids = {}, .block_table = table});  // no tokens
  const std::vector<int32_t> bad_id = {3};
  check({.token_ids = bad_id, .block_table = table});               // id >= vocab
  check({.token_ids = ids, .start_pos = 3, .block_table = table});  // needs 2 blocks
  check({.token_ids = ids, .start_pos = 7, .block_table = table});  // past max_positions
  const std::vector<int32_t> outside = {1};
  check({.token_ids = ids, .block_table = outside});  // block not in cache
}

}  // namespace
}  // namespace r2::model

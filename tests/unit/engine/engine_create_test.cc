// Engine::Create: what it reads from the model directory (EOS ids from generation_config.json, the
// tokenizer when present), how it sizes the KV pool, and the errors that name the bad setting.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::Collected;
using testing::GreedyRequest;
using testing::MakeEngine;
using testing::RunAlone;
using testing::TestEngineConfig;

// A copy of the test model whose generation_config.json is `generation_config`.
std::string ModelDirWithGenerationConfig(const std::string& generation_config) {
  const std::string dir = r2::testing::MakeTempDir("engine-gen");
  const absl::Status written = model::WriteTinyModel(testing::TestModelOptions(), dir);
  EXPECT_TRUE(written.ok()) << written;
  std::ofstream(dir + "/generation_config.json", std::ios::trunc) << generation_config;
  return dir;
}

TEST(EngineCreateTest, SizesThePoolFromTheMemoryBudget) {
  EngineConfig config = TestEngineConfig(37);
  config.kv_cache_memory_bytes += testing::BytesPerBlock() - 1;  // not quite one more block
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->stats().kv_blocks_total, 37);
  EXPECT_EQ(engine->tokenizer(), nullptr);
  EXPECT_EQ(engine->model_config().vocab_size, testing::kVocab);
}

TEST(EngineCreateTest, EosIdsComeFromGenerationConfigListsToo) {
  EngineConfig config = TestEngineConfig(32);
  config.model_dir = ModelDirWithGenerationConfig(R"({"eos_token_id": [1, 7]})");
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  Request request = GreedyRequest({5, 6, 9}, 8);
  request.params.ignore_eos = false;
  request.params.logit_bias[7] = 100.0f;
  const Collected c = RunAlone(*engine, request);
  EXPECT_EQ(c.tokens[0], std::vector<int32_t>{7});
  EXPECT_EQ(c.finish[0], FinishReason::kStop);
}

TEST(EngineCreateTest, ErrorsNameTheBadSetting) {
  EngineConfig config = TestEngineConfig(32);
  config.kv_cache_memory_bytes = testing::BytesPerBlock() - 1;
  auto too_small = Engine::Create(config);
  ASSERT_FALSE(too_small.ok());
  EXPECT_TRUE(absl::StrContains(too_small.status().message(), "kv_cache_memory_bytes"))
      << too_small.status();

  config = TestEngineConfig(32);
  config.max_model_len = 513;
  auto too_long = Engine::Create(config);
  ASSERT_FALSE(too_long.ok());
  EXPECT_TRUE(absl::StrContains(too_long.status().message(), "max_model_len")) << too_long.status();

  config = TestEngineConfig(32);
  config.block_size = 0;
  EXPECT_EQ(Engine::Create(config).status().code(), absl::StatusCode::kInvalidArgument);

  config = TestEngineConfig(32);
  config.model_dir = ModelDirWithGenerationConfig(R"({"eos_token_id": [1, 99999]})");
  auto bad_eos = Engine::Create(config);
  ASSERT_FALSE(bad_eos.ok());
  EXPECT_TRUE(absl::StrContains(bad_eos.status().message(), "generation_config.json"))
      << bad_eos.status();

  config = TestEngineConfig(32);
  config.model_dir = r2::testing::MakeTempDir("engine-empty");
  EXPECT_FALSE(Engine::Create(config).ok());
}

TEST(EngineCreateTest, NotifierRunsForEveryDeliveryAndNextTimesOut) {
  absl::Notification notifier_set;
  EngineConfig config = TestEngineConfig(32);
  config.before_forward = [&](uint64_t) {
    notifier_set.WaitForNotification();  // no output before the notifier is in place
    return absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  auto handle = engine->Submit(GreedyRequest({5, 6, 7}, 3));
  ASSERT_TRUE(handle.ok());
  std::atomic<int> notified{0};
  (*handle)->SetNotifier([&] { ++notified; });
  notifier_set.Notify();
  const Collected c = testing::Collect(**handle);
  EXPECT_EQ(c.tokens[0].size(), 3u);
  RequestOutput out;
  EXPECT_FALSE((*handle)->Next(&out, absl::Now() + absl::Milliseconds(1))) << "everything was read";
  (*handle)->Close();  // after the end: nothing to abort
  EXPECT_EQ(testing::SettledStats(*engine).requests_finished_abort, 0u);
  EXPECT_GE(c.events, 1);
  EXPECT_GE(notified.load(), c.events) << "one notification per delivery; reads may merge them";
}

}  // namespace
}  // namespace r2::engine

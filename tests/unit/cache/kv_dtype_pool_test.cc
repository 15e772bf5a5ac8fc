// The KV block pool sized for the cache format (EngineConfig::kv_cache_dtype): the same memory
// budget holds 2x the blocks in bf16 and (for the tiny model's 64 + 16 rows) 3.2x in fp8 (3.5x
// at DeepSeek-V3's 512 + 64); an engine generates over each format; bad values and devices that
// cannot read a format are refused before any device is touched.
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "engine/cache/block_pool.h"
#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::BytesPerBlock;
using testing::GreedyRequest;
using testing::MakeEngine;
using testing::RunAlone;
using testing::TestEngineConfig;

TEST(KvDtypePoolTest, BytesPerTokenAreTheFormatsRealBytes) {
  model::ModelConfig v3;
  v3.num_hidden_layers = 61;
  v3.num_nextn_predict_layers = 1;
  v3.kv_lora_rank = 512;
  v3.qk_rope_head_dim = 64;
  EXPECT_EQ(KvBytesPerToken(v3), 62 * 2304);
  EXPECT_EQ(KvBytesPerToken(v3, KvCacheDType::kFloat32), 62 * 2304);
  EXPECT_EQ(KvBytesPerToken(v3, KvCacheDType::kBF16), 62 * 1152);
  EXPECT_EQ(KvBytesPerToken(v3, KvCacheDType::kFp8E4M3), 62 * 656);
  // One budget, three pools: 2x and ~3.5x the blocks of float32.
  const int64_t budget = int64_t{40} << 30;
  auto blocks = [&](KvCacheDType dtype) {
    absl::StatusOr<int32_t> n = cache::NumBlocksForBudget(budget, KvBytesPerToken(v3, dtype), 64);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : 0;
  };
  const int32_t f32 = blocks(KvCacheDType::kFloat32);
  EXPECT_EQ(blocks(KvCacheDType::kBF16), budget / (62 * 1152 * 64));
  EXPECT_GE(blocks(KvCacheDType::kBF16), 2 * f32);
  EXPECT_GE(blocks(KvCacheDType::kFp8E4M3), 35 * f32 / 10);  // 2304 / 656 = 3.51
}

TEST(KvDtypePoolTest, EngineHoldsMoreBlocksInTheSameBudgetAndGenerates) {
  const int32_t f32_blocks = 30;
  std::vector<std::vector<int32_t>> outputs;
  for (const char* dtype : {"auto", "float32", "bf16", "fp8"}) {
    EngineConfig config = TestEngineConfig(f32_blocks);
    config.kv_cache_dtype = dtype;
    auto engine = MakeEngine(config);
    ASSERT_NE(engine, nullptr) << dtype;
    const int32_t blocks = engine->stats().kv_blocks_total;
    const std::string name = dtype;
    if (name == "auto" || name == "float32") EXPECT_EQ(blocks, f32_blocks) << dtype;
    // The tiny model's row: 64 latent + 16 rope values = 320 bytes in float32, 160 in bf16,
    // 64 + 4 (one scale) + 32 = 100 in fp8.
    if (name == "bf16") EXPECT_EQ(blocks, 2 * f32_blocks);
    if (name == "fp8") EXPECT_EQ(blocks, f32_blocks * 320 / 100);
    const testing::Collected c = RunAlone(*engine, GreedyRequest({5, 6, 9, 11, 12, 40, 7}, 12));
    ASSERT_EQ(c.tokens.size(), 1u);
    EXPECT_EQ(c.tokens[0].size(), 12u) << dtype;
    EXPECT_EQ(c.finish[0], FinishReason::kLength) << dtype;
    outputs.push_back(c.tokens[0]);
  }
  EXPECT_EQ(outputs[0], outputs[1]);  // auto is float32 on the CPU
}

TEST(KvDtypePoolTest, BadValueIsRefusedNamingTheFlag) {
  EngineConfig config = TestEngineConfig(8);
  config.kv_cache_dtype = "fp16";
  auto engine = Engine::Create(config);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(engine.status().message(), "--kv-cache-dtype")) << engine.status();
  EXPECT_TRUE(absl::StrContains(engine.status().message(), "auto, float32, bf16 or fp8"))
      << engine.status();
}

TEST(KvDtypePoolTest, CudaIsRefusedBf16AndFp8BeforeTheDeviceIsTouched) {
  // Without a GPU (or a CUDA build) the device itself would answer Unavailable: InvalidArgument
  // about the flag proves the check ran first.
  for (const char* device : {"cuda", "cuda-fp32"}) {
    for (const char* dtype : {"bf16", "fp8"}) {
      EngineConfig config = TestEngineConfig(8);
      config.device = device;
      config.kv_cache_dtype = dtype;
      auto engine = Engine::Create(config);
      ASSERT_FALSE(engine.ok());
      EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << engine.status();
      EXPECT_TRUE(absl::StrContains(engine.status().message(), "--kv-cache-dtype"))
          << engine.status();
      EXPECT_TRUE(absl::StrContains(engine.status().message(), "auto or float32"))
          << engine.status();
    }
  }
}

}  // namespace
}  // namespace r2::engine

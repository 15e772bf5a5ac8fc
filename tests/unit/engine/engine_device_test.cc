// EngineConfig::device: the engine on a backend whose memory is not host memory (checked-memory,
// the CPU stand-in for a GPU) generates exactly what it generates on the CPU reference, prefix
// sharing and copy-on-write block copies included; the KV pool of a device backend is sized from
// its free memory; an unknown or unavailable device fails Create with a clear status.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::Collect;
using testing::Collected;
using testing::GreedyRequest;
using testing::MakeEngine;
using testing::RandomPrompt;
using testing::TestEngineConfig;

std::vector<std::vector<int32_t>> GenerateAll(const std::string& device,
                                              const std::vector<Request>& requests) {
  EngineConfig config = TestEngineConfig(48);
  config.device = device;
  auto engine = MakeEngine(config);
  if (engine == nullptr) return {};
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (const Request& request : requests) {
    auto handle = engine->Submit(request);
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (handle.ok()) handles.push_back(*handle);
  }
  std::vector<std::vector<int32_t>> tokens;
  for (auto& handle : handles) {
    Collected c = Collect(*handle);
    EXPECT_FALSE(c.timed_out);
    EXPECT_EQ(c.error[0], "") << device;
    tokens.push_back(c.tokens[0]);
  }
  return tokens;
}

TEST(EngineDeviceTest, CheckedMemoryGeneratesWhatTheReferenceDoes) {
  std::mt19937 rng(5);
  const std::vector<int32_t> shared = RandomPrompt(rng, 40);  // 2.5 blocks of 16: shared prefix
  std::vector<Request> requests;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prompt = shared;
    if (i % 2 == 1) {
      const std::vector<int32_t> tail = RandomPrompt(rng, 3 + i);
      prompt.insert(prompt.end(), tail.begin(), tail.end());
    }
    requests.push_back(GreedyRequest(prompt, 6 + i));
  }
  const auto reference = GenerateAll("cpu-reference", requests);
  const auto device = GenerateAll("checked-memory", requests);
  ASSERT_EQ(reference.size(), requests.size());
  EXPECT_EQ(device, reference);
}

TEST(EngineDeviceTest, DevicePoolIsAFractionOfFreeMemory) {
  EngineConfig config = TestEngineConfig(8);
  config.device = "checked-memory";
  config.kv_cache_memory_bytes = 0;
  config.gpu_memory_utilization = 0.05;
  auto backend = MakeBackend("checked-memory");
  ASSERT_TRUE(backend.ok());
  auto total = (*backend)->QueryMemory();
  ASSERT_TRUE(total.ok());
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  // 5% of what is free after the (small) weights: just under 5% of the total.
  const int64_t budget = engine->config().kv_cache_memory_bytes;
  EXPECT_LE(budget, total->free_bytes / 20);
  EXPECT_GT(budget, total->free_bytes / 25);
  EXPECT_EQ(engine->stats().kv_blocks_total, budget / testing::BytesPerBlock());
  // On a host backend 0 means 1 GiB.
  config.device = "cpu-reference";
  auto host = MakeEngine(config);
  ASSERT_NE(host, nullptr);
  EXPECT_EQ(host->config().kv_cache_memory_bytes, int64_t{1} << 30);
}

TEST(EngineDeviceTest, UnknownOrUnavailableDevicesFailCreate) {
  EngineConfig config = TestEngineConfig(8);
  config.device = "tpu";
  auto unknown = Engine::Create(config);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument) << unknown.status();
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "tpu")) << unknown.status();
  config.device = "checked-memory";
  config.gpu_memory_utilization = 1.5;
  EXPECT_EQ(Engine::Create(config).status().code(), absl::StatusCode::kInvalidArgument);
  config.gpu_memory_utilization = 0.9;
  config.device = "cuda";
  if (MakeBackend("cuda").ok()) GTEST_SKIP() << "a CUDA device is present";
  auto cuda = Engine::Create(config);
  EXPECT_EQ(cuda.status().code(), absl::StatusCode::kUnavailable) << cuda.status();
}

}  // namespace
}  // namespace r2::engine

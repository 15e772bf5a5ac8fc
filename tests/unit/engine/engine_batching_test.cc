// The engine's batching guarantees on a tiny model: a request's greedy tokens do not depend on
// what else runs (also under preemption), prefix-cache hits change neither tokens nor logprobs,
// seeded sampling is batch-invariant, and n > 1 choices share their prompt's blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::Collect;
using testing::Collected;
using testing::ExpectPoolClean;
using testing::GreedyRequest;
using testing::MakeEngine;
using testing::RandomPrompt;
using testing::RunAlone;
using testing::SettledStats;
using testing::TestEngineConfig;

// 64 requests: prompts of 5..80 tokens, 1..12 output tokens.
std::vector<Request> MixedGreedyRequests() {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> length(5, 80), outputs(1, 12);
  std::vector<Request> requests;
  for (int i = 0; i < 64; ++i) {
    const int32_t prompt_len = length(rng);
    requests.push_back(GreedyRequest(RandomPrompt(rng, prompt_len), outputs(rng)));
  }
  return requests;
}

std::vector<Collected> RunConcurrently(Engine& engine, const std::vector<Request>& requests) {
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (const Request& request : requests) {
    auto handle = engine.Submit(request);
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (handle.ok()) handles.push_back(*handle);
  }
  std::vector<Collected> results;
  for (size_t i = 0; i < handles.size(); ++i) {
    results.push_back(Collect(*handles[i], requests[i].params.n));
  }
  return results;
}

// Each request run alone, one at a time, on an engine with the 24-block pool of the preemption
// test (computed once). Alone, a request never preempts and never meets another request's prefix
// (random prompts), so the larger pool of the other test runs it exactly the same way.
const std::vector<Collected>& SoloRuns(const std::vector<Request>& requests) {
  static const std::vector<Collected> solo = [&] {
    std::vector<Collected> runs;
    auto engine = MakeEngine(TestEngineConfig(24));
    EXPECT_NE(engine, nullptr);
    if (engine == nullptr) return runs;
    for (const Request& request : requests) runs.push_back(RunAlone(*engine, request));
    return runs;
  }();
  return solo;
}

void ExpectConcurrentMatchesAlone(int32_t num_blocks, bool expect_preemption) {
  const std::vector<Request> requests = MixedGreedyRequests();
  const std::vector<Collected>& alone = SoloRuns(requests);
  ASSERT_EQ(alone.size(), requests.size());
  auto engine = MakeEngine(TestEngineConfig(num_blocks));
  ASSERT_NE(engine, nullptr);
  const std::vector<Collected> together = RunConcurrently(*engine, requests);
  ASSERT_EQ(together.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(together[i].tokens[0], alone[i].tokens[0]) << "request " << i;
    EXPECT_EQ(static_cast<int32_t>(together[i].tokens[0].size()), *requests[i].params.max_tokens);
    EXPECT_EQ(together[i].finish[0], FinishReason::kLength);
  }
  const EngineStats stats = SettledStats(*engine);
  if (expect_preemption) {
    EXPECT_GT(stats.preemptions, 0u);
  }
  EXPECT_EQ(stats.requests_finished_length, requests.size());
  ExpectPoolClean(*engine);
}

TEST(EngineBatchingTest, ConcurrentGreedyRequestsMatchTheirSoloRuns) {
  ExpectConcurrentMatchesAlone(/*num_blocks=*/512, /*expect_preemption=*/false);
}

TEST(EngineBatchingTest, ConcurrentGreedyRequestsMatchUnderPreemption) {
  // 64 requests of up to 6 blocks each in 24 blocks: decodes run out of blocks and preempt.
  ExpectConcurrentMatchesAlone(/*num_blocks=*/24, /*expect_preemption=*/true);
}

TEST(EngineBatchingTest, PrefixCacheHitsKeepTokensAndLogprobs) {
  std::mt19937 rng(7);
  const std::vector<int32_t> prefix = RandomPrompt(rng, 3 * testing::kBlockSize);
  std::vector<Request> requests;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prompt = prefix;
    const std::vector<int32_t> suffix = RandomPrompt(rng, 3 + i);
    prompt.insert(prompt.end(), suffix.begin(), suffix.end());
    Request request = GreedyRequest(prompt, 6);
    request.params.logprobs = true;
    requests.push_back(request);
  }
  EngineConfig cold_config = TestEngineConfig(64);
  cold_config.enable_prefix_caching = false;
  auto cold = MakeEngine(cold_config);
  auto warm = MakeEngine(TestEngineConfig(64));
  ASSERT_NE(cold, nullptr);
  ASSERT_NE(warm, nullptr);
  std::vector<Collected> reference;
  for (const Request& request : requests) reference.push_back(RunAlone(*cold, request));
  EXPECT_EQ(SettledStats(*cold).prefix_cache_hits, 0u);

  const Collected first = RunAlone(*warm, requests[0]);  // fills the cache
  EXPECT_EQ(first.usage->cached_tokens, 0);
  const EngineStats before = SettledStats(*warm);
  std::vector<Request> rest(requests.begin() + 1, requests.end());
  std::vector<Collected> hits = RunConcurrently(*warm, rest);
  hits.insert(hits.begin(), first);
  const EngineStats after = SettledStats(*warm);
  EXPECT_GT(after.prefix_cache_queries, before.prefix_cache_queries);
  EXPECT_GE(after.prefix_cache_hits - before.prefix_cache_hits, 5u * prefix.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    if (i > 0) {
      ASSERT_TRUE(hits[i].usage.has_value());
      EXPECT_EQ(hits[i].usage->cached_tokens, static_cast<int32_t>(prefix.size()));
    }
    EXPECT_EQ(hits[i].tokens[0], reference[i].tokens[0]);
    ASSERT_EQ(hits[i].logprobs[0].size(), reference[i].logprobs[0].size());
    for (size_t t = 0; t < hits[i].logprobs[0].size(); ++t) {
      EXPECT_NEAR(hits[i].logprobs[0][t], reference[i].logprobs[0][t], 1e-5) << "token " << t;
    }
  }
  ExpectPoolClean(*warm);
}

TEST(EngineBatchingTest, SeededSamplingIsBatchInvariant) {
  std::mt19937 rng(99);
  Request seeded;
  seeded.prompt = RandomPrompt(rng, 21);
  seeded.params.temperature = 0.8f;
  seeded.params.top_p = 0.9f;
  seeded.params.seed = 7;
  seeded.params.max_tokens = 16;
  seeded.params.ignore_eos = true;
  auto engine = MakeEngine(TestEngineConfig(256));
  ASSERT_NE(engine, nullptr);
  const Collected alone = RunAlone(*engine, seeded);
  ASSERT_EQ(alone.tokens[0].size(), 16u);

  std::vector<Request> batch;
  std::uniform_int_distribution<int32_t> length(4, 60);
  for (int i = 0; i < 15; ++i) {
    Request other;
    other.prompt = RandomPrompt(rng, length(rng));
    other.params.temperature = 1.0f;
    other.params.max_tokens = 4 + i;
    other.params.ignore_eos = true;
    batch.push_back(other);
  }
  batch.insert(batch.begin() + 7, seeded);
  const std::vector<Collected> together = RunConcurrently(*engine, batch);
  EXPECT_EQ(together[7].tokens[0], alone.tokens[0]);
  ExpectPoolClean(*engine);
}

TEST(EngineBatchingTest, ChoicesShareThePromptAndSeededChoicesAreReproducible) {
  std::mt19937 rng(5);
  Request request;
  request.prompt = RandomPrompt(rng, 60);  // 3 full blocks + 12 tokens
  request.params.n = 4;
  request.params.temperature = 1.0f;
  request.params.seed = 7;
  request.params.max_tokens = 4;
  request.params.ignore_eos = true;
  // Each choice needs 4 blocks; unshared, 4 choices would need 16. Shared: 3 + 4 (+ copies).
  auto engine = MakeEngine(TestEngineConfig(12));
  ASSERT_NE(engine, nullptr);
  const Collected first = RunAlone(*engine, request);
  const Collected second = RunAlone(*engine, request);
  std::set<std::vector<int32_t>> distinct;
  for (int c = 0; c < 4; ++c) {
    EXPECT_EQ(first.tokens[c].size(), 4u);
    EXPECT_EQ(first.finish[c], FinishReason::kLength);
    EXPECT_EQ(first.tokens[c], second.tokens[c]) << "choice " << c;
    distinct.insert(first.tokens[c]);
  }
  EXPECT_GT(distinct.size(), 1u) << "seeded choices draw from (seed, choice index)";
  ASSERT_TRUE(first.usage.has_value());
  EXPECT_EQ(first.usage->prompt_tokens, 60);
  EXPECT_EQ(first.usage->completion_tokens, 16);
  const EngineStats stats = SettledStats(*engine);
  EXPECT_EQ(stats.preemptions, 0u) << "the choices did not share the prompt's blocks";
  ExpectPoolClean(*engine);
}

}  // namespace
}  // namespace r2::engine

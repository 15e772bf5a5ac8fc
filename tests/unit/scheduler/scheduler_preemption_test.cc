// Preemption combined with prefix-cache hits and chunked prefill: the places where schedulers of
// this kind have had their bugs. Every step runs through the FakeRunner, whose KV oracle fails the
// test if any sequence ever reads KV through a wrong block.
#include <vector>

#include "engine/scheduler/scheduler.h"
#include "gtest/gtest.h"
#include "tests/unit/scheduler/harness.h"

namespace r2::scheduler {
namespace {

using testing::Harness;
using testing::Range;
using testing::StepRecord;

constexpr int32_t kBlockSize = 4;

SchedulerConfig Config(int32_t max_num_seqs, int32_t max_num_batched_tokens) {
  SchedulerConfig c;
  c.max_num_seqs = max_num_seqs;
  c.max_num_batched_tokens = max_num_batched_tokens;
  c.max_model_len = 1024;
  return c;
}

// Runs two requests with a roomy pool and budget and returns their generated tokens.
std::vector<std::vector<int32_t>> UnconstrainedTokens(int32_t prompt_a, int32_t max_a,
                                                      int32_t prompt_b, int32_t max_b) {
  Harness h(Config(2, 64), 64, kBlockSize);
  const int64_t a = h.Add(Range(1, prompt_a), max_a);
  const int64_t b = h.Add(Range(100, prompt_b), max_b);
  h.RunUntilIdle();
  return {h.runner.tokens(a), h.runner.tokens(b)};
}

// A decode that cannot get a block preempts the newest running sequence (a decoding one). The
// victim later recomputes its prompt and generated tokens, starting from its block that stayed in
// the prefix cache, in chunks, and produces the same tokens as an unconstrained run.
TEST(SchedulerPreemptionTest, DecodePreemptsTheNewestAndItRecomputesFromTheCache) {
  Harness h(Config(2, 4), /*num_blocks=*/4, kBlockSize);
  const int64_t a = h.Add(Range(1, 3), 8);
  const int64_t b = h.Add(Range(100, 5), 5);
  std::vector<StepRecord> steps;
  while (!h.scheduler->idle()) steps.push_back(h.Step());
  ASSERT_EQ(steps.size(), 10u);
  // Step 7: a needs a fifth block for position 8; b (decoding, 4 outputs so far) is the newest.
  const StepRecord& s7 = steps[6];
  EXPECT_EQ(s7.preempted, std::vector<int64_t>{b});
  ASSERT_EQ(s7.chunks.size(), 1u);
  EXPECT_EQ(s7.chunks[0].seq_id, a);
  EXPECT_TRUE(s7.chunks[0].is_decode);
  // Step 8 admits nothing (a still holds every block); a finishes.
  EXPECT_EQ(steps[7].Find(b), nullptr);
  // Step 9: b's first block (tokens 0..3) is still cached (its second block was evicted, tail
  // first); b recomputes positions 4..7 (prompt and generated tokens) within the 4-token budget...
  const StepRecord& s9 = steps[8];
  ASSERT_NE(s9.Find(b), nullptr);
  EXPECT_EQ(s9.Find(b)->start, 4);
  EXPECT_EQ(s9.Find(b)->end, 8);
  EXPECT_FALSE(s9.Find(b)->needs_logits);
  // ... and then the last token, whose logits give its fifth output.
  EXPECT_EQ(steps[9].Find(b)->start, 8);
  EXPECT_TRUE(steps[9].Find(b)->needs_logits);
  EXPECT_EQ(h.scheduler->counters().preemptions, 1u);
  const auto reference = UnconstrainedTokens(3, 8, 5, 5);
  EXPECT_EQ(h.runner.tokens(a), reference[0]);
  EXPECT_EQ(h.runner.tokens(b), reference[1]);
}

// A sequence preempted in the middle of its chunked prefill keeps its computed full blocks in the
// prefix cache; when it is admitted again its prompt hits them and the rest is chunked again.
TEST(SchedulerPreemptionTest, PreemptedMidChunkedPrefillResumesFromTheCacheInChunks) {
  Harness h(Config(2, 2), /*num_blocks=*/3, kBlockSize);
  const int64_t a = h.Add(Range(1, 1), 6);
  const int64_t b = h.Add(Range(100, 8), 1);
  std::vector<StepRecord> steps;
  while (!h.scheduler->idle()) steps.push_back(h.Step());
  ASSERT_EQ(steps.size(), 8u);
  // Steps 1-4: b prefills one token per step next to a's decodes (4 of 8 computed).
  for (int i = 0; i < 4; ++i) {
    ASSERT_NE(steps[i].Find(b), nullptr);
    EXPECT_EQ(steps[i].Find(b)->end, i + 1);
  }
  // Step 5: a takes the last block; b, mid-prefill, cannot get one and is the newest: it yields.
  EXPECT_EQ(steps[4].preempted, std::vector<int64_t>{b});
  EXPECT_EQ(steps[4].Find(b), nullptr);
  // Step 7: b is back with its first block from the cache; the rest comes in 2-token chunks.
  ASSERT_NE(steps[6].Find(b), nullptr);
  EXPECT_EQ(steps[6].Find(b)->start, 4);
  EXPECT_EQ(steps[6].Find(b)->end, 6);
  EXPECT_FALSE(steps[6].Find(b)->needs_logits);
  EXPECT_EQ(steps[7].Find(b)->start, 6);
  EXPECT_EQ(steps[7].Find(b)->end, 8);
  EXPECT_TRUE(steps[7].Find(b)->needs_logits);
  // cached_tokens reports the first admission (nothing was cached then), not the recompute.
  ASSERT_EQ(steps[7].finished.size(), 1u);
  EXPECT_EQ(steps[7].finished[0].num_cached_tokens, 0);
  EXPECT_EQ(h.scheduler->counters().prefix_cache_hits, 4u);
  const auto reference = UnconstrainedTokens(1, 6, 8, 1);
  EXPECT_EQ(h.runner.tokens(a), reference[0]);
  EXPECT_EQ(h.runner.tokens(b), reference[1]);
}

// Admission acquires the blocks its prompt matched before it allocates, so the allocation evicts
// some other cached block, never the ones just matched.
TEST(SchedulerPreemptionTest, EvictionSparesTheBlocksAWaitingSequenceJustMatched) {
  Harness h(Config(2, 64), /*num_blocks=*/4, kBlockSize);
  h.Add(Range(1, 8), 1);
  const std::vector<int32_t> x_blocks = h.Step().chunks.at(0).block_table;
  h.RunUntilIdle();
  h.Add(Range(50, 8), 1);
  h.RunUntilIdle();
  // All four blocks are cached, none free; least recently used first: x's two blocks.
  ASSERT_EQ(h.scheduler->pool().num_free(), 0);
  ASSERT_EQ(h.scheduler->pool().num_cached(), 4);
  std::vector<int32_t> prompt = Range(1, 8);
  prompt.insert(prompt.end(), {7, 7, 7, 7});
  const int64_t z = h.Add(prompt, 1);
  StepRecord s = h.Step();
  ASSERT_NE(s.Find(z), nullptr);
  EXPECT_EQ(s.Find(z)->start, 8);  // x's blocks hit
  EXPECT_EQ(s.Find(z)->block_table[0], x_blocks[0]);
  EXPECT_EQ(s.Find(z)->block_table[1], x_blocks[1]);
  EXPECT_EQ(h.scheduler->pool().num_evictions(), 1);
  // The runner verified z read x's KV through its table; x's prompt still hits both blocks.
  const int64_t again = h.Add(Range(1, 9), 1);
  s = h.Step();
  EXPECT_EQ(s.Find(again)->start, 8);
}

// A decoding sequence that cannot get a block and is itself the newest yields (preempts itself).
// Its recompute covers prompt and generated tokens; the block of its chain that was evicted
// meanwhile (the tail goes first) is recomputed, the head comes from the cache.
TEST(SchedulerPreemptionTest, NewestDecodeYieldsAndRecomputesGeneratedTokens) {
  Harness h(Config(2, 64), /*num_blocks=*/5, kBlockSize);
  const int64_t a = h.Add(Range(1, 4), 12);
  const int64_t b = h.Add(Range(100, 4), 8);
  std::vector<StepRecord> steps;
  while (!h.scheduler->idle()) steps.push_back(h.Step());
  ASSERT_EQ(steps.size(), 15u);
  // Step 6: a takes the last free block for position 8; b needs one for its position 8 too.
  EXPECT_EQ(steps[5].preempted, std::vector<int64_t>{b});
  EXPECT_NE(steps[5].Find(a), nullptr);
  // b waits while a runs to the end (a evicts b's tail block on the way), then recomputes
  // positions 4..8 (prompt token 4 is cached with block 0; 5 generated tokens so far) in one chunk.
  for (int i = 6; i < 12; ++i) EXPECT_EQ(steps[i].Find(b), nullptr);
  ASSERT_NE(steps[12].Find(b), nullptr);
  EXPECT_EQ(steps[12].Find(b)->start, 4);
  EXPECT_EQ(steps[12].Find(b)->end, 9);
  EXPECT_TRUE(steps[12].Find(b)->needs_logits);
  const auto reference = UnconstrainedTokens(4, 12, 4, 8);
  EXPECT_EQ(h.runner.tokens(a), reference[0]);
  EXPECT_EQ(h.runner.tokens(b), reference[1]);
}

// Forked choices under preemption: children recompute on their own and still match.
TEST(SchedulerPreemptionTest, ForkedChoicesSurvivePreemption) {
  Harness h(Config(4, 8), /*num_blocks=*/6, kBlockSize);
  const int64_t first = h.Add(Range(1, 6), 8, /*n=*/3);
  h.RunUntilIdle();
  EXPECT_GT(h.scheduler->counters().preemptions, 0u);
  Harness ref(Config(4, 64), 64, kBlockSize);
  const int64_t ref_first = ref.Add(Range(1, 6), 8, 3);
  ref.RunUntilIdle();
  for (int c = 0; c < 3; ++c)
    EXPECT_EQ(h.runner.tokens(first + c), ref.runner.tokens(ref_first + c));
}

}  // namespace
}  // namespace r2::scheduler

// Step-by-step scheduler tests with fake sequence lengths. Block size 4 keeps the numbers small.
#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/scheduler/harness.h"

namespace r2::scheduler {
namespace {

using testing::ChunkRecord;
using testing::Harness;
using testing::Range;
using testing::StepRecord;

constexpr int32_t kBlockSize = 4;

SchedulerConfig Config(int32_t max_num_seqs, int32_t max_num_batched_tokens,
                       int32_t max_model_len = 1024) {
  SchedulerConfig c;
  c.max_num_seqs = max_num_seqs;
  c.max_num_batched_tokens = max_num_batched_tokens;
  c.max_model_len = max_model_len;
  return c;
}

TEST(SchedulerTest, PrefillThenDecodeUntilLength) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t a = h.Add(Range(1, 10), /*max_tokens=*/3);
  StepRecord s1 = h.Step();
  ASSERT_EQ(s1.chunks.size(), 1u);
  EXPECT_EQ(s1.chunks[0].start, 0);
  EXPECT_EQ(s1.chunks[0].end, 10);
  EXPECT_TRUE(s1.chunks[0].needs_logits);
  EXPECT_FALSE(s1.chunks[0].is_decode);
  EXPECT_EQ(s1.chunks[0].block_table.size(), 3u);
  StepRecord s2 = h.Step();
  ASSERT_EQ(s2.chunks.size(), 1u);
  EXPECT_EQ(s2.chunks[0].start, 10);
  EXPECT_EQ(s2.chunks[0].end, 11);
  EXPECT_TRUE(s2.chunks[0].is_decode);
  EXPECT_TRUE(s2.finished.empty());
  StepRecord s3 = h.Step();
  ASSERT_EQ(s3.finished.size(), 1u);
  EXPECT_EQ(s3.finished[0].seq_id, a);
  EXPECT_EQ(s3.finished[0].reason, FinishReason::kLength);
  EXPECT_EQ(s3.finished[0].num_output_tokens, 3);
  EXPECT_EQ(s3.finished[0].num_prompt_tokens, 10);
  EXPECT_TRUE(h.scheduler->idle());
  // 12 tokens computed: three full blocks stay in the prefix cache, nothing is in use.
  EXPECT_EQ(h.scheduler->pool().num_in_use(), 0);
  EXPECT_EQ(h.scheduler->pool().num_cached(), 3);
}

TEST(SchedulerTest, StopFromTheCallerEndsTheSequence) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t a = h.Add(Range(1, 5), /*max_tokens=*/20);
  h.runner.stop_rule = [](int64_t, int32_t num_outputs) { return num_outputs == 2; };
  h.Step();
  StepRecord s2 = h.Step();
  ASSERT_EQ(s2.finished.size(), 1u);
  EXPECT_EQ(s2.finished[0].seq_id, a);
  EXPECT_EQ(s2.finished[0].reason, FinishReason::kStop);
  EXPECT_EQ(s2.finished[0].num_output_tokens, 2);
}

TEST(SchedulerTest, ChunkedPrefillWithinTheTokenBudget) {
  Harness h(Config(4, 4), 16, kBlockSize);
  h.Add(Range(1, 10), 2);
  std::vector<std::pair<int32_t, int32_t>> ranges;
  std::vector<bool> logits;
  for (int i = 0; i < 3; ++i) {
    StepRecord s = h.Step();
    ASSERT_EQ(s.chunks.size(), 1u);
    ranges.emplace_back(s.chunks[0].start, s.chunks[0].end);
    logits.push_back(s.chunks[0].needs_logits);
  }
  EXPECT_EQ(ranges, (std::vector<std::pair<int32_t, int32_t>>{{0, 4}, {4, 8}, {8, 10}}));
  EXPECT_EQ(logits, (std::vector<bool>{false, false, true}));
  h.RunUntilIdle();
}

TEST(SchedulerTest, DecodesComeFirstThenPrefillGetsTheRest) {
  Harness h(Config(4, 8), 32, kBlockSize);
  const int64_t a = h.Add(Range(1, 4), 10);
  h.Step();
  const int64_t b = h.Add(Range(100, 12), 10);
  StepRecord s = h.Step();
  ASSERT_EQ(s.chunks.size(), 2u);
  EXPECT_EQ(s.chunks[0].seq_id, a);
  EXPECT_TRUE(s.chunks[0].is_decode);
  EXPECT_EQ(s.chunks[1].seq_id, b);
  EXPECT_EQ(s.chunks[1].start, 0);
  EXPECT_EQ(s.chunks[1].end, 7);  // 8 - 1 decode token
  EXPECT_EQ(s.num_batched_tokens, 8);
  // The chunked prefill continues before anything new is admitted.
  const int64_t c = h.Add(Range(200, 4), 1);
  StepRecord s3 = h.Step();
  ASSERT_NE(s3.Find(b), nullptr);
  EXPECT_EQ(s3.Find(b)->start, 7);
  EXPECT_EQ(s3.Find(b)->end, 12);
  ASSERT_NE(s3.Find(c), nullptr);
  EXPECT_EQ(s3.Find(c)->end, 2);  // 8 - 1 (a) - 5 (b)
  h.RunUntilIdle();
}

TEST(SchedulerTest, MaxNumSeqsBoundsRunningSequences) {
  Harness h(Config(2, 64), 32, kBlockSize);
  h.Add(Range(1, 4), 3);
  h.Add(Range(10, 4), 3);
  const int64_t c = h.Add(Range(20, 4), 3);
  StepRecord s = h.Step();
  EXPECT_EQ(s.chunks.size(), 2u);
  EXPECT_EQ(s.Find(c), nullptr);
  EXPECT_EQ(h.scheduler->num_waiting(), 1);
  h.RunUntilIdle();
  EXPECT_EQ(h.live.size(), 0u);
}

TEST(SchedulerTest, LowerPriorityValueFirstThenFcfs) {
  Harness h(Config(1, 64), 32, kBlockSize);
  const int64_t a = h.Add(Range(1, 4), 2, 1, /*priority=*/5);
  const int64_t b = h.Add(Range(10, 4), 2, 1, /*priority=*/1);
  const int64_t c = h.Add(Range(20, 4), 2, 1, /*priority=*/1);
  std::vector<int64_t> order;
  while (!h.scheduler->idle()) {
    for (const ChunkRecord& chunk : h.Step().chunks) {
      if (chunk.start == 0) order.push_back(chunk.seq_id);
    }
  }
  EXPECT_EQ(order, (std::vector<int64_t>{b, c, a}));
}

TEST(SchedulerTest, PrefixCacheHitAcrossRequests) {
  Harness h(Config(4, 64), 16, kBlockSize);
  h.Add(Range(1, 10), 1);
  h.RunUntilIdle();
  std::vector<int32_t> prompt = Range(1, 10);
  prompt.push_back(99);
  prompt.push_back(98);
  const int64_t b = h.Add(prompt, 1);
  StepRecord s = h.Step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].start, 8);  // two full blocks hit
  EXPECT_EQ(s.chunks[0].end, 12);
  ASSERT_EQ(s.finished.size(), 1u);
  EXPECT_EQ(s.finished[0].seq_id, b);
  EXPECT_EQ(s.finished[0].num_cached_tokens, 8);
  EXPECT_EQ(h.scheduler->counters().prefix_cache_queries, 22u);
  EXPECT_EQ(h.scheduler->counters().prefix_cache_hits, 8u);
}

TEST(SchedulerTest, CacheSaltSeparatesPrefixes) {
  Harness h(Config(4, 64), 16, kBlockSize);
  SchedulerRequest r;
  r.prompt = Range(1, 10);
  r.max_tokens = 1;
  r.cache_salt = "tenant-a";
  h.Add(r);
  h.RunUntilIdle();
  r.cache_salt = "tenant-b";
  h.Add(r);
  StepRecord s = h.Step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].start, 0);
  r.cache_salt = "tenant-a";
  h.Add(r);
  s = h.Step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].start, 8);
}

// A hit that covers every full block of the prompt still computes the last token (for its logits),
// recomputing the last block when the prompt ends on a block boundary.
TEST(SchedulerTest, CacheHitCoveringTheWholePrompt) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t a = h.Add(Range(1, 8), 1);
  h.RunUntilIdle();
  const int64_t b = h.Add(Range(1, 8), 1);
  StepRecord s = h.Step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].start, 4);
  EXPECT_EQ(s.chunks[0].end, 8);
  EXPECT_TRUE(s.chunks[0].needs_logits);
  EXPECT_EQ(h.runner.tokens(a), h.runner.tokens(b));  // same prefix, same first token
  // Prompt not on a boundary: every full block hits and one token is computed.
  h.Add(Range(1, 9), 1);
  h.RunUntilIdle();
  h.Add(Range(1, 9), 1);
  s = h.Step();
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_EQ(s.chunks[0].start, 8);
  EXPECT_EQ(s.chunks[0].end, 9);
  EXPECT_TRUE(s.chunks[0].needs_logits);
}

TEST(SchedulerTest, ForkSharesPromptBlocksAndCopiesTheSharedLastBlock) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t first = h.Add(Range(1, 6), /*max_tokens=*/3, /*n=*/3);
  // The leader computes all but the last prompt token, without logits.
  StepRecord s1 = h.Step();
  ASSERT_EQ(s1.chunks.size(), 1u);
  EXPECT_EQ(s1.chunks[0].seq_id, first);
  EXPECT_EQ(s1.chunks[0].end, 5);
  EXPECT_FALSE(s1.chunks[0].needs_logits);
  // Then all three compute the last prompt token, each with its own logits row. Block 0 is shared;
  // block 1 (partly filled, shared by three) is copied for the first two writers, and the last one
  // writes in place.
  StepRecord s2 = h.Step();
  ASSERT_EQ(s2.chunks.size(), 3u);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(s2.chunks[c].start, 5);
    EXPECT_EQ(s2.chunks[c].end, 6);
    EXPECT_TRUE(s2.chunks[c].needs_logits);
    EXPECT_EQ(s2.chunks[c].block_table[0], s1.chunks[0].block_table[0]);
  }
  EXPECT_EQ(s2.block_copies.size(), 2u);
  for (const BlockCopy& copy : s2.block_copies) EXPECT_EQ(copy.src, s1.chunks[0].block_table[1]);
  EXPECT_EQ(h.scheduler->counters().block_copies, 2u);
  h.RunUntilIdle();
  // The three choices diverge (the fake sampler mixes in the choice index).
  EXPECT_NE(h.runner.tokens(first), h.runner.tokens(first + 1));
  EXPECT_EQ(h.ended.size(), 3u);
}

TEST(SchedulerTest, ForkOfAOneTokenPrompt) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t first = h.Add({7}, 2, 2);
  StepRecord s1 = h.Step();  // the leader forks at admission: nothing to compute before
  EXPECT_TRUE(s1.chunks.empty());
  StepRecord s2 = h.Step();
  ASSERT_EQ(s2.chunks.size(), 2u);
  EXPECT_EQ(s2.chunks[0].seq_id, first);
  EXPECT_EQ(s2.chunks[1].seq_id, first + 1);
  h.RunUntilIdle();
}

TEST(SchedulerTest, RejectsRequestsThatCanNeverFit) {
  Harness h(Config(4, 64, /*max_model_len=*/64), /*num_blocks=*/8, kBlockSize);
  EXPECT_EQ(h.Add(Range(1, 60), 5), -1);  // prompt + max_tokens > max_model_len
  EXPECT_EQ(h.last_add_status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(h.last_add_status.message().find("max_model_len"), std::string::npos);
  EXPECT_EQ(h.Add(Range(1, 30), 5), -1);  // 34 KV tokens = 9 blocks > 8 in the pool
  EXPECT_NE(h.last_add_status.message().find("blocks"), std::string::npos);
  EXPECT_EQ(h.Add({}, 5), -1);
  EXPECT_EQ(h.Add({1, -2}, 5), -1);
  EXPECT_EQ(h.Add(Range(1, 3), 0), -1);
  EXPECT_EQ(h.Add(Range(1, 3), 4, /*n=*/5), -1);  // n > max_num_seqs
  EXPECT_EQ(h.scheduler->num_waiting(), 0);
  // Exactly the pool: accepted, and it runs to the end alone without preemption.
  EXPECT_GE(h.Add(Range(1, 30), 3), 0);
  h.RunUntilIdle();
  EXPECT_EQ(h.scheduler->counters().preemptions, 0u);
}

TEST(SchedulerTest, AbortWaitingAndRunningEndsEachOnce) {
  Harness h(Config(1, 64), 16, kBlockSize);
  const int64_t a = h.Add(Range(1, 4), 10);
  const int64_t b = h.Add(Range(10, 4), 10);
  h.Step();
  EXPECT_TRUE(h.scheduler->Abort(h.request_of[a]).ok());
  EXPECT_TRUE(h.scheduler->Abort(h.request_of[b]).ok());
  EXPECT_TRUE(h.scheduler->Abort(h.request_of[b]).ok());  // idempotent until it takes effect
  StepRecord s = h.Step();
  EXPECT_TRUE(s.chunks.empty());
  std::sort(s.aborted.begin(), s.aborted.end());
  EXPECT_EQ(s.aborted, (std::vector<int64_t>{a, b}));
  EXPECT_TRUE(h.scheduler->idle());
  EXPECT_EQ(h.scheduler->pool().num_in_use(), 0);
  EXPECT_EQ(h.scheduler->Abort(h.request_of[a]).code(), absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, AbortOfAnUnforkedRequestEndsEveryChoice) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t first = h.Add(Range(1, 9), 4, /*n=*/3);
  ASSERT_TRUE(h.scheduler->Abort(h.request_of[first]).ok());
  StepRecord s = h.Step();
  EXPECT_EQ(s.aborted, (std::vector<int64_t>{first, first + 1, first + 2}));
  EXPECT_TRUE(h.live.empty());
}

TEST(SchedulerTest, AbortDuringTheForkingStepReachesTheChildren) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t first = h.Add(Range(1, 9), 4, /*n=*/2);
  SchedulerOutput out;
  ASSERT_TRUE(h.scheduler->Schedule(&out).ok());
  ASSERT_TRUE(h.scheduler->Abort(h.request_of[first]).ok());  // while the leader's step runs
  std::vector<FinishedSequence> finished;
  ASSERT_TRUE(h.scheduler->Postprocess(h.runner.Run(out), &finished).ok());
  StepRecord s = h.Step();
  std::sort(s.aborted.begin(), s.aborted.end());
  EXPECT_EQ(s.aborted, (std::vector<int64_t>{first, first + 1}));
  EXPECT_TRUE(h.scheduler->idle());
}

TEST(SchedulerTest, CallsOutOfOrderAreRejected) {
  Harness h(Config(4, 64), 16, kBlockSize);
  const int64_t a = h.Add(Range(1, 5), 3);
  std::vector<FinishedSequence> finished;
  EXPECT_EQ(h.scheduler->Postprocess({}, &finished).code(), absl::StatusCode::kFailedPrecondition);
  SchedulerOutput out;
  ASSERT_TRUE(h.scheduler->Schedule(&out).ok());
  EXPECT_EQ(h.scheduler->Schedule(&out).code(), absl::StatusCode::kFailedPrecondition);
  // Wrong token lists change nothing.
  EXPECT_EQ(h.scheduler->Postprocess({}, &finished).code(), absl::StatusCode::kInvalidArgument);
  const SampledToken wrong_seq{a + 100, 1, false};
  EXPECT_EQ(h.scheduler->Postprocess({&wrong_seq, 1}, &finished).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(h.scheduler->Postprocess(h.runner.Run(out), &finished).ok());
  EXPECT_TRUE(h.scheduler->CheckIntegrity().ok());
  h.RunUntilIdle();
}

TEST(SchedulerTest, AbortAllEndsEverythingOnce) {
  Harness h(Config(2, 8), 16, kBlockSize);
  h.Add(Range(1, 6), 5, 2);
  h.Add(Range(10, 12), 5);
  h.Add(Range(30, 3), 5);
  h.Step();
  h.scheduler->AbortAll();
  StepRecord s = h.Step();
  EXPECT_EQ(s.aborted.size(), 4u);
  EXPECT_TRUE(h.live.empty());
  EXPECT_TRUE(h.scheduler->idle());
}

TEST(SequenceStateTest, TransitionTable) {
  using S = SequenceState;
  const S all[] = {S::kWaiting, S::kPrefilling, S::kDecoding, S::kFinished, S::kAborted};
  std::set<std::pair<S, S>> allowed = {
      {S::kWaiting, S::kPrefilling},  {S::kWaiting, S::kAborted},     {S::kPrefilling, S::kWaiting},
      {S::kPrefilling, S::kDecoding}, {S::kPrefilling, S::kFinished}, {S::kPrefilling, S::kAborted},
      {S::kDecoding, S::kWaiting},    {S::kDecoding, S::kFinished},   {S::kDecoding, S::kAborted}};
  for (S from : all) {
    for (S to : all) {
      EXPECT_EQ(IsAllowedTransition(from, to), allowed.contains({from, to}))
          << SequenceStateName(from) << " -> " << SequenceStateName(to);
    }
  }
}

TEST(SchedulerTest, CreateRejectsBadConfig) {
  auto pool = [] { return *cache::BlockPool::Create(8, kBlockSize); };
  EXPECT_FALSE(Scheduler::Create(Config(0, 64), pool()).ok());
  EXPECT_FALSE(Scheduler::Create(Config(8, 4), pool()).ok());
  EXPECT_FALSE(Scheduler::Create(Config(4, 64, 1), pool()).ok());
  SchedulerConfig c = Config(4, 64);
  c.admission_watermark_blocks = 8;
  EXPECT_FALSE(Scheduler::Create(c, pool()).ok());
}

}  // namespace
}  // namespace r2::scheduler

// Request accounting in EngineStats (r2serve_requests_*_total on /metrics): every request Submit
// accepts ends exactly once as stop, length, abort or error, whether it finishes, is closed or
// dropped (also before the engine took it), or is ended by an engine fault; refused requests are
// not counted; the KV pool self-check counters.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::Collect;
using testing::Collected;
using testing::GreedyRequest;
using testing::MakeEngine;
using testing::RandomPrompt;
using testing::TestEngineConfig;

uint64_t Ended(const EngineStats& s) {
  return s.requests_finished_stop + s.requests_finished_length + s.requests_finished_abort +
         s.requests_finished_error;
}

// The stats once every accepted request has ended (the ends are published by the engine thread
// after it applied the last abort), or the last snapshot at the deadline.
EngineStats StatsWhenAllEnded(Engine& engine) {
  const absl::Time deadline = absl::Now() + testing::WaitLimit();
  EngineStats s = engine.stats();
  while (Ended(s) < s.requests_accepted && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));  // polling the published snapshot
    s = engine.stats();
  }
  return s;
}

TEST(EngineAccountingTest, AcceptedEqualsCompletedPlusAbortedPlusErrored) {
  auto engine = MakeEngine(TestEngineConfig(64));
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(5);
  // Refused requests are not accepted: an empty prompt and one over the KV pool.
  EXPECT_FALSE(engine->Submit(GreedyRequest({}, 4)).ok());
  EXPECT_FALSE(engine->Submit(GreedyRequest(RandomPrompt(rng, 8), 5000)).ok());

  std::vector<std::shared_ptr<RequestHandle>> kept;
  std::vector<std::shared_ptr<RequestHandle>> to_close;
  int accepted = 0;
  for (int i = 0; i < 30; ++i) {
    auto handle = engine->Submit(GreedyRequest(RandomPrompt(rng, 4 + i % 7), 6 + i % 5));
    ASSERT_TRUE(handle.ok()) << handle.status();
    ++accepted;
    if (i % 5 == 0) continue;  // dropped at once: aborted whether or not the engine took it
    (i % 3 == 0 ? to_close : kept).push_back(*std::move(handle));
  }
  for (auto& handle : to_close) {  // closed after their first output: aborted while running
    RequestOutput out;
    EXPECT_TRUE(handle->Next(&out, absl::Now() + testing::WaitLimit()));
    handle->Close();
  }
  int finished = 0;
  for (auto& handle : kept) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_TRUE(c.finish[0] == FinishReason::kLength || c.finish[0] == FinishReason::kStop);
    ++finished;
  }

  const EngineStats s = StatsWhenAllEnded(*engine);
  EXPECT_EQ(s.requests_accepted, static_cast<uint64_t>(accepted));
  EXPECT_EQ(Ended(s), s.requests_accepted);
  EXPECT_GE(s.requests_finished_stop + s.requests_finished_length, static_cast<uint64_t>(finished));
  EXPECT_EQ(s.requests_finished_error, 0u);
  EXPECT_LE(s.requests_finished_abort, static_cast<uint64_t>(accepted - finished));
  // The scheduler turned idle at least once, so the pool check ran, and it passed.
  EXPECT_TRUE(engine->CheckIntegrity().ok());
  const EngineStats after = engine->stats();
  EXPECT_GE(after.integrity_checks, 1u);
  EXPECT_EQ(after.integrity_failures, 0u);
  EXPECT_EQ(after.kv_blocks_used, 0);
}

TEST(EngineAccountingTest, RequestsEndedByAFaultCountAsErrored) {
  // Start gate: the first forward waits until every request is submitted, so none is refused.
  // The failing step submits one more request from the hook: it is accepted (the engine is not
  // marked faulted yet) and reaches the engine thread only after the fault, which ends it
  // without running it.
  struct Shared {
    absl::Notification all_submitted;
    std::atomic<Engine*> engine{nullptr};
    absl::StatusOr<std::shared_ptr<RequestHandle>> late = absl::UnknownError("not submitted");
    absl::Notification late_submitted;
  };
  auto shared = std::make_shared<Shared>();
  EngineConfig config = TestEngineConfig(64);
  config.before_forward = [shared](uint64_t step) -> absl::Status {
    if (!shared->all_submitted.WaitForNotificationWithTimeout(testing::WaitLimit())) {
      return absl::DeadlineExceededError("the test never opened the start gate");
    }
    if (step != 2) return absl::OkStatus();
    shared->late = shared->engine.load()->Submit(GreedyRequest({7, 8, 9}, 5));
    shared->late_submitted.Notify();
    return absl::InternalError("injected fault");
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  shared->engine = engine.get();
  std::mt19937 rng(6);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 6; ++i) {
    auto handle = engine->Submit(GreedyRequest(RandomPrompt(rng, 5 + i), 50));
    ASSERT_TRUE(handle.ok()) << handle.status();
    handles.push_back(*std::move(handle));
  }
  shared->all_submitted.Notify();
  ASSERT_TRUE(shared->late_submitted.WaitForNotificationWithTimeout(testing::WaitLimit()));
  ASSERT_TRUE(shared->late.ok()) << shared->late.status();
  handles.push_back(*shared->late);
  for (auto& handle : handles) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_EQ(c.finish[0], FinishReason::kError);
  }
  const EngineStats s = StatsWhenAllEnded(*engine);
  EXPECT_EQ(s.requests_accepted, 7u);
  EXPECT_EQ(s.requests_finished_error, 7u);
  EXPECT_EQ(Ended(s), 7u);
  EXPECT_EQ(s.integrity_failures, 0u);  // a forward fault is not a pool inconsistency
  engine->Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace r2::engine

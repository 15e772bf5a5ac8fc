// The engine watchdog (EngineConfig::watchdog_timeout): a step that never returns (a fake forward
// pass blocked on a latch) makes the engine unhealthy and ends every live request with an error
// without waiting for the step; steps that are slow but each under the timeout never trip it.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/match.h"
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

// The latch a fake forward pass blocks on, and a notification that the block has begun.
struct Latch {
  absl::Notification blocked;  // the engine thread is inside the stuck step
  absl::Notification release;  // the test lets it return
};

std::vector<std::shared_ptr<RequestHandle>> SubmitAll(Engine& engine, int count, int32_t max_tokens,
                                                      int n = 1) {
  std::mt19937 rng(7);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < count; ++i) {
    Request request = GreedyRequest(RandomPrompt(rng, 4 + i), max_tokens);
    request.params.n = n;
    auto handle = engine.Submit(std::move(request));
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (handle.ok()) handles.push_back(*handle);
  }
  return handles;
}

TEST(EngineWatchdogTest, StuckStepEndsEveryRequestWithAnErrorAndTurnsUnhealthy) {
  auto latch = std::make_shared<Latch>();
  auto submitted = std::make_shared<absl::Notification>();
  EngineConfig config = TestEngineConfig(64);
  config.watchdog_timeout = absl::Milliseconds(1500);
  config.before_forward = [latch, submitted](uint64_t step) -> absl::Status {
    if (!submitted->WaitForNotificationWithTimeout(testing::WaitLimit())) {
      return absl::DeadlineExceededError("the test never submitted");
    }
    if (step == 3) {
      latch->blocked.Notify();
      latch->release.WaitForNotification();
    }
    return absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  auto handles = SubmitAll(*engine, 6, 100);
  auto with_n = SubmitAll(*engine, 1, 100, /*n=*/3);
  submitted->Notify();
  ASSERT_TRUE(latch->blocked.WaitForNotificationWithTimeout(testing::WaitLimit()));
  const absl::Time stuck_at = absl::Now();
  EXPECT_TRUE(engine->healthy());  // not before the timeout: the step has only just begun
  // A request submitted while the step is stuck (it waits in the inbox) ends too.
  auto late = SubmitAll(*engine, 1, 10);
  ASSERT_EQ(late.size(), 1u);
  handles.push_back(late[0]);
  for (auto& handle : handles) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_EQ(c.finish[0], FinishReason::kError);
    EXPECT_TRUE(absl::StrContains(c.error[0], "watchdog")) << c.error[0];
    EXPECT_LT(c.tokens[0].size(), 100u);
  }
  const Collected multi = Collect(*with_n[0], 3);  // one terminal event per choice
  for (int i = 0; i < 3; ++i) EXPECT_EQ(multi.finish[i], FinishReason::kError);
  // The verdict came within the timeout plus a margin for the loaded machine, not at the step's
  // end (the step is still blocked).
  EXPECT_LT(absl::Now() - stuck_at, absl::Milliseconds(1500) + absl::Seconds(5));
  EXPECT_FALSE(latch->release.HasBeenNotified());
  EXPECT_FALSE(engine->healthy());
  EXPECT_TRUE(engine->stalled());
  EXPECT_EQ(engine->Submit(GreedyRequest({3, 4}, 1)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine->CheckIntegrity().code(), absl::StatusCode::kUnavailable);
  // The verdict's accounting: all eight accepted requests ended with an error.
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.requests_accepted, 8u);
  EXPECT_EQ(stats.requests_finished_error, 8u);
  EXPECT_EQ(stats.num_running, 0);
  // Shutdown does not wait for the stuck step.
  engine->Shutdown(absl::Seconds(1));
  // Once the step returns, the engine thread takes the fault path; destroying the engine joins.
  latch->release.Notify();
  engine.reset();
}

TEST(EngineWatchdogTest, SlowStepsUnderTheTimeoutNeverTripIt) {
  EngineConfig config = TestEngineConfig(64);
  config.watchdog_timeout = absl::Milliseconds(1000);
  // 12 steps of at least 150 ms: the requests run well past the timeout in total, each step under.
  config.before_forward = [](uint64_t) -> absl::Status {
    absl::SleepFor(absl::Milliseconds(150));
    return absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  const absl::Time start = absl::Now();
  auto handles = SubmitAll(*engine, 3, 12);
  for (auto& handle : handles) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_EQ(c.finish[0], FinishReason::kLength);
    EXPECT_EQ(c.tokens[0].size(), 12u);
  }
  EXPECT_GT(absl::Now() - start, absl::Milliseconds(1000));
  EXPECT_TRUE(engine->healthy());
  EXPECT_FALSE(engine->stalled());
  testing::ExpectPoolClean(*engine);
  engine->Shutdown(absl::Seconds(1));
}

TEST(EngineWatchdogTest, ShutdownDuringAStuckStepReturnsAtTheVerdict) {
  auto latch = std::make_shared<Latch>();
  EngineConfig config = TestEngineConfig(64);
  config.watchdog_timeout = absl::Milliseconds(300);
  config.before_forward = [latch](uint64_t step) -> absl::Status {
    if (step == 2) {
      latch->blocked.Notify();
      latch->release.WaitForNotification();
    }
    return absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  auto handles = SubmitAll(*engine, 2, 50);
  ASSERT_TRUE(latch->blocked.WaitForNotificationWithTimeout(testing::WaitLimit()));
  engine->Shutdown(testing::WaitLimit());  // the drain cannot finish; the watchdog ends it
  EXPECT_TRUE(engine->stalled());
  for (auto& handle : handles) EXPECT_EQ(Collect(*handle).finish[0], FinishReason::kError);
  latch->release.Notify();
  engine.reset();
}

TEST(EngineWatchdogTest, DisabledWatchdogLeavesALongStepAlone) {
  auto latch = std::make_shared<Latch>();
  EngineConfig config = TestEngineConfig(64);
  config.watchdog_timeout = absl::ZeroDuration();
  config.before_forward = [latch](uint64_t step) -> absl::Status {
    if (step == 2) {
      latch->blocked.Notify();
      latch->release.WaitForNotification();
    }
    return absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  auto handles = SubmitAll(*engine, 1, 8);
  ASSERT_TRUE(latch->blocked.WaitForNotificationWithTimeout(testing::WaitLimit()));
  // Nothing can end the request while the step is held: Next times out.
  RequestOutput out;
  while (handles[0]->Next(&out, absl::Now() + absl::Milliseconds(500))) {
    for (const ChoiceDelta& d : out.choices) ASSERT_EQ(d.finish_reason, FinishReason::kNone);
  }
  EXPECT_TRUE(engine->healthy());
  latch->release.Notify();
  const Collected c = Collect(*handles[0]);
  EXPECT_EQ(c.finish[0], FinishReason::kLength);
  EXPECT_FALSE(engine->stalled());
}

}  // namespace
}  // namespace r2::engine

// Engine faults and shutdown: a failing forward pass ends every request with an error and turns
// the engine unhealthy but responsive; Shutdown finishes or aborts in-flight requests and joins.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::Collect;
using testing::Collected;
using testing::GreedyRequest;
using testing::MakeEngine;
using testing::RandomPrompt;
using testing::TestEngineConfig;

std::vector<std::shared_ptr<RequestHandle>> SubmitAll(Engine& engine, int count, int32_t max_tokens,
                                                      uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < count; ++i) {
    auto handle = engine.Submit(GreedyRequest(RandomPrompt(rng, 5 + i), max_tokens));
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (handle.ok()) handles.push_back(*handle);
  }
  return handles;
}

TEST(EngineFaultTest, ForwardFailureEndsEveryRequestWithAnError) {
  // Start gate: the engine thread holds its first forward until every request is submitted, so
  // the fault at step 3 cannot refuse a later Submit however the threads are scheduled.
  auto all_submitted = std::make_shared<absl::Notification>();
  EngineConfig config = TestEngineConfig(64);
  config.before_forward = [all_submitted](uint64_t step) -> absl::Status {
    if (!all_submitted->WaitForNotificationWithTimeout(testing::WaitLimit())) {
      return absl::DeadlineExceededError("the test never opened the start gate");
    }
    return step == 3 ? absl::InternalError("injected fault") : absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  auto handles = SubmitAll(*engine, 8, 100, 21);
  all_submitted->Notify();
  ASSERT_EQ(handles.size(), 8u);
  for (auto& handle : handles) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_EQ(c.finish[0], FinishReason::kError);
    EXPECT_TRUE(absl::StrContains(c.error[0], "injected fault")) << c.error[0];
    EXPECT_LT(c.tokens[0].size(), 100u);
  }
  EXPECT_FALSE(engine->healthy());
  auto refused = engine->Submit(GreedyRequest({3, 4}, 1));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  // CheckIntegrity answers (whatever the state after the fault) and, running on the engine
  // thread, orders the stats read after the fault's publication.
  engine->CheckIntegrity().IgnoreError();
  EXPECT_EQ(engine->stats().requests_finished_error, 8u);
  engine->Shutdown(absl::Seconds(1));
}

TEST(EngineFaultTest, ShutdownAbortsWhatDoesNotFinishInTime) {
  auto engine = MakeEngine(TestEngineConfig(128));
  ASSERT_NE(engine, nullptr);
  auto handles = SubmitAll(*engine, 12, 300, 22);
  RequestOutput out;
  ASSERT_TRUE(handles[0]->Next(&out, absl::Now() + testing::WaitLimit()));  // running
  engine->Shutdown(absl::Milliseconds(20));  // returns once the thread has joined
  for (auto& handle : handles) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_TRUE(c.finish[0] == FinishReason::kAbort || c.finish[0] == FinishReason::kLength);
  }
  EXPECT_EQ(engine->Submit(GreedyRequest({3, 4}, 1)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(engine->CheckIntegrity().ok());
  EXPECT_EQ(engine->stats().kv_blocks_used, 0);
}

TEST(EngineFaultTest, ShutdownLetsInFlightRequestsFinish) {
  auto engine = MakeEngine(TestEngineConfig(128));
  ASSERT_NE(engine, nullptr);
  auto handles = SubmitAll(*engine, 6, 4, 23);
  engine->Shutdown(testing::WaitLimit());
  for (auto& handle : handles) EXPECT_EQ(Collect(*handle).finish[0], FinishReason::kLength);
  EXPECT_EQ(engine->stats().requests_finished_length, 6u);
}

TEST(EngineFaultTest, DestroyingTheEngineAbortsAndNeverHangs) {
  std::vector<std::shared_ptr<RequestHandle>> handles;
  {
    auto engine = MakeEngine(TestEngineConfig(128));
    ASSERT_NE(engine, nullptr);
    handles = SubmitAll(*engine, 4, 300, 24);
  }
  for (auto& handle : handles) {
    const Collected c = Collect(*handle);
    ASSERT_FALSE(c.timed_out);
    EXPECT_NE(c.finish[0], FinishReason::kNone);
  }
}

}  // namespace
}  // namespace r2::engine

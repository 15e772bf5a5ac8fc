// How requests end: finish reasons, stop tokens and strings, aborts by Close or by dropping the
// handle (also half of 100 at random moments), admission errors and the queue limit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "engine/tokenizer/tokenizer.h"
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

TEST(EngineLifecycleTest, MaxTokensEndsWithLengthAndUsage) {
  auto engine = MakeEngine(TestEngineConfig(64));
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(1);
  const Collected c = RunAlone(*engine, GreedyRequest(RandomPrompt(rng, 9), 5));
  EXPECT_EQ(c.tokens[0].size(), 5u);
  EXPECT_EQ(c.finish[0], FinishReason::kLength);
  EXPECT_TRUE(c.stop_reason[0].empty());
  ASSERT_TRUE(c.usage.has_value());
  EXPECT_EQ(c.usage->prompt_tokens, 9);
  EXPECT_EQ(c.usage->completion_tokens, 5);
  EXPECT_TRUE(c.text[0].empty()) << "no tokenizer, no text";
  EXPECT_EQ(SettledStats(*engine).requests_finished_length, 1u);
  EXPECT_EQ(engine->config().max_model_len, 512) << "the model's max_position_embeddings";
}

TEST(EngineLifecycleTest, StopTokenEndsWithStopAndItsId) {
  auto engine = MakeEngine(TestEngineConfig(64));
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(2);
  const Request base = GreedyRequest(RandomPrompt(rng, 12), 12);
  const Collected free_run = RunAlone(*engine, base);
  ASSERT_EQ(free_run.tokens[0].size(), 12u);
  // The first output position whose token did not occur before it.
  const std::vector<int32_t>& t = free_run.tokens[0];
  size_t at = 1;
  while (at < t.size() && std::find(t.begin(), t.begin() + at, t[at]) != t.begin() + at) ++at;
  ASSERT_LT(at, t.size());
  Request stopping = base;
  stopping.params.stop_token_ids = {t[at]};
  const Collected c = RunAlone(*engine, stopping);
  EXPECT_EQ(c.tokens[0], std::vector<int32_t>(t.begin(), t.begin() + at + 1));
  EXPECT_EQ(c.finish[0], FinishReason::kStop);
  EXPECT_EQ(c.stop_reason[0], absl::StrCat(t[at]));
  EXPECT_EQ(SettledStats(*engine).requests_finished_stop, 1u);
}

TEST(EngineLifecycleTest, EosEndsWithStopUnlessIgnored) {
  auto engine = MakeEngine(TestEngineConfig(64));
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(3);
  Request request = GreedyRequest(RandomPrompt(rng, 7), 8);
  request.params.ignore_eos = false;
  request.params.logit_bias[1] = 100.0f;  // the tiny model's EOS id
  const Collected c = RunAlone(*engine, request);
  EXPECT_EQ(c.tokens[0], std::vector<int32_t>{1});
  EXPECT_EQ(c.finish[0], FinishReason::kStop);
  EXPECT_TRUE(c.stop_reason[0].empty());
  request.params.ignore_eos = true;
  EXPECT_EQ(RunAlone(*engine, request).tokens[0], std::vector<int32_t>(8, 1));
}

TEST(EngineLifecycleTest, StopStringsCutTheTextWhenATokenizerIsPresent) {
  auto engine = MakeEngine(TestEngineConfig(64, /*with_tokenizer=*/true));
  ASSERT_NE(engine, nullptr);
  ASSERT_NE(engine->tokenizer(), nullptr);
  std::mt19937 rng(4);
  Request request = GreedyRequest(RandomPrompt(rng, 10), 24);
  const Collected free_run = RunAlone(*engine, request);
  const std::string& text = free_run.text[0];
  EXPECT_EQ(text, engine->tokenizer()->Decode(free_run.tokens[0], /*skip_special_tokens=*/true));
  // A stop string of 3 ASCII letters from the middle of the text.
  size_t pos = text.size() / 3;
  auto letters = [&](size_t p) {
    return p + 3 <= text.size() && std::all_of(text.begin() + p, text.begin() + p + 3,
                                               [](char ch) { return std::isalpha(ch); });
  };
  while (pos < text.size() && !letters(pos)) ++pos;
  ASSERT_TRUE(letters(pos)) << "no 3 letters in a row in: " << text;
  const std::string stop = text.substr(pos, 3);
  request.params.stop = {stop};
  const Collected c = RunAlone(*engine, request);
  EXPECT_EQ(c.finish[0], FinishReason::kStop);
  EXPECT_EQ(c.stop_reason[0], stop);
  EXPECT_EQ(c.text[0], text.substr(0, text.find(stop)));
  ExpectPoolClean(*engine);
}

TEST(EngineLifecycleTest, AbortingHalfOfHundredRequestsLeavesThePoolClean) {
  EngineConfig config = TestEngineConfig(256);
  config.max_num_seqs = 48;  // the rest wait, so some aborts hit queued requests
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  const EngineStats before = SettledStats(*engine);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> length(4, 24), outputs(6, 24), delay(0, 5);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 100; ++i) {
    auto handle = engine->Submit(GreedyRequest(RandomPrompt(rng, length(rng)), outputs(rng)));
    ASSERT_TRUE(handle.ok()) << handle.status();
    handles.push_back(*handle);
  }
  std::vector<int> order(100);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<bool> closed(100, false);
  std::vector<int> terminal(100, 0);
  int aborted = 0;
  // Reads one event of handle i; false when the request has ended (or the wait failed).
  auto read_event = [&](int i) {
    RequestOutput out;
    if (!handles[i]->Next(&out, absl::Now() + testing::WaitLimit()))
      return std::make_pair(false, 0);
    int32_t tokens = 0;
    for (const ChoiceDelta& d : out.choices) {
      tokens += static_cast<int32_t>(d.token_ids.size());
      if (d.finish_reason == FinishReason::kNone) continue;
      ++terminal[i];
      EXPECT_TRUE(d.finish_reason == FinishReason::kAbort ||
                  d.finish_reason == FinishReason::kLength)
          << FinishReasonName(d.finish_reason);
      aborted += d.finish_reason == FinishReason::kAbort;
    }
    return std::make_pair(!out.finished(), tokens);
  };
  for (int k = 0; k < 50; ++k) {  // close each after a random number of its tokens
    const int i = order[k];
    const int32_t wait_tokens = delay(rng);
    int32_t seen = 0;
    bool live = true;
    while (live && seen < wait_tokens) {
      auto [more, tokens] = read_event(i);
      live = more;
      seen += tokens;
    }
    handles[i]->Close();
    closed[i] = true;
  }
  for (int i = 0; i < 100; ++i) {
    if (!closed[i]) {
      EXPECT_EQ(Collect(*handles[i]).finish[0], FinishReason::kLength) << i;
      continue;
    }
    while (terminal[i] == 0 && read_event(i).first) {
    }
    EXPECT_EQ(terminal[i], 1) << "request " << i;
  }
  EXPECT_GT(aborted, 0);
  const EngineStats after = SettledStats(*engine);
  EXPECT_EQ(after.requests_finished_abort + after.requests_finished_length, 100u);
  EXPECT_EQ(after.kv_blocks_used, before.kv_blocks_used);
  EXPECT_EQ(after.kv_blocks_total, before.kv_blocks_total);
  ExpectPoolClean(*engine);
}

TEST(EngineLifecycleTest, DroppedHandleAbortsItsRequest) {
  auto engine = MakeEngine(TestEngineConfig(64));
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(12);
  {
    auto handle = engine->Submit(GreedyRequest(RandomPrompt(rng, 30), 200));
    ASSERT_TRUE(handle.ok());
    RequestOutput out;
    ASSERT_TRUE((*handle)->Next(&out, absl::Now() + testing::WaitLimit()));
  }  // dropped: aborted at the next step
  // A request submitted after the drop ends after the abort was applied.
  RunAlone(*engine, GreedyRequest(RandomPrompt(rng, 5), 2));
  const EngineStats stats = SettledStats(*engine);
  EXPECT_EQ(stats.requests_finished_abort, 1u);
  ExpectPoolClean(*engine);
}

TEST(EngineLifecycleTest, RequestsThatCanNeverRunAreRejectedWithTheirNumbers) {
  EngineConfig config = TestEngineConfig(8);  // 128 tokens of KV
  config.max_model_len = 200;
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(13);
  auto too_long = engine->Submit(GreedyRequest(RandomPrompt(rng, 150), 60));
  ASSERT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* number : {"150", "60", "200"}) {
    EXPECT_TRUE(absl::StrContains(too_long.status().message(), number)) << too_long.status();
  }
  auto unbounded = engine->Submit(GreedyRequest(RandomPrompt(rng, 200), 1));
  EXPECT_EQ(unbounded.status().code(), absl::StatusCode::kInvalidArgument);
  auto too_big = engine->Submit(GreedyRequest(RandomPrompt(rng, 120), 20));
  ASSERT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* number : {"120", "20", "9", "8"}) {
    EXPECT_TRUE(absl::StrContains(too_big.status().message(), number)) << too_big.status();
  }
  Request no_room = GreedyRequest(RandomPrompt(rng, 100), 1);
  no_room.params.max_tokens.reset();  // the rest of the context: 100 more, 13 blocks
  EXPECT_EQ(engine->Submit(no_room).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(GreedyRequest({}, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(GreedyRequest({5, testing::kVocab}, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  Request with_stop = GreedyRequest({5, 6}, 1);
  with_stop.params.stop = {"x"};
  auto stop = engine->Submit(with_stop);
  EXPECT_EQ(stop.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(stop.status().message(), "tokenizer")) << stop.status();
  Request bad_params = GreedyRequest({5, 6}, 1);
  bad_params.params.top_p = 1.5f;
  EXPECT_EQ(engine->Submit(bad_params).status().code(), absl::StatusCode::kInvalidArgument);
  const EngineStats stats = SettledStats(*engine);
  EXPECT_EQ(stats.steps, 0u) << "nothing reached the scheduler";
}

TEST(EngineLifecycleTest, FullQueueRefusesWithResourceExhausted) {
  absl::Notification entered, release;
  EngineConfig config = TestEngineConfig(64);
  config.max_queued_requests = 2;
  config.before_forward = [&](uint64_t step) {
    if (step == 1) {
      entered.Notify();
      release.WaitForNotification();
    }
    return absl::OkStatus();
  };
  auto engine = MakeEngine(config);
  ASSERT_NE(engine, nullptr);
  std::mt19937 rng(14);
  std::vector<std::shared_ptr<RequestHandle>> handles;
  auto first = engine->Submit(GreedyRequest(RandomPrompt(rng, 5), 2));
  ASSERT_TRUE(first.ok());
  handles.push_back(*first);
  entered.WaitForNotification();  // the engine thread holds the first; the queue is empty
  for (int i = 0; i < 2; ++i) {
    auto queued = engine->Submit(GreedyRequest(RandomPrompt(rng, 5), 2));
    ASSERT_TRUE(queued.ok()) << queued.status();
    handles.push_back(*queued);
  }
  auto refused = engine->Submit(GreedyRequest(RandomPrompt(rng, 5), 2));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  release.Notify();
  for (auto& handle : handles) EXPECT_EQ(Collect(*handle).finish[0], FinishReason::kLength);
  ExpectPoolClean(*engine);
}

}  // namespace
}  // namespace r2::engine

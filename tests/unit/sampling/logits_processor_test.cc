#include "engine/sampling/logits_processor.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;

constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingState MakeState(const SamplingParams& params, std::vector<int32_t> prompt,
                        std::vector<int32_t> output, int32_t vocab) {
  absl::StatusOr<SamplingState> state = SamplingState::Create(params, prompt, vocab);
  EXPECT_TRUE(state.ok()) << state.status();
  for (int32_t token : output) state->AppendOutputToken(token);
  return *std::move(state);
}

TEST(LogitsProcessorTest, LogitBiasAddsAndRestores) {
  SamplingParams params;
  params.logit_bias = {{0, 0.5f}, {2, -100.0f}};
  std::vector<float> row = {1, 2, 3, 4};
  LogitsProcessor processor;
  processor.ApplyLogitBias(params, absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(FloatEq(1.5f), FloatEq(2), FloatEq(-97), FloatEq(4)));
  processor.Restore(absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(processor.num_pending_edits(), 0u);
}

TEST(LogitsProcessorTest, MinTokensMasksEosAndStopTokensUntilReached) {
  SamplingParams params;
  params.min_tokens = 2;
  params.stop_token_ids = {1};
  const std::vector<int32_t> eos = {3};
  LogitsProcessor processor;
  std::vector<float> row = {1, 2, 3, 4};

  SamplingState fresh = MakeState(params, {}, {}, 4);
  processor.ApplyMinTokens(fresh, eos, absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(1, -kInf, 3, -kInf));
  processor.Restore(absl::MakeSpan(row));

  SamplingState one = MakeState(params, {}, {0}, 4);  // 1 < 2: still masked
  processor.ApplyMinTokens(one, eos, absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(1, -kInf, 3, -kInf));
  processor.Restore(absl::MakeSpan(row));

  SamplingState two = MakeState(params, {}, {0, 2}, 4);
  processor.ApplyMinTokens(two, eos, absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(processor.num_pending_edits(), 0u);
}

TEST(LogitsProcessorTest, MinTokensLeavesEosAloneWithIgnoreEos) {
  SamplingParams params;
  params.min_tokens = 1;
  params.ignore_eos = true;
  params.stop_token_ids = {0};
  LogitsProcessor processor;
  std::vector<float> row = {1, 2, 3, 4};
  processor.ApplyMinTokens(MakeState(params, {}, {}, 4), std::vector<int32_t>{3},
                           absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(-kInf, 2, 3, 4));
}

TEST(LogitsProcessorTest, PenaltiesMatchHandComputedValues) {
  SamplingParams params;
  params.repetition_penalty = 2.0f;
  params.frequency_penalty = 0.5f;
  params.presence_penalty = 0.25f;
  // Prompt {0, 1}; output: token 1 twice, token 2 once; token 3 never seen.
  SamplingState state = MakeState(params, {0, 1, 0}, {1, 2, 1}, 5);
  std::vector<float> row = {2, -1, 4, 3, -6};
  LogitsProcessor processor;
  processor.ApplyPenalties(state, absl::MakeSpan(row));
  // t0: 2 / 2 = 1.  t1: -1 * 2 - (2 * 0.5 + 0.25) = -3.25.  t2: 4 / 2 - (0.5 + 0.25) = 1.25.
  EXPECT_THAT(row, ElementsAre(FloatEq(1), FloatEq(-3.25f), FloatEq(1.25f), 3, -6));
  processor.Restore(absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(2, -1, 4, 3, -6));
}

TEST(LogitsProcessorTest, PresenceAndFrequencyIgnorePromptOnlyTokens) {
  SamplingParams params;
  params.frequency_penalty = 1.0f;
  params.presence_penalty = 1.0f;
  SamplingState state = MakeState(params, {0}, {1}, 3);
  std::vector<float> row = {1, 1, 1};
  LogitsProcessor processor;
  processor.ApplyPenalties(state, absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(1, -1, 1));
}

TEST(LogitsProcessorTest, NegativePenaltiesEncourage) {
  SamplingParams params;
  params.repetition_penalty = 0.5f;  // < 1 encourages repetition
  params.presence_penalty = -1.0f;
  SamplingState state = MakeState(params, {}, {0, 1}, 2);
  std::vector<float> row = {2, -2};
  LogitsProcessor processor;
  processor.ApplyPenalties(state, absl::MakeSpan(row));
  EXPECT_THAT(row, ElementsAre(FloatEq(2 / 0.5f + 1), FloatEq(-2 * 0.5f + 1)));
}

TEST(LogitsProcessorTest, ApplyRunsBiasBeforePenalties) {
  SamplingParams params;
  params.logit_bias = {{2, 2.0f}};
  params.repetition_penalty = 2.0f;
  params.frequency_penalty = 0.5f;
  params.presence_penalty = 0.25f;
  SamplingState state = MakeState(params, {}, {2}, 4);
  std::vector<float> row = {2, -1, 4, 3};
  LogitsProcessor processor;
  processor.Apply(state, {}, absl::MakeSpan(row));
  // (4 + 2) / 2 - 0.75 = 2.25; penalties first would give 4 / 2 - 0.75 + 2 = 3.25.
  EXPECT_FLOAT_EQ(row[2], 2.25f);
}

TEST(LogitsProcessorTest, RestoreIsExactAfterEveryStep) {
  constexpr int32_t kVocab = 257;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> original(kVocab);
  for (float& x : original) x = normal(rng);
  SamplingParams params;
  params.logit_bias = {{3, 5.0f}, {4, -100.0f}, {200, 0.125f}};
  params.min_tokens = 10;
  params.stop_token_ids = {3, 9};
  params.repetition_penalty = 1.3f;
  params.frequency_penalty = 0.7f;
  params.presence_penalty = -0.4f;
  SamplingState state = MakeState(params, {3, 4, 5, 6, 7}, {3, 3, 200, 100}, kVocab);
  std::vector<float> row = original;
  LogitsProcessor processor;
  processor.Apply(state, std::vector<int32_t>{9, 0}, absl::MakeSpan(row));
  EXPECT_NE(row, original);
  processor.Restore(absl::MakeSpan(row));
  EXPECT_EQ(row, original);  // bitwise
}

}  // namespace
}  // namespace r2::sampling

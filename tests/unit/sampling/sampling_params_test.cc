#include "engine/sampling/sampling_params.h"

#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int32_t kVocab = 1000;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(SamplingParamsTest, DefaultsAreValidAndNeutral) {
  SamplingParams params;
  EXPECT_TRUE(params.Validate(kVocab).ok());
  EXPECT_FALSE(params.greedy());
  EXPECT_FALSE(params.has_penalties());
  EXPECT_FALSE(params.top_k_enabled(kVocab));
  EXPECT_TRUE(params.skip_special_tokens);
}

TEST(SamplingParamsTest, BoundaryValuesAreValid) {
  SamplingParams params;
  params.temperature = 0.0f;
  params.top_p = 1.0f;
  params.top_k = -1;
  params.min_p = 1.0f;
  params.repetition_penalty = 2.0f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  params.logit_bias = {{0, -100.0f}, {kVocab - 1, 100.0f}};
  params.seed = std::numeric_limits<int64_t>::min();
  params.n = kMaxChoices;
  params.best_of = kMaxChoices;
  params.max_tokens = 1;
  params.min_tokens = 1;
  params.stop_token_ids = {0, kVocab - 1};
  params.stop = {"a", "\xE2\x82\xAC"};  // "€"
  params.logprobs = true;
  params.top_logprobs = kMaxTopLogprobs;
  EXPECT_TRUE(params.Validate(kVocab).ok()) << params.Validate(kVocab);
  EXPECT_TRUE(params.greedy());
  EXPECT_TRUE(params.has_penalties());
}

struct BadCase {
  std::string name;  // the field the error must name
  std::function<void(SamplingParams&)> set;
};

// Each case breaks exactly one field; the error must name it, first, and carry it as payload.
class SamplingParamsBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(SamplingParamsBadTest, ErrorNamesTheField) {
  SamplingParams params;
  GetParam().set(params);
  const absl::Status status = params.Validate(kVocab);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith(GetParam().name + " "));
  EXPECT_EQ(InvalidParamName(status), GetParam().name);
}

std::string LongString(size_t n) { return std::string(n, 'x'); }

INSTANTIATE_TEST_SUITE_P(
    AllFields, SamplingParamsBadTest,
    ::testing::Values(
        BadCase{"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
        BadCase{"temperature", [](SamplingParams& p) { p.temperature = 2.01f; }},
        BadCase{"temperature", [](SamplingParams& p) { p.temperature = kNaN; }},
        BadCase{"top_p", [](SamplingParams& p) { p.top_p = 0.0f; }},
        BadCase{"top_p", [](SamplingParams& p) { p.top_p = 1.5f; }},
        BadCase{"top_p", [](SamplingParams& p) { p.top_p = kNaN; }},
        BadCase{"top_k", [](SamplingParams& p) { p.top_k = -2; }},
        BadCase{"min_p", [](SamplingParams& p) { p.min_p = -0.01f; }},
        BadCase{"min_p", [](SamplingParams& p) { p.min_p = 1.01f; }},
        BadCase{"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.0f; }},
        BadCase{"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 2.5f; }},
        BadCase{"presence_penalty", [](SamplingParams& p) { p.presence_penalty = -2.1f; }},
        BadCase{"presence_penalty", [](SamplingParams& p) { p.presence_penalty = kNaN; }},
        BadCase{"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = 2.1f; }},
        BadCase{"logit_bias", [](SamplingParams& p) { p.logit_bias = {{kVocab, 1.0f}}; }},
        BadCase{"logit_bias", [](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }},
        BadCase{"logit_bias", [](SamplingParams& p) { p.logit_bias = {{5, 100.5f}}; }},
        BadCase{"logit_bias", [](SamplingParams& p) { p.logit_bias = {{5, kNaN}}; }},
        BadCase{"logit_bias",
                [](SamplingParams& p) {
                  for (int32_t i = 0; i <= kMaxLogitBiasEntries; ++i) p.logit_bias[i] = 1.0f;
                }},
        BadCase{"n", [](SamplingParams& p) { p.n = 0; }},
        BadCase{"n", [](SamplingParams& p) { p.n = 1000000; }},
        BadCase{"best_of", [](SamplingParams& p) { p.best_of = 2; }},
        BadCase{"max_tokens", [](SamplingParams& p) { p.max_tokens = 0; }},
        BadCase{"max_tokens", [](SamplingParams& p) { p.max_tokens = -1; }},
        BadCase{"min_tokens", [](SamplingParams& p) { p.min_tokens = -1; }},
        BadCase{"min_tokens",
                [](SamplingParams& p) {
                  p.max_tokens = 5;
                  p.min_tokens = 6;
                }},
        BadCase{"stop_token_ids", [](SamplingParams& p) { p.stop_token_ids = {3, kVocab}; }},
        BadCase{"stop_token_ids", [](SamplingParams& p) { p.stop_token_ids = {-5}; }},
        BadCase{"stop_token_ids",
                [](SamplingParams& p) { p.stop_token_ids.assign(kMaxStopTokenIds + 1, 1); }},
        BadCase{"stop", [](SamplingParams& p) { p.stop = {"ok", ""}; }},
        BadCase{"stop", [](SamplingParams& p) { p.stop = {"\xC3"}; }},  // truncated UTF-8
        BadCase{"stop", [](SamplingParams& p) { p.stop.assign(kMaxStopStrings + 1, "s"); }},
        BadCase{"stop",
                [](SamplingParams& p) {
                  p.stop = {LongString(kMaxStopStringsTotalBytes / 2),
                            LongString(kMaxStopStringsTotalBytes / 2 + 1)};
                }},
        BadCase{"top_logprobs",
                [](SamplingParams& p) {
                  p.logprobs = true;
                  p.top_logprobs = 21;
                }},
        BadCase{"top_logprobs",
                [](SamplingParams& p) {
                  p.logprobs = true;
                  p.top_logprobs = -1;
                }},
        BadCase{"top_logprobs", [](SamplingParams& p) { p.top_logprobs = 5; }}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      return info.param.name + "_" + std::to_string(info.index);
    });

TEST(SamplingParamsTest, MessagesSayWhatWasWrong) {
  SamplingParams params;
  params.top_p = 1.5f;
  EXPECT_THAT(std::string(params.Validate(kVocab).message()), HasSubstr("(0, 1]"));
  params = SamplingParams();
  params.logit_bias = {{kVocab + 7, 1.0f}};
  EXPECT_THAT(std::string(params.Validate(kVocab).message()), HasSubstr("1007"));
}

TEST(SamplingParamsTest, NonPositiveVocabularyIsAnError) {
  EXPECT_FALSE(SamplingParams().Validate(0).ok());
}

TEST(SamplingParamsTest, InvalidParamNameIsEmptyForOtherStatuses) {
  EXPECT_EQ(InvalidParamName(absl::OkStatus()), "");
  EXPECT_EQ(InvalidParamName(absl::InternalError("x")), "");
}

}  // namespace
}  // namespace r2::sampling

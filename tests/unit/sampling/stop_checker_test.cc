#include "engine/sampling/stop_checker.h"

#include <random>
#include <string>
#include <vector>

#include "engine/sampling/utf8.h"
#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

constexpr int32_t kEos = 1;
constexpr int32_t kText = 7;  // an ordinary token

StopChecker MakeChecker(const SamplingParams& params) {
  EXPECT_TRUE(params.Validate(100).ok()) << params.Validate(100);
  return StopChecker(params, std::vector<int32_t>{kEos});
}

SamplingParams WithStops(std::vector<std::string> stops) {
  SamplingParams params;
  params.stop = std::move(stops);
  return params;
}

TEST(StopCheckerTest, EosStopsWithoutStopReasonAndFlushesHeldText) {
  StopChecker checker = MakeChecker(WithStops({"STOP"}));
  StopResult first = checker.Append(kText, "abc S");
  EXPECT_FALSE(first.finished());
  EXPECT_EQ(first.text, "abc ");
  EXPECT_EQ(checker.held_back_bytes(), 1u);
  StopResult eos = checker.Append(kEos, "<eos>");
  EXPECT_EQ(eos.finish, FinishReason::kStop);
  EXPECT_EQ(FinishReasonName(eos.finish), "stop");
  EXPECT_FALSE(eos.stop_token.has_value());
  EXPECT_FALSE(eos.stop_string.has_value());
  EXPECT_EQ(eos.text, "S");  // the held "S" is output; the EOS text is not
}

TEST(StopCheckerTest, IgnoreEosMakesEosOrdinary) {
  SamplingParams params;
  params.ignore_eos = true;
  StopChecker checker = MakeChecker(params);
  StopResult result = checker.Append(kEos, "x");
  EXPECT_FALSE(result.finished());
  EXPECT_EQ(result.text, "x");
}

TEST(StopCheckerTest, MinTokensDefersEveryStopButLength) {
  SamplingParams params = WithStops({"X"});
  params.min_tokens = 3;
  params.stop_token_ids = {9};
  StopChecker checker = MakeChecker(params);
  EXPECT_FALSE(checker.Append(kEos, "").finished());
  StopResult second = checker.Append(9, "X");
  EXPECT_FALSE(second.finished());
  EXPECT_EQ(second.text, "X");                       // stop strings are not searched yet
  EXPECT_TRUE(checker.Append(kEos, "").finished());  // third token: allowed
}

TEST(StopCheckerTest, StopTokenIdIsReportedAndItsTextDropped) {
  SamplingParams params;
  params.stop_token_ids = {42, 43};
  StopChecker checker = MakeChecker(params);
  EXPECT_EQ(checker.Append(kText, "hi").text, "hi");
  StopResult result = checker.Append(43, "</s>");
  EXPECT_EQ(result.finish, FinishReason::kStop);
  ASSERT_TRUE(result.stop_token.has_value());
  EXPECT_EQ(*result.stop_token, 43);
  EXPECT_EQ(result.text, "");
}

TEST(StopCheckerTest, MaxTokensGivesLengthAndFlushes) {
  SamplingParams params = WithStops({"STOP"});
  params.max_tokens = 2;
  StopChecker checker = MakeChecker(params);
  EXPECT_FALSE(checker.Append(kText, "a").finished());
  StopResult result = checker.Append(kText, "bST");
  EXPECT_EQ(result.finish, FinishReason::kLength);
  EXPECT_EQ(FinishReasonName(result.finish), "length");
  EXPECT_EQ(result.text, "bST");
  EXPECT_EQ(checker.num_output_tokens(), 2);
}

TEST(StopCheckerTest, StopStringBeatsLengthOnTheSameToken) {
  SamplingParams params = WithStops({"END"});
  params.max_tokens = 1;
  StopChecker checker = MakeChecker(params);
  StopResult result = checker.Append(kText, "the END");
  EXPECT_EQ(result.finish, FinishReason::kStop);
  EXPECT_EQ(result.text, "the ");
}

TEST(StopCheckerTest, StopStringAcrossTokens) {
  StopChecker checker = MakeChecker(WithStops({"STOP"}));
  StopResult first = checker.Append(kText, "Hello ST");
  EXPECT_EQ(first.text, "Hello ");
  EXPECT_EQ(checker.held_back_bytes(), 2u);
  StopResult second = checker.Append(kText, "OP and more");
  EXPECT_EQ(second.finish, FinishReason::kStop);
  ASSERT_TRUE(second.stop_string.has_value());
  EXPECT_EQ(*second.stop_string, "STOP");
  EXPECT_EQ(second.text, "");
}

TEST(StopCheckerTest, IncludeStopStringInOutput) {
  SamplingParams params = WithStops({"STOP"});
  params.include_stop_str_in_output = true;
  StopChecker checker = MakeChecker(params);
  EXPECT_EQ(checker.Append(kText, "Hello S").text, "Hello ");
  EXPECT_EQ(checker.Append(kText, "T").text, "");
  StopResult result = checker.Append(kText, "OP!");
  EXPECT_TRUE(result.finished());
  EXPECT_EQ(result.text, "STOP");  // "!" after the stop string is dropped
}

TEST(StopCheckerTest, PartialMatchThatFailsIsReleased) {
  StopChecker checker = MakeChecker(WithStops({"STOP"}));
  EXPECT_EQ(checker.Append(kText, "ST").text, "");
  EXPECT_EQ(checker.Append(kText, "ART").text, "START");
  EXPECT_EQ(checker.held_back_bytes(), 0u);
}

TEST(StopCheckerTest, PrefixOfAnotherStopStringMatchesFirst) {
  for (auto stops : {std::vector<std::string>{"STOP", "STOPPING"},
                     std::vector<std::string>{"STOPPING", "STOP"}}) {
    StopChecker checker = MakeChecker(WithStops(stops));
    StopResult result = checker.Append(kText, "xSTOPPING");
    ASSERT_TRUE(result.finished());
    EXPECT_EQ(*result.stop_string, "STOP");
    EXPECT_EQ(result.text, "x");
  }
}

TEST(StopCheckerTest, EarliestCompletionWinsThenLongest) {
  StopChecker earliest = MakeChecker(WithStops({"STOPPING", "TOP"}));
  EXPECT_EQ(*earliest.Append(kText, "aSTOPPING").stop_string, "TOP");
  StopChecker longest = MakeChecker(WithStops({"OP", "STOP"}));
  StopResult result = longest.Append(kText, "xSTOP");
  EXPECT_EQ(*result.stop_string, "STOP");
  EXPECT_EQ(result.text, "x");
}

TEST(StopCheckerTest, OverlappingPartialMatches) {
  StopChecker checker = MakeChecker(WithStops({"aab"}));
  EXPECT_EQ(checker.Append(kText, "aa").text, "");
  EXPECT_EQ(checker.Append(kText, "a").text, "a");  // "aaa": only the last "aa" can still match
  EXPECT_EQ(checker.held_back_bytes(), 2u);
  StopResult result = checker.Append(kText, "b");
  EXPECT_TRUE(result.finished());
  EXPECT_EQ(result.text, "");

  StopChecker kmp = MakeChecker(WithStops({"ababc"}));
  EXPECT_EQ(kmp.Append(kText, "abab").text, "");
  StopResult second = kmp.Append(kText, "abc");
  EXPECT_TRUE(second.finished());
  EXPECT_EQ(second.text, "ab");
}

TEST(StopCheckerTest, MultiByteStopString) {
  StopChecker checker = MakeChecker(WithStops({"\xE2\x82\xAC"}));  // "€"
  EXPECT_EQ(checker.Append(kText, "5 \xE2").text, "5 ");
  EXPECT_EQ(checker.held_back_bytes(), 1u);
  StopResult result = checker.Append(kText, "\x82\xAC more");
  EXPECT_TRUE(result.finished());
  EXPECT_EQ(result.text, "");

  StopChecker cafe = MakeChecker(WithStops({"\xC3\xA9!"}));  // "é!"
  EXPECT_EQ(cafe.Append(kText, "caf\xC3\xA9").text, "caf");
  EXPECT_EQ(cafe.Append(kText, "?").text, "\xC3\xA9?");
}

TEST(StopCheckerTest, IncompleteUtf8IsHeldWithoutStopStrings) {
  StopChecker checker = MakeChecker(SamplingParams());
  EXPECT_EQ(checker.Append(kText, "h\xC3").text, "h");
  EXPECT_EQ(checker.held_back_bytes(), 1u);
  EXPECT_EQ(checker.Append(kText, "\xA9llo \xF0\x9F").text, "\xC3\xA9llo ");
  EXPECT_EQ(checker.Append(kText, "\x98\x80").text, "\xF0\x9F\x98\x80");
  EXPECT_EQ(checker.Append(kText, "\xFF").text, "\xFF");  // never valid: not held forever
}

TEST(StopCheckerTest, FlushReleasesHeldText) {
  StopChecker checker = MakeChecker(WithStops({"STOP"}));
  EXPECT_EQ(checker.Append(kText, "abc STO").text, "abc ");
  EXPECT_EQ(checker.Flush(), "STO");
  EXPECT_EQ(checker.held_back_bytes(), 0u);
}

TEST(StopCheckerTest, LongRepetitiveStopStringIsLinear) {
  const std::string stop = std::string(kMaxStopStringsTotalBytes - 1, 'a') + "b";
  StopChecker checker = MakeChecker(WithStops({stop}));
  const std::string chunk(1000, 'a');
  size_t emitted = 0;
  for (int i = 0; i < 200; ++i) {
    StopResult result = checker.Append(kText, chunk);
    ASSERT_FALSE(result.finished());
    emitted += result.text.size();
  }
  EXPECT_EQ(checker.held_back_bytes(), stop.size() - 1);
  EXPECT_EQ(emitted + checker.held_back_bytes(), 200u * chunk.size());
  EXPECT_TRUE(checker.Append(kText, "b").finished());
}

// Random texts over multi-byte characters, split at random byte offsets (inside characters too),
// against a brute-force search of the whole text.
TEST(StopCheckerTest, RandomSplitsMatchBruteForce) {
  const std::vector<std::string> alphabet = {"a", "b", "\xC3\xA9", "\xE2\x82\xAC",
                                             "\xF0\x9F\x98\x80"};
  std::mt19937 rng(42);
  auto random_string = [&](int min_chars, int max_chars) {
    std::string s;
    const int n = std::uniform_int_distribution<int>(min_chars, max_chars)(rng);
    for (int i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<std::string> stops;
    for (int i = 0, n = 1 + rng() % 3; i < n; ++i) stops.push_back(random_string(1, 3));
    const std::string text = random_string(0, 30);

    // Brute force: the first end position where a stop string ends, the longest on ties.
    std::string expected = text;
    std::optional<std::string> expected_stop;
    for (size_t end = 1; end <= text.size() && !expected_stop; ++end) {
      for (const std::string& stop : stops) {
        if (stop.size() <= end && text.compare(end - stop.size(), stop.size(), stop) == 0 &&
            (!expected_stop || stop.size() > expected_stop->size())) {
          expected_stop = stop;
          expected = text.substr(0, end - stop.size());
        }
      }
    }

    StopChecker checker = MakeChecker(WithStops(stops));
    std::string output;
    std::optional<std::string> matched;
    size_t pos = 0;
    while (pos < text.size() && !matched) {
      const size_t len = std::min<size_t>(text.size() - pos, 1 + rng() % 5);
      StopResult result = checker.Append(kText, std::string_view(text).substr(pos, len));
      pos += len;
      EXPECT_TRUE(IsValidUtf8(result.text)) << "trial " << trial;
      output += result.text;
      if (result.finished()) matched = result.stop_string;
    }
    if (!matched) output += checker.Flush();
    EXPECT_EQ(output, expected) << "trial " << trial;
    EXPECT_EQ(matched, expected_stop) << "trial " << trial;
  }
}

}  // namespace
}  // namespace r2::sampling

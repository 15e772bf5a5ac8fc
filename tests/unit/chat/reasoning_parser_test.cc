#include "engine/chat/reasoning_parser.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/chat/stream_split_util.h"

namespace r2::chat {
namespace {

struct ReasoningCase {
  std::string name;
  bool starts_in_reasoning;
  std::string output;  // what the model wrote, as the detokenizer yields it
  std::string reasoning;
  std::string content;
};

// Recorded-style model outputs (R1 with forced <think>, V3.1 thinking and non-thinking, V3).
std::vector<ReasoningCase> Cases() {
  return {
      {"r1_forced_think", true,
       "Okay, the user asks 2+2. That is 4.\n</think>\n\nThe answer is **4**.",
       "Okay, the user asks 2+2. That is 4.\n", "\n\nThe answer is **4**."},
      {"r1_explicit_think_too", true, "<think>\nLet me think.\n</think>\n\nDone.",
       "\nLet me think.\n", "\n\nDone."},
      {"r1_truncated_in_reasoning", true, "Hmm, long reasoning that hits max_tokens <thi",
       "Hmm, long reasoning that hits max_tokens <thi", ""},
      {"r1_empty_reasoning", true, "</think>Just the answer.", "", "Just the answer."},
      {"v31_thinking_unicode", true,
       "用户问的是天气。需要调用工具吗？</think>今天晴天 ☀️",
       "用户问的是天气。需要调用工具吗？", "今天晴天 ☀️"},
      {"v31_nothink_plain", false, "Sure! Here is a haiku:\nold pond / frog", "",
       "Sure! Here is a haiku:\nold pond / frog"},
      {"v3_explicit_think", false, "  <think>plan</think>answer", "plan", "answer"},
      {"not_started_no_tags", false, "<thinking is fun> but not a tag", "",
       "<thinking is fun> but not a tag"},
      {"not_started_end_tag_is_content", false, "text </think> more", "", "text </think> more"},
      {"content_keeps_later_tags", true, "r</think>c <think>x</think> y", "r",
       "c <think>x</think> y"},
      {"end_tag_split_lookalike", true, "a </thin b </think>c", "a </thin b ", "c"},
      {"empty_output_started", true, "", "", ""},
      {"empty_output_not_started", false, "", "", ""},
      {"only_whitespace_not_started", false, "\n\n", "", "\n\n"},
      {"partial_start_tag_at_end", false, "<thi", "", "<thi"},
  };
}

ReasoningDelta Stream(const std::vector<std::string>& deltas, bool starts_in_reasoning) {
  ReasoningParser parser(ReasoningOptions{starts_in_reasoning});
  ReasoningDelta total;
  for (const std::string& d : deltas) total.Append(parser.Push(d));
  total.Append(parser.Finish());
  return total;
}

TEST(ReasoningParserTest, RecordedOutputsParse) {
  for (const ReasoningCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    ReasoningDelta r = ReasoningParser::Parse(c.output, ReasoningOptions{c.starts_in_reasoning});
    EXPECT_EQ(r.reasoning, c.reasoning);
    EXPECT_EQ(r.content, c.content);
  }
}

TEST(ReasoningParserTest, EverySplitEqualsWholeParse) {
  for (const ReasoningCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    ReasoningDelta whole =
        ReasoningParser::Parse(c.output, ReasoningOptions{c.starts_in_reasoning});
    for (const auto& deltas : testing::AllSplits(c.output)) {
      ReasoningDelta streamed = Stream(deltas, c.starts_in_reasoning);
      ASSERT_EQ(streamed.reasoning, whole.reasoning) << deltas.size() << " deltas";
      ASSERT_EQ(streamed.content, whole.content) << deltas.size() << " deltas";
    }
  }
}

TEST(ReasoningParserTest, HoldsBackOnlyPossibleTagPrefixes) {
  ReasoningParser parser(ReasoningOptions{true});
  EXPECT_EQ(parser.Push("thinking </th").reasoning, "thinking ");
  ReasoningDelta d = parser.Push("ink>answer");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "answer");
  EXPECT_TRUE(parser.in_content());
  EXPECT_EQ(parser.Push(" more").content, " more");  // content flows without delay
}

TEST(ReasoningParserTest, UndecidedStartWaitsForTheTag) {
  ReasoningParser parser(ReasoningOptions{false});
  EXPECT_TRUE(parser.Push("\n<th").empty());
  ReasoningDelta d = parser.Push("ink>x");
  EXPECT_EQ(d.reasoning, "x");
  EXPECT_TRUE(parser.Push("y").reasoning == "y");
}

TEST(ReasoningParserTest, PromptOpensReasoning) {
  EXPECT_TRUE(PromptOpensReasoning("<｜User｜>hi<｜Assistant｜><think>\n"));
  EXPECT_TRUE(PromptOpensReasoning("<｜User｜>hi<｜Assistant｜><think>"));
  EXPECT_FALSE(PromptOpensReasoning("<｜User｜>hi<｜Assistant｜></think>"));
  EXPECT_FALSE(PromptOpensReasoning("<｜User｜>hi<｜Assistant｜>"));
  EXPECT_FALSE(PromptOpensReasoning("<｜Assistant｜><think>a</think>b<｜User｜>q<｜Assistant｜>"));
}

TEST(ReasoningParserTest, PartialTagSuffix) {
  EXPECT_EQ(PartialTagSuffix("abc</th", "</think>"), 4u);
  EXPECT_EQ(PartialTagSuffix("abc<", "</think>"), 1u);
  EXPECT_EQ(PartialTagSuffix("abc", "</think>"), 0u);
  EXPECT_EQ(PartialTagSuffix("</think", "</think>"), 7u);
  EXPECT_EQ(PartialTagSuffix("", "</think>"), 0u);
}

}  // namespace
}  // namespace r2::chat

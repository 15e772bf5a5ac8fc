#include "engine/chat/tool_call_parser.h"

#include <set>
#include <string>
#include <vector>

#include "engine/chat/reasoning_parser.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/chat/stream_split_util.h"

namespace r2::chat {
namespace {

const std::string kCallsBegin = "<｜tool▁calls▁begin｜>";
const std::string kCallsEnd = "<｜tool▁calls▁end｜>";
const std::string kCallBegin = "<｜tool▁call▁begin｜>";
const std::string kCallEnd = "<｜tool▁call▁end｜>";
const std::string kSep = "<｜tool▁sep｜>";

std::string V3Call(const std::string& name, const std::string& args) {
  return kCallBegin + "function" + kSep + name + "\n```json\n" + args + "\n```" + kCallEnd;
}
std::string V31Call(const std::string& name, const std::string& args) {
  return kCallBegin + name + kSep + args + kCallEnd;
}

struct Expected {
  std::string name;
  std::string arguments;
};

struct ToolCase {
  std::string name;
  ToolCallFormat format;
  std::string output;
  std::string content;
  std::vector<Expected> calls;
};

std::vector<ToolCase> Cases() {
  const auto v3 = ToolCallFormat::kDeepSeekV3;
  const auto v31 = ToolCallFormat::kDeepSeekV31;
  const std::string paris = R"({"city": "Paris"})";
  const std::string tokyo = R"({"city": "Tokyo", "unit": "celsius"})";
  const std::string nested =
      R"({"query": "DeepSeek \"V3\" 技术报告", "filters": {"year": [2024, 2025]}})";
  return {
      {"v3_one_call",
       v3,
       kCallsBegin + V3Call("get_weather", paris) + kCallsEnd,
       "",
       {{"get_weather", paris}}},
      {"v3_two_calls",
       v3,
       kCallsBegin + V3Call("get_weather", paris) + "\n" + V3Call("get_weather", tokyo) + kCallsEnd,
       "",
       {{"get_weather", paris}, {"get_weather", tokyo}}},
      {"v3_content_before",
       v3,
       "Let me check the weather.\n\n" + kCallsBegin + V3Call("get_weather", paris) + kCallsEnd,
       "Let me check the weather.\n\n",
       {{"get_weather", paris}}},
      {"v3_nested_unicode_args",
       v3,
       kCallsBegin + V3Call("web_search", nested) + kCallsEnd,
       "",
       {{"web_search", nested}}},
      {"v3_multiline_args",
       v3,
       kCallsBegin + V3Call("run", "{\n  \"cmd\": \"ls -la\",\n  \"cwd\": \"/tmp\"\n}") + kCallsEnd,
       "",
       {{"run", "{\n  \"cmd\": \"ls -la\",\n  \"cwd\": \"/tmp\"\n}"}}},
      {"v3_no_calls_end",
       v3,
       kCallsBegin + V3Call("get_weather", paris),
       "",
       {{"get_weather", paris}}},
      {"v3_plain_text", v3, "No tools needed: the answer is 42 <｜tool", "<output>", {}},
      {"v31_one_call",
       v31,
       kCallsBegin + V31Call("get_weather", paris) + kCallsEnd,
       "",
       {{"get_weather", paris}}},
      {"v31_three_calls",
       v31,
       kCallsBegin + V31Call("a", "{}") + V31Call("b", R"({"x": 1})") + V31Call("c", nested) +
           kCallsEnd,
       "",
       {{"a", "{}"}, {"b", R"({"x": 1})"}, {"c", nested}}},
      {"v31_content_before_and_after",
       v31,
       "I'll search." + kCallsBegin + V31Call("web_search", nested) + kCallsEnd + " trailing",
       "I'll search. trailing",
       {{"web_search", nested}}},
      {"v31_two_blocks",
       v31,
       kCallsBegin + V31Call("a", "{}") + kCallsEnd + "mid" + kCallsBegin + V31Call("b", "{}") +
           kCallsEnd,
       "mid",
       {{"a", "{}"}, {"b", "{}"}}},
      // Malformed: the bad part and everything after it is content; earlier calls stand.
      {"bad_json", v31, kCallsBegin + V31Call("f", "{\"a\": }") + kCallsEnd, "<output>", {}},
      {"args_not_object", v31, kCallsBegin + V31Call("f", "[1, 2]") + kCallsEnd, "<output>", {}},
      {"missing_sep",
       v31,
       kCallsBegin + kCallBegin + "f{\"a\": 1}" + kCallEnd + kCallsEnd,
       "<output>",
       {}},
      {"unterminated_call",
       v31,
       "Hi" + kCallsBegin + kCallBegin + "f" + kSep + "{\"a\": 1",
       "<output>",
       {}},
      {"unterminated_block_only", v3, "Hi" + kCallsBegin, "<output>", {}},
      {"good_then_bad",
       v31,
       kCallsBegin + V31Call("good", "{}") + V31Call("bad", "{oops}") + kCallsEnd,
       V31Call("bad", "{oops}") + kCallsEnd,
       {{"good", "{}"}}},
      {"stray_text_between_calls",
       v3,
       kCallsBegin + V3Call("a", "{}") + " junk " + V3Call("b", "{}") + kCallsEnd,
       " junk " + V3Call("b", "{}") + kCallsEnd,
       {{"a", "{}"}}},
      {"v3_wrong_type",
       v3,
       kCallsBegin + kCallBegin + "retrieval" + kSep + "x\n```json\n{}\n```" + kCallEnd + kCallsEnd,
       "<output>",
       {}},
      {"v3_format_given_v31_text",
       v3,
       kCallsBegin + V31Call("f", "{}") + kCallsEnd,
       "<output>",
       {}},
      {"nested_begin_inside_call",
       v31,
       kCallsBegin + kCallBegin + "f" + kSep + kCallBegin + "{}" + kCallEnd,
       "<output>",
       {}},
      {"empty_name", v31, kCallsBegin + V31Call("", "{}") + kCallsEnd, "<output>", {}},
  };
}

// "<output>" in the table means: the whole output comes back as content.
std::string ExpectedContent(const ToolCase& c) {
  return c.content == "<output>" ? c.output : c.content;
}

ToolCallDelta Stream(const std::vector<std::string>& deltas, ToolCallFormat format) {
  ToolCallParser parser(format, [](int i) { return "id" + std::to_string(i); });
  ToolCallDelta total;
  for (const std::string& d : deltas) total.Append(parser.Push(d));
  total.Append(parser.Finish());
  return total;
}

void ExpectSameCalls(const std::vector<ToolCall>& a, const std::vector<ToolCall>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].arguments, b[i].arguments);
  }
}

TEST(ToolCallParserTest, RecordedOutputsParse) {
  for (const ToolCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    ToolCallDelta r =
        ToolCallParser::Parse(c.output, c.format, [](int i) { return "id" + std::to_string(i); });
    EXPECT_EQ(r.content, ExpectedContent(c));
    ASSERT_EQ(r.calls.size(), c.calls.size());
    for (size_t i = 0; i < r.calls.size(); ++i) {
      EXPECT_EQ(r.calls[i].index, static_cast<int>(i));
      EXPECT_EQ(r.calls[i].id, "call_id" + std::to_string(i));
      EXPECT_EQ(r.calls[i].name, c.calls[i].name);
      EXPECT_EQ(r.calls[i].arguments, c.calls[i].arguments);
      EXPECT_TRUE(nlohmann::json::accept(r.calls[i].arguments));
    }
  }
}

TEST(ToolCallParserTest, EverySplitEqualsWholeParse) {
  for (const ToolCase& c : Cases()) {
    SCOPED_TRACE(c.name);
    ToolCallDelta whole =
        ToolCallParser::Parse(c.output, c.format, [](int i) { return "id" + std::to_string(i); });
    for (const auto& deltas : testing::AllSplits(c.output, 20)) {
      ToolCallDelta streamed = Stream(deltas, c.format);
      ASSERT_EQ(streamed.content, whole.content) << deltas.size() << " deltas";
      ExpectSameCalls(streamed.calls, whole.calls);
    }
  }
}

TEST(ToolCallParserTest, ContentStreamsBeforeTheBlockAndCallsWhenComplete) {
  ToolCallParser parser(ToolCallFormat::kDeepSeekV31);
  EXPECT_EQ(parser.Push("Checking <｜tool").content, "Checking ");
  ToolCallDelta d = parser.Push("▁calls▁begin｜>" + kCallBegin + "get_weather" + kSep);
  EXPECT_EQ(d.content, "");
  EXPECT_TRUE(d.calls.empty());
  d = parser.Push("{\"city\": \"Paris\"}" + kCallEnd);
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].id, "call_0");
  EXPECT_EQ(d.calls[0].name, "get_weather");
  EXPECT_EQ(parser.call_count(), 1);
  d = parser.Push(kCallsEnd);
  EXPECT_TRUE(d.calls.empty());
  EXPECT_EQ(parser.Finish().content, "");
}

// Reasoning first, then tool calls on the content, as the server chains them for R1/V3.1.
TEST(ToolCallParserTest, ChainedAfterReasoningParser) {
  std::string output = "Need weather for Paris.</think>\n\n" + kCallsBegin +
                       V31Call("get_weather", R"({"city": "Paris"})") + kCallsEnd;
  std::string whole_content;
  std::string reasoning;
  std::vector<ToolCall> calls;
  for (const auto& deltas : testing::AllSplits(output, 10)) {
    ReasoningParser rp(ReasoningOptions{true});
    ToolCallParser tp(ToolCallFormat::kDeepSeekV31);
    std::string content;
    std::string thought;
    std::vector<ToolCall> got;
    auto feed = [&](const ReasoningDelta& r) {
      thought += r.reasoning;
      ToolCallDelta t = tp.Push(r.content);
      content += t.content;
      for (auto& c : t.calls) got.push_back(c);
    };
    for (const auto& d : deltas) feed(rp.Push(d));
    feed(rp.Finish());
    ToolCallDelta t = tp.Finish();
    content += t.content;
    for (auto& c : t.calls) got.push_back(c);
    EXPECT_EQ(thought, "Need weather for Paris.");
    EXPECT_EQ(content, "\n\n");
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].arguments, R"({"city": "Paris"})");
  }
}

// ---- stream_arguments: calls announced by header, arguments in pieces ----------------------

ToolCallDelta StreamArgs(const std::vector<std::string>& deltas, ToolCallFormat format) {
  ToolCallParser parser(
      format, [](int i) { return "id" + std::to_string(i); },
      /*stream_arguments=*/true);
  ToolCallDelta total;
  for (const std::string& d : deltas) total.Append(parser.Push(d));
  total.Append(parser.Finish());
  return total;
}

// The pieces of each call joined into whole calls, checking that every call's first piece
// carries its id and full name and later pieces neither.
std::vector<ToolCall> JoinPieces(const std::vector<ToolCall>& pieces) {
  std::vector<ToolCall> calls;
  for (const ToolCall& piece : pieces) {
    if (!piece.id.empty()) {
      EXPECT_EQ(piece.index, static_cast<int>(calls.size()));
      EXPECT_FALSE(piece.name.empty());
      calls.push_back(piece);
      continue;
    }
    EXPECT_TRUE(piece.name.empty());
    EXPECT_FALSE(piece.arguments.empty()) << "an empty piece";
    if (calls.empty() || piece.index != calls.back().index) {
      ADD_FAILURE() << "a piece of call " << piece.index << " outside its call";
      continue;
    }
    calls.back().arguments += piece.arguments;
  }
  return calls;
}

TEST(ToolCallParserTest, GarbageNeverCrashes) {
  std::vector<std::string> inputs = {
      "",
      kCallsBegin,
      kCallsEnd,
      kCallEnd,
      kSep,
      kCallBegin,
      kCallsBegin + kCallsBegin + kCallEnd,
      kCallsBegin + kCallBegin + kSep + kCallEnd,
      "\xff\xfe<｜tool▁calls▁begin｜>\x80",
      kCallsBegin + kCallBegin + "f" + kSep + "{" + kCallEnd,
  };
  for (const std::string& in : inputs) {
    for (auto format : {ToolCallFormat::kDeepSeekV3, ToolCallFormat::kDeepSeekV31}) {
      ToolCallDelta whole = ToolCallParser::Parse(in, format);
      for (const auto& deltas : testing::AllSplits(in, 5)) {
        JoinPieces(StreamArgs(deltas, format).calls);  // well-formed pieces, no crash
        ToolCallDelta streamed = Stream(deltas, format);
        EXPECT_EQ(streamed.content, ToolCallParser::Parse(in, format, [](int i) {
                                      return "id" + std::to_string(i);
                                    }).content);
      }
      // Nothing is lost: without valid calls, all text comes back as content.
      if (whole.calls.empty()) {
        EXPECT_EQ(whole.content, in);
      }
    }
  }
}

TEST(ToolCallParserTest, StreamedArgumentsJoinToTheWholeParseAtEverySplit) {
  // Every case whose calls are well formed (a malformed call, once announced, stands instead of
  // turning into content: see the next tests).
  const std::set<std::string> well_formed = {"v3_one_call",
                                             "v3_two_calls",
                                             "v3_content_before",
                                             "v3_nested_unicode_args",
                                             "v3_multiline_args",
                                             "v3_no_calls_end",
                                             "v3_plain_text",
                                             "v31_one_call",
                                             "v31_three_calls",
                                             "v31_two_blocks",
                                             "missing_sep",
                                             "v3_wrong_type",
                                             "empty_name",
                                             "v3_format_given_v31_text",
                                             "stray_text_between_calls",
                                             "v31_content_before_and_after",
                                             "unterminated_block_only"};
  int checked = 0;
  for (const ToolCase& c : Cases()) {
    if (!well_formed.contains(c.name)) continue;
    SCOPED_TRACE(c.name);
    ++checked;
    ToolCallDelta whole =
        ToolCallParser::Parse(c.output, c.format, [](int i) { return "id" + std::to_string(i); });
    for (const auto& deltas : testing::AllSplits(c.output, 20)) {
      ToolCallDelta streamed = StreamArgs(deltas, c.format);
      ASSERT_EQ(streamed.content, whole.content) << deltas.size() << " deltas";
      ExpectSameCalls(JoinPieces(streamed.calls), whole.calls);
    }
  }
  EXPECT_EQ(checked, static_cast<int>(well_formed.size()));
}

TEST(ToolCallParserTest, StreamedArgumentsArriveBeforeTheCallEnds) {
  ToolCallParser parser(ToolCallFormat::kDeepSeekV3, nullptr, /*stream_arguments=*/true);
  EXPECT_TRUE(parser.Push(kCallsBegin + kCallBegin + "function" + kSep + "get_wea").calls.empty());
  EXPECT_TRUE(parser.Push("ther\n").calls.empty());  // a fence may still open
  ToolCallDelta d = parser.Push("```json\n{\"city\": ");
  ASSERT_EQ(d.calls.size(), 2u);
  EXPECT_EQ(d.calls[0].id, "call_0");
  EXPECT_EQ(d.calls[0].name, "get_weather");
  EXPECT_EQ(d.calls[0].arguments, "");
  EXPECT_EQ(d.calls[1].arguments, "{\"city\":");  // the trailing space may be the end's trim
  EXPECT_EQ(parser.call_count(), 1);
  d = parser.Push("\"Paris\"}\n``");
  ASSERT_EQ(d.calls.size(), 1u);
  EXPECT_EQ(d.calls[0].arguments, " \"Paris\"}");
  EXPECT_TRUE(d.calls[0].id.empty());
  d = parser.Push("`" + kCallEnd + kCallsEnd + " done");
  EXPECT_TRUE(d.calls.empty());  // the closing fence is not part of the arguments
  EXPECT_EQ(d.content, " done");
}

TEST(ToolCallParserTest, StreamedCallStandsWithMalformedOrUnfinishedArguments) {
  const auto v31 = ToolCallFormat::kDeepSeekV31;
  // Invalid JSON: announced at its header, so it stays a call (as OpenAI and vLLM stream them).
  for (const auto& deltas : testing::AllSplits(kCallsBegin + V31Call("f", "{\"a\": }"), 10)) {
    std::vector<ToolCall> calls = JoinPieces(StreamArgs(deltas, v31).calls);
    ASSERT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[0].name, "f");
    EXPECT_EQ(calls[0].arguments, "{\"a\": }");
  }
  // The stream ends inside the arguments: the call keeps what it has.
  ToolCallDelta cut = StreamArgs({kCallsBegin + kCallBegin + "f" + kSep + "{\"a\": 1  "}, v31);
  std::vector<ToolCall> calls = JoinPieces(cut.calls);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].arguments, "{\"a\": 1");
  EXPECT_EQ(cut.content, "");
  // A stray tag ends the call; the rest is content.
  ToolCallDelta stray =
      StreamArgs({kCallsBegin + kCallBegin + "f" + kSep + "{\"a\"", kCallsBegin + "tail"}, v31);
  calls = JoinPieces(stray.calls);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].arguments, "{\"a\"");
  EXPECT_EQ(stray.content, kCallsBegin + "tail");
  // A malformed header is never announced: the block is content.
  ToolCallDelta bad_header =
      StreamArgs({kCallsBegin + kCallBegin + "two words" + kSep + "{}"}, v31);
  EXPECT_TRUE(bad_header.calls.empty());
  EXPECT_EQ(bad_header.content, kCallsBegin + kCallBegin + "two words" + kSep + "{}");
}

}  // namespace
}  // namespace r2::chat

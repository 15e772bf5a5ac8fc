#include "server/openai_response.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_error.h"

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;
using engine::FinishReason;

engine::ChoiceDelta Delta(int32_t index, std::string text, std::vector<int32_t> ids,
                          FinishReason finish = FinishReason::kNone) {
  engine::ChoiceDelta d;
  d.index = index;
  d.text = std::move(text);
  d.token_ids = std::move(ids);
  d.finish_reason = finish;
  return d;
}

engine::RequestOutput Output(std::vector<engine::ChoiceDelta> choices, bool last = false) {
  engine::RequestOutput out;
  out.choices = std::move(choices);
  if (last) out.usage = engine::Usage{5, 3, 2};
  return out;
}

ResponseMeta Meta(bool stream, int n = 1) {
  ResponseMeta m;
  m.id = "chatcmpl-x";
  m.created = 123;
  m.model = "tiny";
  m.stream = stream;
  m.n = n;
  return m;
}

TEST(ChatEncoder, NonStreamShape) {
  auto enc = MakeChatEncoder(Meta(false), OutputPlan{}, nullptr);
  enc->Add(Output({Delta(0, "Hel", {1})}), nullptr);
  enc->Add(Output({Delta(0, "lo", {2}, FinishReason::kLength)}, true), nullptr);
  absl::StatusOr<Json> body = enc->Response();
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["object"], "chat.completion");
  EXPECT_EQ((*body)["id"], "chatcmpl-x");
  const Json& choice = (*body)["choices"][0];
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Hello");
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_TRUE(choice["logprobs"].is_null());
  EXPECT_EQ((*body)["usage"]["prompt_tokens"], 5);
  EXPECT_EQ((*body)["usage"]["completion_tokens"], 3);
  EXPECT_EQ((*body)["usage"]["total_tokens"], 8);
  EXPECT_EQ((*body)["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
}

TEST(ChatEncoder, StreamRoleFirstOneFinishAndUsageChunk) {
  ResponseMeta meta = Meta(true, 2);
  meta.include_usage = true;
  auto enc = MakeChatEncoder(meta, OutputPlan{}, nullptr);
  std::vector<Json> events;
  enc->Begin(&events);
  enc->Add(Output({Delta(0, "a", {1}), Delta(1, "b", {2})}), &events);
  enc->Add(
      Output({Delta(0, "c", {3}, FinishReason::kStop), Delta(1, "", {}, FinishReason::kLength)},
             true),
      &events);
  int roles = 0, finishes = 0;
  std::string text0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json& e = events[i];
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["id"], "chatcmpl-x");
    EXPECT_EQ(e["created"], 123);
    EXPECT_TRUE(e.contains("usage") && e["usage"].is_null());
    const Json& c = e["choices"][0];
    if (c["delta"].contains("role")) ++roles;
    if (!c["finish_reason"].is_null()) ++finishes;
    if (c["index"] == 0 && c["delta"].contains("content")) text0 += c["delta"]["content"];
  }
  EXPECT_EQ(roles, 2);
  EXPECT_EQ(finishes, 2);
  EXPECT_EQ(text0, "ac");
  const Json& usage = events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 8);
}

TEST(ChatEncoder, ReasoningSplitStreamAndNonStream) {
  OutputPlan plan;
  plan.reasoning = true;
  plan.starts_in_reasoning = true;
  auto enc = MakeChatEncoder(Meta(false), plan, nullptr);
  enc->Add(Output({Delta(0, "think hard</th", {1})}), nullptr);
  enc->Add(Output({Delta(0, "ink>answer", {2}, FinishReason::kStop)}, true), nullptr);
  Json body = *enc->Response();
  EXPECT_EQ(body["choices"][0]["message"]["reasoning_content"], "think hard");
  EXPECT_EQ(body["choices"][0]["message"]["reasoning"], "think hard");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "answer");

  auto stream = MakeChatEncoder(Meta(true), plan, nullptr);
  std::vector<Json> events;
  stream->Add(Output({Delta(0, "think hard</th", {1})}), &events);
  stream->Add(Output({Delta(0, "ink>answer", {2}, FinishReason::kStop)}, true), &events);
  std::string reasoning, content;
  for (const Json& e : events) {
    const Json& d = e["choices"][0]["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"];
    if (d.contains("content")) content += d["content"];
  }
  EXPECT_EQ(reasoning, "think hard");
  EXPECT_EQ(content, "answer");
}

constexpr char kV31Call[] =
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}"
    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>";

TEST(ChatEncoder, ToolCallsNonStreamAndStream) {
  OutputPlan plan;
  plan.parse_tools = true;
  plan.tool_choice = ToolChoice::kAuto;
  plan.tool_call_format = chat::ToolCallFormat::kDeepSeekV31;
  auto enc = MakeChatEncoder(Meta(false), plan, nullptr);
  enc->Add(Output({Delta(0, kV31Call, {1}, FinishReason::kStop)}, true), nullptr);
  Json body = *enc->Response();
  const Json& message = body["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(Json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            Json({{"city", "Paris"}}));

  auto stream = MakeChatEncoder(Meta(true), plan, nullptr);
  std::vector<Json> events;
  stream->Add(Output({Delta(0, kV31Call, {1}, FinishReason::kStop)}, true), &events);
  std::string args;
  int ids = 0, finishes = 0;
  for (const Json& e : events) {
    const Json& c = e["choices"][0];
    if (!c["finish_reason"].is_null()) {
      ++finishes;
      EXPECT_EQ(c["finish_reason"], "tool_calls");
    }
    if (!c["delta"].contains("tool_calls")) continue;
    const Json& call = c["delta"]["tool_calls"][0];
    EXPECT_EQ(call["index"], 0);
    EXPECT_FALSE(call["function"].contains("id"));
    if (call.contains("id")) {
      ++ids;
      EXPECT_EQ(call["function"]["name"], "get_weather");
    }
    args += call["function"]["arguments"];
  }
  EXPECT_EQ(ids, 1);
  EXPECT_EQ(finishes, 1);
  EXPECT_EQ(Json::parse(args), Json({{"city", "Paris"}}));
}

// Merges one streamed delta into `into` the way the openai Python client accumulates a stream
// (openai.lib.streaming.chat's accumulate_delta): tool_calls by their index; string fields of a
// later delta are appended (so a repeated name or id would show up doubled), "index" and "type"
// kept.
void Accumulate(Json& into, const Json& delta) {
  for (const auto& [key, value] : delta.items()) {
    if (!into.contains(key) || into[key].is_null()) {
      into[key] = value;
    } else if (key == "index" || key == "type") {
      continue;
    } else if (value.is_string() && into[key].is_string()) {
      into[key] = into[key].get<std::string>() + value.get<std::string>();
    } else if (value.is_object()) {
      Accumulate(into[key], value);
    } else if (key == "tool_calls") {
      for (const Json& call : value) {
        Json* target = nullptr;
        for (Json& have : into[key]) {
          if (have["index"] == call["index"]) target = &have;
        }
        if (target == nullptr) {
          into[key].push_back(call);
        } else {
          Accumulate(*target, call);
        }
      }
    }
  }
}

TEST(ChatEncoder, StreamedToolCallArgumentsAccumulateLikeTheOpenAiClient) {
  const std::string paris = R"({"city": "Paris", "days": [1, 2]})";
  const std::string tokyo = R"({"city": "Tokyo"})";
  const std::string text =
      "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
      "```json\n" +
      paris +
      "\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>"
      "get_time\n```json\n" +
      tokyo + "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  OutputPlan plan;
  plan.parse_tools = true;
  plan.tool_choice = ToolChoice::kAuto;
  plan.tool_call_format = chat::ToolCallFormat::kDeepSeekV3;
  for (size_t piece : {1, 2, 3, 7, 40, 1000}) {
    SCOPED_TRACE(testing::Message() << "deltas of " << piece << " bytes");
    auto stream = MakeChatEncoder(Meta(true), plan, nullptr);
    std::vector<Json> events;
    for (size_t at = 0; at < text.size(); at += piece) {
      const bool last = at + piece >= text.size();
      stream->Add(Output({Delta(0, text.substr(at, piece), {1},
                                last ? FinishReason::kStop : FinishReason::kNone)},
                         last),
                  &events);
    }
    Json message = Json::object();
    int argument_deltas = 0;
    for (const Json& e : events) {
      const Json& delta = e["choices"][0]["delta"];
      if (delta.contains("tool_calls")) {
        ASSERT_EQ(delta["tool_calls"].size(), 1u);
        const Json& call = delta["tool_calls"][0];
        if (call.contains("id")) {  // a call's first delta: index, id, type, the full name
          EXPECT_EQ(call["type"], "function");
          EXPECT_TRUE(call["function"]["name"] == "get_weather" ||
                      call["function"]["name"] == "get_time");
        } else {
          EXPECT_FALSE(call["function"].contains("name"));
          EXPECT_FALSE(call.contains("type"));
          ++argument_deltas;
        }
      }
      Accumulate(message, delta);
    }
    EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "tool_calls");
    EXPECT_EQ(message["content"], "Checking.");
    ASSERT_EQ(message["tool_calls"].size(), 2u);
    EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
    EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], paris);
    EXPECT_EQ(message["tool_calls"][1]["function"]["name"], "get_time");
    EXPECT_EQ(message["tool_calls"][1]["function"]["arguments"], tokyo);
    EXPECT_NE(message["tool_calls"][0]["id"], message["tool_calls"][1]["id"]);
    EXPECT_EQ(message["tool_calls"][0]["id"].get<std::string>().rfind("call_", 0), 0u);
    // Small deltas really stream the arguments in pieces.
    if (piece <= 3) EXPECT_GT(argument_deltas, 10);
  }
}

TEST(ChatEncoder, RequiredToolChoiceWithoutCallIsAnError) {
  OutputPlan plan;
  plan.parse_tools = true;
  plan.tool_choice = ToolChoice::kRequired;
  auto enc = MakeChatEncoder(Meta(false), plan, nullptr);
  enc->Add(Output({Delta(0, "no call here", {1}, FinishReason::kStop)}, true), nullptr);
  absl::StatusOr<Json> body = enc->Response();
  ASSERT_FALSE(body.ok());
  ApiError e = ApiErrorFromStatus(body.status());
  EXPECT_EQ(e.http_status, 422);
  EXPECT_EQ(e.code, "tool_call_missing");
}

TEST(ChatEncoder, LogprobsTokensWithoutTokenizer) {
  ResponseMeta meta = Meta(false);
  meta.logprobs = true;
  meta.top_logprobs = 2;
  auto enc = MakeChatEncoder(meta, OutputPlan{}, nullptr);
  engine::ChoiceDelta d = Delta(0, "x", {7}, FinishReason::kLength);
  sampling::Logprobs lp;
  lp.logprob = -0.25f;
  lp.num_top = 2;
  lp.top[0] = {7, -0.25f};
  lp.top[1] = {3, -2.0f};
  d.logprobs.push_back(lp);
  enc->Add(Output({d}, true), nullptr);
  Json body = *enc->Response();
  const Json& content = body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0]["token"], "token_id:7");
  EXPECT_EQ(content[0]["logprob"], -0.25);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_EQ(content[0]["bytes"].size(), std::string("token_id:7").size());
}

TEST(ChatEncoder, EngineErrorBecomes500) {
  auto enc = MakeChatEncoder(Meta(false), OutputPlan{}, nullptr);
  engine::ChoiceDelta d = Delta(0, "", {}, FinishReason::kError);
  d.error = "forward failed";
  enc->Add(Output({d}, true), nullptr);
  absl::StatusOr<Json> body = enc->Response();
  ASSERT_FALSE(body.ok());
  EXPECT_EQ(ApiErrorFromStatus(body.status()).http_status, 500);
}

TEST(CompletionEncoder, LogprobsAndShape) {
  ResponseMeta meta = Meta(false);
  meta.id = "cmpl-x";
  meta.logprobs = true;
  meta.top_logprobs = 1;
  auto enc = MakeCompletionEncoder(meta, nullptr);
  engine::ChoiceDelta d1 = Delta(0, "a", {4});
  engine::ChoiceDelta d2 = Delta(0, "b", {5}, FinishReason::kLength);
  for (engine::ChoiceDelta* d : {&d1, &d2}) {
    sampling::Logprobs lp;
    lp.logprob = -1;
    lp.num_top = 1;
    lp.top[0] = {d->token_ids[0], -1};
    d->logprobs.push_back(lp);
  }
  enc->Add(Output({d1}), nullptr);
  enc->Add(Output({d2}, true), nullptr);
  Json body = *enc->Response();
  EXPECT_EQ(body["object"], "text_completion");
  const Json& c = body["choices"][0];
  EXPECT_EQ(c["text"], "ab");
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_EQ(c["logprobs"]["tokens"], Json({"token_id:4", "token_id:5"}));
  EXPECT_EQ(c["logprobs"]["token_logprobs"], Json({-1.0, -1.0}));
  EXPECT_EQ(c["logprobs"]["text_offset"], Json({0, 10}));
  EXPECT_EQ(c["logprobs"]["top_logprobs"][0].size(), 1u);
}

TEST(CompletionEncoder, StreamChunksAndNoUsageByDefault) {
  auto enc = MakeCompletionEncoder(Meta(true), nullptr);
  std::vector<Json> events;
  enc->Add(Output({Delta(0, "a", {1})}), &events);
  enc->Add(Output({Delta(0, "b", {2}, FinishReason::kStop)}, true), &events);
  ASSERT_EQ(events.size(), 2u);
  for (const Json& e : events) {
    EXPECT_EQ(e["object"], "text_completion");
    EXPECT_FALSE(e.contains("usage"));
  }
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "stop");
}

}  // namespace
}  // namespace r2::server

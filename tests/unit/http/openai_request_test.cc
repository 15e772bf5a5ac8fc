#include "server/openai_request.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_error.h"

namespace r2::server {
namespace {

using Json = nlohmann::ordered_json;

ApiError ChatError(const std::string& body) {
  absl::StatusOr<Json> json = ParseJsonBody(body);
  if (!json.ok()) return ApiErrorFromStatus(json.status());
  absl::StatusOr<ChatCompletionRequest> r = DecodeChatCompletionRequest(*json);
  if (r.ok()) return ApiError{200};
  return ApiErrorFromStatus(r.status());
}

ApiError CompletionError(const std::string& body) {
  absl::StatusOr<Json> json = ParseJsonBody(body);
  if (!json.ok()) return ApiErrorFromStatus(json.status());
  absl::StatusOr<CompletionRequest> r = DecodeCompletionRequest(*json);
  if (r.ok()) return ApiError{200};
  return ApiErrorFromStatus(r.status());
}

constexpr char kHello[] = R"("messages": [{"role": "user", "content": "hi"}])";

TEST(ParseJsonBody, RejectsMalformedAndNonObjects) {
  for (const char* body : {"", "{", "nul", "[1, 2]", "\"text\"", "42", "{\"a\": }"}) {
    absl::StatusOr<Json> r = ParseJsonBody(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(ApiErrorFromStatus(r.status()).http_status, 400) << body;
  }
}

TEST(ParseJsonBody, RejectsDeepNestingWithoutRecursing) {
  std::string deep(100000, '[');
  absl::StatusOr<Json> r = ParseJsonBody("{\"messages\": " + deep + "}");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("nesting"));
  // Brackets inside strings do not count.
  EXPECT_TRUE(ParseJsonBody("{\"x\": \"" + deep + "\"}").ok());
}

TEST(DecodeChat, MalformedMessagesName400WithParam) {
  for (const char* messages :
       {"null", "\"hi\"", "[]", "[123]", "[{}]", "[{\"role\": 1, \"content\": \"x\"}]",
        "[{\"role\": \"user\"}]", "[{\"role\": \"user\", \"content\": 5}]",
        "[{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]",
        "[{\"role\": \"wizard\", \"content\": \"x\"}]"}) {
    ApiError e = ChatError(std::string("{\"messages\": ") + messages + "}");
    EXPECT_EQ(e.http_status, 400) << messages;
    EXPECT_EQ(e.param, "messages") << messages;
    EXPECT_EQ(e.type, "invalid_request_error");
  }
}

TEST(DecodeChat, ContentPartsAndDefaults) {
  absl::StatusOr<ChatCompletionRequest> r = DecodeChatCompletionRequest(Json::parse(
      R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
          "unknown_field": {"x": 1}})"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->params.max_tokens.has_value());  // chat: until the context is full
  EXPECT_EQ(r->tool_choice, ToolChoice::kNone);
}

TEST(DecodeChat, SamplingFieldsMap) {
  absl::StatusOr<ChatCompletionRequest> r = DecodeChatCompletionRequest(Json::parse(
      std::string("{") + kHello +
      R"(, "temperature": 0, "top_p": 0.5, "top_k": 5, "seed": -3, "n": 2, "max_tokens": 7,
          "max_completion_tokens": 9, "stop": "x", "logprobs": true, "top_logprobs": 3,
          "logit_bias": {"12": -100}, "ignore_eos": true, "stream": true,
          "stream_options": {"include_usage": true}})"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.temperature, 0.0f);
  EXPECT_EQ(r->params.top_p, 0.5f);
  EXPECT_EQ(r->params.top_k, 5);
  EXPECT_EQ(r->params.seed, -3);
  EXPECT_EQ(r->params.n, 2);
  EXPECT_EQ(r->params.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_THAT(r->params.stop, ::testing::ElementsAre("x"));
  EXPECT_TRUE(r->params.logprobs);
  EXPECT_EQ(r->params.top_logprobs, 3);
  EXPECT_EQ(r->params.logit_bias.at(12), -100.0f);
  EXPECT_TRUE(r->params.ignore_eos);
  EXPECT_TRUE(r->include_usage);
}

struct BadField {
  const char* fields;
  const char* param;
};

TEST(DecodeChat, BadFieldsNameTheParam) {
  const BadField cases[] = {
      {R"("temperature": "hot")", "temperature"},
      {R"("top_p": [1])", "top_p"},
      {R"("n": 0)", "n"},
      {R"("n": 1000000)", "n"},
      {R"("n": 1.5)", "n"},
      {R"("max_tokens": -1)", "max_tokens"},
      {R"("max_tokens": 0)", "max_tokens"},
      {R"("top_logprobs": 21, "logprobs": true)", "top_logprobs"},
      {R"("top_logprobs": 2)", "top_logprobs"},
      {R"("seed": "x")", "seed"},
      {R"("seed": 9223372036854775808)", "seed"},
      {R"("seed": 1e30)", "seed"},
      {R"("stream": "yes")", "stream"},
      {R"("stream_options": {"include_usage": true})", "stream_options"},
      {R"("stop": 5)", "stop"},
      {R"("stop": [1])", "stop"},
      {R"("logit_bias": {"abc": 1})", "logit_bias"},
      {R"("logit_bias": [1])", "logit_bias"},
      {R"("response_format": {"type": "json_object"})", "response_format"},
      {R"("tools": {})", "tools"},
      {R"("tools": [{"type": "function"}])", "tools"},
      {R"("tool_choice": "required")", "tool_choice"},
      {R"("tools": [{"type": "function", "function": {"name": "f"}}],
          "tool_choice": {"type": "function", "function": {"name": "g"}})",
       "tool_choice"},
      {R"("chat_template_kwargs": 1)", "chat_template_kwargs"},
  };
  for (const BadField& c : cases) {
    ApiError e = ChatError(std::string("{") + kHello + ", " + c.fields + "}");
    EXPECT_EQ(e.http_status, 400) << c.fields;
    EXPECT_EQ(e.param, c.param) << c.fields;
    EXPECT_FALSE(e.code.empty()) << c.fields;
  }
}

TEST(DecodeChat, ToolChoiceModes) {
  const std::string tools =
      R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}])";
  auto choice = [&](const std::string& extra) {
    return DecodeChatCompletionRequest(
        Json::parse(std::string("{") + kHello + ", " + tools + extra + "}"));
  };
  EXPECT_EQ(choice("")->tool_choice, ToolChoice::kAuto);
  EXPECT_EQ(choice(R"(, "tool_choice": "none")")->tool_choice, ToolChoice::kNone);
  EXPECT_EQ(choice(R"(, "tool_choice": "required")")->tool_choice, ToolChoice::kRequired);
  auto named = choice(R"(, "tool_choice": {"type": "function", "function": {"name": "f"}})");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(named->tool_choice_name, "f");
}

TEST(DecodeCompletion, PromptForms) {
  auto decode = [](const std::string& body) { return DecodeCompletionRequest(Json::parse(body)); };
  auto text = decode(R"({"prompt": "hello"})");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->prompt_text, "hello");
  EXPECT_EQ(text->params.max_tokens, 16);  // legacy default
  auto ids = decode(R"({"prompt": [1, 2, 3], "logprobs": 2})");
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(ids->prompt_is_token_ids);
  EXPECT_THAT(ids->prompt_ids, ::testing::ElementsAre(1, 2, 3));
  EXPECT_TRUE(ids->params.logprobs);
  EXPECT_EQ(ids->params.top_logprobs, 2);
  auto one_list = decode(R"({"prompt": [[4, 5]]})");
  ASSERT_TRUE(one_list.ok());
  EXPECT_THAT(one_list->prompt_ids, ::testing::ElementsAre(4, 5));
}

TEST(DecodeCompletion, BadPrompts) {
  const BadField cases[] = {
      {R"({})", "prompt"},
      {R"({"prompt": 5})", "prompt"},
      {R"({"prompt": ""})", "prompt"},
      {R"({"prompt": []})", "prompt"},
      {R"({"prompt": [1, -2]})", "prompt"},
      {R"({"prompt": ["a", "b"]})", "prompt"},
      {R"({"prompt": "a", "logprobs": 21})", "logprobs"},
      {R"({"prompt": "a", "echo": true})", "echo"},
      {R"({"prompt": "a", "suffix": "z"})", "suffix"},
  };
  for (const BadField& c : cases) {
    ApiError e = CompletionError(c.fields);
    EXPECT_EQ(e.http_status, 400) << c.fields;
    EXPECT_EQ(e.param, c.param) << c.fields;
  }
}

TEST(ValidateSamplingParams, NamesTheField) {
  sampling::SamplingParams p;
  p.top_p = 1.5f;
  absl::Status s = ValidateSamplingParams(p, 100);
  ApiError e = ApiErrorFromStatus(s);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.param, "top_p");
  p = sampling::SamplingParams();
  p.logit_bias[5000] = 1;
  EXPECT_EQ(ApiErrorFromStatus(ValidateSamplingParams(p, 100)).param, "logit_bias");
}

TEST(ApiError, JsonShapeHasStringCode) {
  ApiError e = ApiErrorFromStatus(InvalidParam("n", "n must be >= 1"));
  Json j = ApiErrorJson(e);
  EXPECT_EQ(j["error"]["message"], "n must be >= 1");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_EQ(j["error"]["code"], "invalid_value");
  EXPECT_EQ(ApiErrorFromStatus(absl::ResourceExhaustedError("full")).http_status, 429);
  EXPECT_EQ(ApiErrorFromStatus(absl::UnavailableError("x")).http_status, 503);
  Json null_param = ApiErrorJson(MakeApiError(404, "invalid_request_error", "not_found", "x"));
  EXPECT_TRUE(null_param["error"]["param"].is_null());
  // Invalid UTF-8 in a message never throws.
  EXPECT_NO_THROW(DumpJson(ApiErrorJson(MakeApiError(400, "t", "c", "bad \xff byte"))));
}

}  // namespace
}  // namespace r2::server

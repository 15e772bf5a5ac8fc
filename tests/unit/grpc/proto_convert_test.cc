// Proto <-> shared request structs and status mapping (server/grpc/proto_convert.h).
#include "server/grpc/proto_convert.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_error.h"

namespace r2::server::grpc_api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ProtoConvert, UnsetSamplingFieldsKeepTheHttpDefaults) {
  v1::GenerateRequest request;
  request.set_text("hi");
  absl::StatusOr<CompletionRequest> r = ToCompletionRequest(request);
  ASSERT_TRUE(r.ok()) << r.status();
  const sampling::SamplingParams defaults;
  EXPECT_EQ(r->params.temperature, defaults.temperature);
  EXPECT_EQ(r->params.top_p, defaults.top_p);
  EXPECT_EQ(r->params.n, 1);
  EXPECT_EQ(r->params.max_tokens, 16) << "the completions default, as over HTTP";
  EXPECT_TRUE(r->params.skip_special_tokens);
  EXPECT_FALSE(r->params.seed.has_value());
  EXPECT_EQ(r->prompt_text, "hi");
}

TEST(ProtoConvert, ZeroValuesThatMeanSomethingArePresent) {
  v1::GenerateRequest request;
  request.mutable_token_ids()->add_ids(7);
  v1::SamplingParams* s = request.mutable_sampling();
  s->set_temperature(0);
  s->set_seed(0);
  s->set_skip_special_tokens(false);
  s->set_top_k(-1);
  s->add_stop("\n\n");
  s->add_stop_token_ids(3);
  (*s->mutable_logit_bias())[5] = -100;
  absl::StatusOr<CompletionRequest> r = ToCompletionRequest(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->params.temperature, 0.0f);
  ASSERT_TRUE(r->params.seed.has_value());
  EXPECT_EQ(*r->params.seed, 0);
  EXPECT_FALSE(r->params.skip_special_tokens);
  EXPECT_EQ(r->params.top_k, -1);
  EXPECT_THAT(r->params.stop, ElementsAre("\n\n"));
  EXPECT_THAT(r->params.stop_token_ids, ElementsAre(3));
  EXPECT_EQ(r->params.logit_bias.at(5), -100.0f);
  EXPECT_TRUE(r->prompt_is_token_ids);
  EXPECT_THAT(r->prompt_ids, ElementsAre(7));
}

TEST(ProtoConvert, ChatMessagesToolsAndToolChoiceBecomeTheTemplateInput) {
  v1::ChatRequest request;
  v1::ChatMessage* user = request.add_messages();
  user->set_role("user");
  user->set_content("weather in Paris?");
  v1::ChatMessage* assistant = request.add_messages();
  assistant->set_role("assistant");
  v1::ToolCall* call = assistant->add_tool_calls();
  call->set_id("call_1");
  call->set_name("get_weather");
  call->set_arguments("{\"city\": \"Paris\"}");
  v1::ChatMessage* tool = request.add_messages();
  tool->set_role("tool");
  tool->set_content("sunny");
  tool->set_tool_call_id("call_1");
  v1::Tool* t = request.add_tools();
  t->set_name("get_weather");
  t->set_parameters_json(R"({"type": "object"})");
  request.mutable_tool_choice()->set_function_name("get_weather");
  request.set_chat_template_kwargs_json(R"({"thinking": true})");
  absl::StatusOr<ChatCompletionRequest> r = ToChatRequest(request);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->messages.size(), 3u);
  EXPECT_TRUE(r->messages[1]["content"].is_null());
  EXPECT_EQ(r->messages[1]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(r->messages[2]["tool_call_id"], "call_1");
  EXPECT_EQ(r->tools[0]["function"]["parameters"]["type"], "object");
  EXPECT_EQ(r->tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(r->tool_choice_name, "get_weather");
  EXPECT_EQ(r->chat_template_kwargs["thinking"], true);
  EXPECT_TRUE(r->add_generation_prompt);

  request.mutable_tool_choice()->set_function_name("other");
  r = ToChatRequest(request);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("not in tools"));
}

TEST(ProtoConvert, StatusMappingNamesTheProtoField) {
  std::string field;
  ::grpc::Status s = ToGrpcStatus(InvalidParam("top_p", "top_p must be in (0, 1]"), &field);
  EXPECT_EQ(s.error_code(), ::grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(field, "sampling.top_p");
  EXPECT_EQ(s.error_message(), "sampling.top_p: top_p must be in (0, 1]");
  ToGrpcStatus(InvalidParam("chat_template_kwargs", "bad"), &field);
  EXPECT_EQ(field, "chat_template_kwargs_json");
  ToGrpcStatus(InvalidParam("max_completion_tokens", "bad"), &field);
  EXPECT_EQ(field, "sampling.max_tokens");
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("m"), &field).error_code(),
            ::grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(field, "");
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("q")).error_code(),
            ::grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("u")).error_code(),
            ::grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::UnknownError("?")).error_code(), ::grpc::StatusCode::INTERNAL)
      << "never UNKNOWN";
}

TEST(ProtoConvert, FinishReasons) {
  EXPECT_EQ(ToFinishReason(engine::FinishReason::kStop, false), v1::FINISH_REASON_STOP);
  EXPECT_EQ(ToFinishReason(engine::FinishReason::kStop, true), v1::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(ToFinishReason(engine::FinishReason::kLength, false), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ToFinishReason(engine::FinishReason::kAbort, false), v1::FINISH_REASON_ABORT);
  EXPECT_EQ(ToFinishReason(engine::FinishReason::kError, false), v1::FINISH_REASON_ERROR);
  EXPECT_EQ(ToFinishReason(engine::FinishReason::kNone, false), v1::FINISH_REASON_UNSPECIFIED);
}

}  // namespace
}  // namespace r2::server::grpc_api

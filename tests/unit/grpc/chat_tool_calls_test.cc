// Chat's reasoning and tool-call fields over gRPC, with a scripted engine whose output is fixed
// text (the random tiny model never writes a tool call): the shared ChatOutputParser splits the
// reasoning, parses the DeepSeek tool-call block, and the stream carries it as ToolCall deltas.
#include <mutex>

#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/grpc/grpc_test_server.h"

namespace r2::server::grpc_api::testing {
namespace {

using ::testing::HasSubstr;

// A handle whose whole output is ready at once: one delta per scripted text, then the end.
class ScriptedHandle : public engine::RequestHandle {
 public:
  explicit ScriptedHandle(std::vector<std::string> texts) {
    int32_t token = 100;
    for (std::string& text : texts) {
      engine::ChoiceDelta d;
      d.token_ids = {token++};
      d.text = std::move(text);
      output_.choices.push_back(std::move(d));
    }
    output_.choices.back().finish_reason = engine::FinishReason::kStop;
    output_.usage = engine::Usage{7, static_cast<int32_t>(output_.choices.size()), 0};
  }
  bool Next(engine::RequestOutput* out, absl::Time) override { return TryNext(out); }
  bool TryNext(engine::RequestOutput* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (read_) return false;
    read_ = true;
    *out = output_;
    return true;
  }
  void SetNotifier(std::function<void()>) override {}
  void Close() override {}
  uint64_t request_id() const override { return 1; }

 private:
  std::mutex mu_;
  engine::RequestOutput output_;
  bool read_ = false;
};

class ScriptedEngine : public engine::Engine {
 public:
  explicit ScriptedEngine(std::vector<std::string> texts) : texts_(std::move(texts)) {
    model_config_.vocab_size = 1024;
    config_.max_model_len = 512;
  }
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> Submit(engine::Request) override {
    return std::make_shared<ScriptedHandle>(texts_);
  }
  void Shutdown(absl::Duration) override {}
  bool healthy() const override { return true; }
  engine::EngineStats stats() const override { return {}; }
  const model::ModelConfig& model_config() const override { return model_config_; }
  const engine::EngineConfig& config() const override { return config_; }
  const tokenizer::Tokenizer* tokenizer() const override { return nullptr; }
  absl::Status CheckIntegrity() override { return absl::OkStatus(); }

 private:
  std::vector<std::string> texts_;
  model::ModelConfig model_config_;
  engine::EngineConfig config_;
};

TEST(GrpcChat, ReasoningAndToolCallFields) {
  const std::string dir = TestServer::ModelDir();  // R1 template: output starts in <think>
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok =
      tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // The model's words arrive in pieces that split the tags and the call block.
  ScriptedEngine engine({"Let me ", "check.</th", "ink>",
                         "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
                         "function<｜tool▁sep｜>get_weather\n```json\n{\"city\": ",
                         "\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"});
  absl::StatusOr<std::unique_ptr<ServedModel>> model =
      ServedModel::Create({"tiny", dir, true}, tok->get(), 1024, 512);
  ASSERT_TRUE(model.ok()) << model.status();
  http::ServerContext context(http::HttpOptions{}, http::ApiKeys(), http::CorsPolicy(""), "tiny");
  context.SetReady(&engine, model->get());
  GrpcServer grpc(context, GrpcOptions{});
  ASSERT_TRUE(grpc.Start().ok());
  auto client = InferenceClient::Connect(absl::StrCat("127.0.0.1:", grpc.port()));

  v1::ChatRequest request;
  v1::ChatMessage* m = request.add_messages();
  m->set_role("user");
  m->set_content("Weather in Paris?");
  v1::Tool* tool = request.add_tools();
  tool->set_name("get_weather");
  tool->set_parameters_json(R"({"type": "object", "properties": {"city": {"type": "string"}}})");
  absl::StatusOr<StreamResult> r = client->ChatAll(request);
  ASSERT_TRUE(r.ok()) << r.status();
  const StreamResult::Choice& c = r->choices.at(0);
  EXPECT_EQ(c.reasoning, "Let me check.");
  EXPECT_EQ(c.text, "");
  ASSERT_EQ(c.tool_calls.size(), 1u);
  EXPECT_EQ(c.tool_calls[0].index(), 0);
  EXPECT_EQ(c.tool_calls[0].name(), "get_weather");
  EXPECT_THAT(c.tool_calls[0].id(), HasSubstr("call_"));
  EXPECT_EQ(c.tool_calls[0].arguments(), R"({"city": "Paris"})");
  EXPECT_EQ(c.finish_reason, v1::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(c.token_ids.size(), 6u);

  // A named tool_choice the model ignored: FAILED_PRECONDITION, not a normal answer.
  request.mutable_tool_choice()->set_function_name("get_weather");
  ScriptedEngine no_call({"</think>", "Sunny, I think."});
  context.SetReady(&no_call, model->get());
  absl::StatusOr<StreamResult> missed = client->ChatAll(request);
  EXPECT_EQ(missed.status().code(), absl::StatusCode::kFailedPrecondition) << missed.status();
  grpc.Shutdown(absl::Seconds(5));
}

}  // namespace
}  // namespace r2::server::grpc_api::testing

#include "tests/unit/grpc/grpc_test_server.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "engine/model/tiny_model.h"
#include "engine/tokenizer/tiny_tokenizer.h"
#include "tests/unit/test_paths.h"

namespace r2::server::grpc_api::testing {

void StepGate::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  open_ = false;
}

void StepGate::Open() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    allowed_ = 0;
  }
  changed_.notify_all();
}

void StepGate::Allow(int steps) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    allowed_ += steps;
  }
  changed_.notify_all();
}

void StepGate::Pass() {
  std::unique_lock<std::mutex> lock(mu_);
  ++held_;
  changed_.notify_all();
  changed_.wait(lock, [this] { return open_ || allowed_ > 0; });
  if (!open_) --allowed_;
  --held_;
}

bool StepGate::WaitUntilHeld(absl::Duration limit) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, absl::ToChronoSeconds(limit), [this] { return held_ > 0; });
}

const std::string& TestServer::ModelDir() {
  static const std::string dir = [] {
    const std::string d = r2::testing::MakeTempDir("grpc-model");
    absl::StatusOr<model::TinyModelOptions> options = model::TinyModelPreset("tiny");
    EXPECT_TRUE(options.ok()) << options.status();
    options->num_hidden_layers = 2;
    options->max_position_embeddings = 512;
    const absl::Status written =
        tokenizer::WriteTinyModelWithTokenizer(*options, d, tokenizer::TinyChatTemplate::kR1);
    EXPECT_TRUE(written.ok()) << written;
    return d;
  }();
  return dir;
}

TestServer::TestServer(TestServerOptions options) {
  http::HttpOptions http_options;
  context_ = std::make_unique<http::ServerContext>(http_options, http::ApiKeys(options.api_keys),
                                                   http::CorsPolicy(""), "tiny");
  if (options.load) {
    engine::EngineConfig config;
    config.model_dir = ModelDir();
    config.block_size = 16;
    config.kv_cache_memory_bytes = 64 << 20;
    config.max_num_seqs = options.max_num_seqs;
    config.max_num_batched_tokens = 512;
    config.max_queued_requests = options.max_queued_requests;
    std::shared_ptr<StepGate> gate = gate_;
    config.before_forward = [gate](uint64_t) {
      gate->Pass();
      return absl::OkStatus();
    };
    absl::StatusOr<std::unique_ptr<engine::Engine>> engine = engine::Engine::Create(config);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (engine.ok()) {
      engine_ = *std::move(engine);
      absl::StatusOr<std::unique_ptr<ServedModel>> model =
          ServedModel::Create({"tiny", ModelDir(), true}, engine_->tokenizer(),
                              static_cast<int32_t>(engine_->model_config().vocab_size),
                              engine_->config().max_model_len);
      EXPECT_TRUE(model.ok()) << model.status();
      if (model.ok()) model_ = *std::move(model);
    }
  }
  GrpcOptions grpc_options;
  grpc_options.max_concurrent_streams = options.max_concurrent_streams;
  grpc_ = std::make_unique<GrpcServer>(*context_, grpc_options);
  const absl::Status started = grpc_->Start();
  EXPECT_TRUE(started.ok()) << started;
  if (engine_ && model_) {
    context_->SetReady(engine_.get(), model_.get());
    grpc_->RefreshHealth();
  }
}

TestServer::~TestServer() {
  gate_->Open();
  grpc_->Shutdown(absl::Seconds(5));
  if (engine_) engine_->Shutdown(absl::Seconds(5));
}

std::unique_ptr<InferenceClient> TestServer::Client(const std::string& api_key) const {
  return InferenceClient::Connect(absl::StrCat("127.0.0.1:", grpc_->port()), api_key);
}

bool TestServer::WaitIdle(absl::Duration limit) {
  return Eventually(
      [&] {
        const engine::EngineStats s = engine_->stats();
        return s.kv_blocks_used == 0 && s.num_running == 0 && s.num_waiting == 0 &&
               context_->active_generations().load() == 0;
      },
      limit);
}

}  // namespace r2::server::grpc_api::testing

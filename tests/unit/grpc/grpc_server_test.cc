// The gRPC front end end to end over loopback: a real engine on a tiny model, called with the
// C++ client (server/grpc/client.h).
#include <atomic>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/grpc/grpc_test_server.h"

namespace r2::server::grpc_api::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

// One server (and engine) for the tests that do not need a special one.
TestServer& Shared() {
  static TestServer* server = new TestServer();
  return *server;
}

v1::GenerateRequest IdsRequest(std::vector<int32_t> ids, int32_t max_tokens) {
  v1::GenerateRequest r;
  for (int32_t id : ids) r.mutable_token_ids()->add_ids(id);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_ignore_eos(true);
  return r;
}

// The tokens the engine itself produces for `request` (the path every front end shares).
std::vector<int32_t> EngineTokens(engine::Engine& engine, engine::Request request) {
  absl::StatusOr<std::shared_ptr<engine::RequestHandle>> handle = engine.Submit(request);
  EXPECT_TRUE(handle.ok()) << handle.status();
  std::vector<int32_t> tokens;
  engine::RequestOutput out;
  while ((*handle)->Next(&out, absl::Now() + WaitLimit())) {
    for (const engine::ChoiceDelta& d : out.choices) {
      tokens.insert(tokens.end(), d.token_ids.begin(), d.token_ids.end());
    }
    if (out.finished()) break;
    out = engine::RequestOutput();
  }
  return tokens;
}

TEST(GrpcGenerate, StreamsTokensThenFinishReasonAndUsage) {
  TestServer& server = Shared();
  auto client = server.Client();
  int messages = 0;
  std::vector<int32_t> tokens;
  bool usage_last = false;
  // One engine step per message received, so each token arrives in its own message.
  server.gate().Close();
  server.gate().Allow(1);
  CallResult r = client->Generate(IdsRequest({5, 6, 7}, 12), [&](const v1::GenerateResponse& m) {
    ++messages;
    server.gate().Allow(1);
    EXPECT_FALSE(usage_last) << "nothing may follow the usage message";
    EXPECT_THAT(m.id(), HasSubstr("cmpl-"));
    for (const v1::GenerateChoice& c : m.choices()) {
      EXPECT_EQ(c.index(), 0);
      tokens.insert(tokens.end(), c.token_ids().begin(), c.token_ids().end());
      if (c.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
        EXPECT_EQ(c.finish_reason(), v1::FINISH_REASON_LENGTH);
      }
    }
    if (m.has_usage()) {
      usage_last = true;
      EXPECT_EQ(m.usage().prompt_tokens(), 3);
      EXPECT_EQ(m.usage().completion_tokens(), 12);
      EXPECT_EQ(m.usage().total_tokens(), 15);
    }
    return true;
  });
  server.gate().Open();
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_TRUE(usage_last);
  EXPECT_EQ(messages, 12) << "one message per step: the output streams";
  EXPECT_THAT(tokens, SizeIs(12));

  // The same tokens the engine gives the same request directly (what HTTP submits too).
  engine::Request direct;
  direct.prompt = {5, 6, 7};
  direct.params.temperature = 0;
  direct.params.max_tokens = 12;
  direct.params.ignore_eos = true;
  EXPECT_EQ(tokens, EngineTokens(server.engine(), direct));
  EXPECT_TRUE(server.WaitIdle());
}

TEST(GrpcGenerate, TextPromptLogprobsAndSeededSampling) {
  TestServer& server = Shared();
  auto client = server.Client();
  v1::GenerateRequest request;
  request.set_text("Hello there, tiny model");
  v1::SamplingParams* s = request.mutable_sampling();
  s->set_max_tokens(10);
  s->set_temperature(0.9f);
  s->set_seed(1234);
  s->set_ignore_eos(true);
  s->set_logprobs(true);
  s->set_top_logprobs(3);
  s->set_n(2);
  absl::StatusOr<StreamResult> a = client->GenerateAll(request);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_THAT(a->choices, SizeIs(2));
  for (const auto& [index, c] : a->choices) {
    EXPECT_THAT(c.token_ids, SizeIs(10));
    ASSERT_THAT(c.logprobs, SizeIs(10));
    for (size_t k = 0; k < c.token_ids.size(); ++k) {
      EXPECT_EQ(c.logprobs[k].sampled().token_id(), c.token_ids[k]);
      EXPECT_LE(c.logprobs[k].sampled().logprob(), 0.0f);
      EXPECT_GE(c.logprobs[k].rank(), 1);
      EXPECT_EQ(c.logprobs[k].top_size(), 3);
    }
    EXPECT_EQ(c.finish_reason, v1::FINISH_REASON_LENGTH);
  }
  ASSERT_TRUE(a->usage.has_value());
  EXPECT_EQ(a->usage->completion_tokens(), 20);
  absl::StatusOr<StreamResult> b = client->GenerateAll(request);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->choices.at(0).token_ids, b->choices.at(0).token_ids) << "same seed, same tokens";
  EXPECT_EQ(a->choices.at(1).token_ids, b->choices.at(1).token_ids);
  EXPECT_EQ(a->choices.at(0).text, b->choices.at(0).text);
}

TEST(GrpcChat, StreamsReasoningWithR1TemplateAndEnds) {
  TestServer& server = Shared();
  auto client = server.Client();
  v1::ChatRequest request;
  v1::ChatMessage* m = request.add_messages();
  m->set_role("user");
  m->set_content("What is two plus two?");
  request.mutable_sampling()->set_max_tokens(16);
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_ignore_eos(true);
  absl::StatusOr<StreamResult> r = client->ChatAll(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->id, HasSubstr("chatcmpl-"));
  ASSERT_THAT(r->choices, SizeIs(1));
  const StreamResult::Choice& c = r->choices.at(0);
  EXPECT_THAT(c.token_ids, SizeIs(16));
  // R1's generation prompt ends in "<think>\n": the random model never closes it, so everything
  // it says is reasoning.
  EXPECT_FALSE(c.reasoning.empty());
  EXPECT_TRUE(c.text.empty());
  EXPECT_EQ(c.finish_reason, v1::FINISH_REASON_LENGTH);
  ASSERT_TRUE(r->usage.has_value());
  EXPECT_GT(r->usage->prompt_tokens(), 5);

  // The prompt Chat sent is the one Tokenize renders for the same messages.
  v1::TokenizeRequest tokenize;
  *tokenize.mutable_chat() = request;
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(client->Tokenize(tokenize, &tokens).status.ok());
  EXPECT_EQ(tokens.token_ids_size(), r->usage->prompt_tokens());
  EXPECT_TRUE(server.WaitIdle());
}

struct BadCase {
  const char* name;
  std::function<void(v1::GenerateRequest*)> mutate;
  const char* field;
};

TEST(GrpcErrors, InvalidArgumentNamesTheField) {
  auto client = Shared().Client();
  const std::vector<BadCase> cases = {
      {"temperature", [](auto* r) { r->mutable_sampling()->set_temperature(3); },
       "sampling.temperature"},
      {"top_p", [](auto* r) { r->mutable_sampling()->set_top_p(0); }, "sampling.top_p"},
      {"n", [](auto* r) { r->mutable_sampling()->set_n(0); }, "sampling.n"},
      {"max_tokens", [](auto* r) { r->mutable_sampling()->set_max_tokens(0); },
       "sampling.max_tokens"},
      {"stop_token_ids", [](auto* r) { r->mutable_sampling()->add_stop_token_ids(1 << 20); },
       "sampling.stop_token_ids"},
      {"logit_bias", [](auto* r) { (*r->mutable_sampling()->mutable_logit_bias())[3] = 500; },
       "sampling.logit_bias"},
      {"top_logprobs", [](auto* r) { r->mutable_sampling()->set_top_logprobs(2); },
       "sampling.top_logprobs"},
      {"no prompt", [](auto* r) { r->clear_token_ids(); }, "prompt"},
      {"token outside vocab", [](auto* r) { r->mutable_token_ids()->add_ids(1 << 24); }, "prompt"},
      {"negative token", [](auto* r) { r->mutable_token_ids()->add_ids(-1); }, "prompt"},
      {"context too long", [](auto* r) { r->mutable_sampling()->set_max_tokens(100000); },
       "sampling.max_tokens"},
  };
  for (const BadCase& bad : cases) {
    v1::GenerateRequest request = IdsRequest({5, 6}, 4);
    bad.mutate(&request);
    CallResult r = client->Generate(request, [](const auto&) { return true; });
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << bad.name << ": " << r.status;
    EXPECT_EQ(r.field, bad.field) << bad.name;
    EXPECT_THAT(std::string(r.status.message()), HasSubstr(bad.field)) << bad.name;
  }
}

TEST(GrpcErrors, ChatInvalidArgumentNamesTheField) {
  auto client = Shared().Client();
  auto base = [] {
    v1::ChatRequest r;
    v1::ChatMessage* m = r.add_messages();
    m->set_role("user");
    m->set_content("hi");
    r.mutable_sampling()->set_max_tokens(2);
    return r;
  };
  struct ChatCase {
    const char* name;
    std::function<void(v1::ChatRequest*)> mutate;
    const char* field;
  };
  const std::vector<ChatCase> cases = {
      {"no messages", [](auto* r) { r->clear_messages(); }, "messages"},
      {"empty role", [](auto* r) { r->mutable_messages(0)->set_role(""); }, "messages"},
      {"user without content", [](auto* r) { r->mutable_messages(0)->clear_content(); },
       "messages"},
      {"tool_choice without tools",
       [](auto* r) { r->mutable_tool_choice()->set_function_name("f"); }, "tool_choice"},
      {"bad parameters_json",
       [](auto* r) {
         v1::Tool* t = r->add_tools();
         t->set_name("f");
         t->set_parameters_json("{not json");
       },
       "tools"},
      {"tool without name", [](auto* r) { r->add_tools(); }, "tools"},
      {"kwargs not an object", [](auto* r) { r->set_chat_template_kwargs_json("[1]"); },
       "chat_template_kwargs_json"},
      {"min_p", [](auto* r) { r->mutable_sampling()->set_min_p(2); }, "sampling.min_p"},
  };
  for (const ChatCase& bad : cases) {
    v1::ChatRequest request = base();
    bad.mutate(&request);
    CallResult r = client->Chat(request, [](const auto&) { return true; });
    EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument) << bad.name << ": " << r.status;
    EXPECT_EQ(r.field, bad.field) << bad.name;
  }
}

TEST(GrpcErrors, UnknownModelIsNotFound) {
  auto client = Shared().Client();
  v1::GenerateRequest request = IdsRequest({5}, 2);
  request.set_model("gpt-4");
  CallResult r = client->Generate(request, [](const auto&) { return true; });
  EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound) << r.status;
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("gpt-4"));
  request.set_model("tiny");
  EXPECT_TRUE(client->GenerateAll(request).ok());
}

TEST(GrpcErrors, ApiKeysAreRequiredWhenConfigured) {
  TestServer server({.api_keys = {"sesame"}});
  v1::ListModelsResponse models;
  EXPECT_EQ(server.Client()->ListModels(&models).status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(server.Client("wrong")->ListModels(&models).status.code(),
            absl::StatusCode::kUnauthenticated);
  CallResult r =
      server.Client("wrong")->Generate(IdsRequest({5}, 2), [](const auto&) { return true; });
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(server.Client("sesame")->ListModels(&models).status.ok());
  EXPECT_TRUE(server.Client("sesame")->GenerateAll(IdsRequest({5}, 2)).ok());
  // Health needs no key (load balancers and probes).
  absl::StatusOr<bool> health = server.Client()->CheckHealth();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_TRUE(*health);
}

TEST(GrpcErrors, UnavailableWhileLoadingAndDraining) {
  TestServer loading({.load = false});
  auto client = loading.Client();
  CallResult r = client->Generate(IdsRequest({5}, 2), [](const auto&) { return true; });
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("loading"));
  absl::StatusOr<bool> health = client->CheckHealth();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_FALSE(*health);

  TestServer draining;
  draining.context().StartDraining();
  draining.grpc().RefreshHealth();
  auto client2 = draining.Client();
  r = client2->Generate(IdsRequest({5}, 2), [](const auto&) { return true; });
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
  EXPECT_FALSE(*client2->CheckHealth());
  EXPECT_FALSE(*client2->CheckHealth("r2serve.v1.Inference"));
}

TEST(GrpcErrors, QueueFullAndStreamLimitAreResourceExhausted) {
  TestServer server({.max_queued_requests = 1, .max_num_seqs = 1, .max_concurrent_streams = 3});
  auto client = server.Client();
  server.gate().Close();
  // A runs and is held at the gate; B waits in the queue, which is then full.
  std::vector<std::thread> calls;
  std::vector<CallResult> results(2);
  for (int i = 0; i < 2; ++i) {
    calls.emplace_back([&, i] {
      results[i] = client->Generate(IdsRequest({5, 6}, 3), [](const auto&) { return true; });
    });
    if (i == 0) ASSERT_TRUE(server.gate().WaitUntilHeld(WaitLimit()));
    ASSERT_TRUE(Eventually([&] { return server.context().active_generations().load() == i + 1; }));
  }
  CallResult full = client->Generate(IdsRequest({5, 6}, 3), [](const auto&) { return true; });
  EXPECT_EQ(full.status.code(), absl::StatusCode::kResourceExhausted) << full.status;
  EXPECT_THAT(std::string(full.status.message()), HasSubstr("max_queued_requests"));
  server.gate().Open();
  for (std::thread& t : calls) t.join();
  for (const CallResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;

  // The stream limit: 3 open streams, the 4th is refused.
  calls.clear();
  results.assign(3, {});
  TestServer wide({.max_concurrent_streams = 3});
  auto wide_client = wide.Client();
  wide.gate().Close();
  for (int i = 0; i < 3; ++i) {
    calls.emplace_back([&, i] {
      results[i] = wide_client->Generate(IdsRequest({5, 6}, 3), [](const auto&) { return true; });
    });
  }
  ASSERT_TRUE(Eventually([&] { return wide.grpc().active_streams() == 3; }));
  CallResult over = wide_client->Generate(IdsRequest({5, 6}, 3), [](const auto&) { return true; });
  EXPECT_EQ(over.status.code(), absl::StatusCode::kResourceExhausted) << over.status;
  EXPECT_THAT(std::string(over.status.message()), HasSubstr("concurrent streams"));
  wide.gate().Open();
  for (std::thread& t : calls) t.join();
  for (const CallResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
}

TEST(GrpcCancel, ClientCancelAbortsTheRequestAndFreesBlocks) {
  TestServer& server = Shared();
  ASSERT_TRUE(server.WaitIdle());
  auto client = server.Client();
  int seen = 0;
  CallResult r = client->Generate(IdsRequest({5, 6, 7}, 400), [&](const v1::GenerateResponse& m) {
    ++seen;
    return false;  // cancel after the first message
  });
  EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled) << r.status;
  EXPECT_EQ(seen, 1);
  EXPECT_TRUE(server.WaitIdle()) << "KV blocks back to baseline";
  const engine::EngineStats stats = server.engine().stats();
  EXPECT_GE(stats.requests_finished_abort, 1u);
}

TEST(GrpcCancel, ExpiredDeadlineAbortsTheRequest) {
  TestServer server;
  auto client = server.Client();
  server.gate().Close();  // the request cannot make progress before its deadline
  const uint64_t aborts_before = server.engine().stats().requests_finished_abort;
  CallResult r;
  std::thread call([&] {
    CallOptions options;
    options.timeout = absl::Seconds(2);
    r = client->Generate(
        IdsRequest({5, 6, 7}, 400), [](const auto&) { return true; }, options);
  });
  ASSERT_TRUE(server.gate().WaitUntilHeld(WaitLimit())) << "the request reached the engine";
  call.join();  // returns when the deadline has passed
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded) << r.status;
  server.gate().Open();
  EXPECT_TRUE(server.WaitIdle()) << "KV blocks back to baseline";
  EXPECT_TRUE(Eventually(
      [&] { return server.engine().stats().requests_finished_abort == aborts_before + 1; }));
}

TEST(GrpcConcurrency, SixtyFourStreamsAllComplete) {
  TestServer& server = Shared();
  ASSERT_TRUE(server.WaitIdle());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&, i] {
      auto client = server.Client();
      v1::GenerateRequest request = IdsRequest({5 + i % 7, 9}, 8);
      absl::StatusOr<StreamResult> r = client->GenerateAll(request);
      if (r.ok() && r->choices.at(0).token_ids.size() == 8) ok.fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), 64);
  EXPECT_TRUE(server.WaitIdle());
  EXPECT_EQ(server.grpc().active_streams(), 0);
}

TEST(GrpcInfo, TokenizeDetokenizeModelsServerInfoHealth) {
  TestServer& server = Shared();
  auto client = server.Client();
  v1::TokenizeRequest tokenize;
  tokenize.set_text("hello world");
  v1::TokenizeResponse ids;
  ASSERT_TRUE(client->Tokenize(tokenize, &ids).status.ok());
  ASSERT_GT(ids.token_ids_size(), 1);
  EXPECT_EQ(ids.token_ids(0), 0) << "BOS added to text by default";
  EXPECT_EQ(ids.max_model_len(), 512);
  v1::DetokenizeRequest detokenize;
  detokenize.mutable_token_ids()->CopyFrom(ids.token_ids());
  v1::DetokenizeResponse text;
  ASSERT_TRUE(client->Detokenize(detokenize, &text).status.ok());
  EXPECT_THAT(text.text(), HasSubstr("hello world"));
  detokenize.add_token_ids(-5);
  CallResult bad = client->Detokenize(detokenize, &text);
  EXPECT_EQ(bad.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.field, "token_ids");

  v1::ListModelsResponse models;
  ASSERT_TRUE(client->ListModels(&models).status.ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).id(), "tiny");
  EXPECT_EQ(models.models(0).max_model_len(), 512);

  v1::GetServerInfoResponse info;
  ASSERT_TRUE(client->GetServerInfo(&info).status.ok());
  EXPECT_TRUE(info.ready());
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_TRUE(info.has_chat_template());
  EXPECT_TRUE(info.reasoning());
  EXPECT_GT(info.kv_blocks_total(), 0);

  EXPECT_TRUE(*client->CheckHealth());
  EXPECT_TRUE(*client->CheckHealth("r2serve.v1.Inference"));
  absl::StatusOr<bool> unknown = client->CheckHealth("no.such.Service");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace r2::server::grpc_api::testing

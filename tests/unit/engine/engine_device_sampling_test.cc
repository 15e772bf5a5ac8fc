// Sampling on the device path: on a backend whose memory is not host memory (checked-memory, the
// CPU stand-in for a GPU) the logits stay in backend memory and the engine samples them with
// Backend::SampleRows (engine/device_sampler.h). The same requests give exactly the tokens and
// logprobs of the host path (the Sampler on host logits, cpu-reference backend): greedy, seeded
// sampling with every parameter, unseeded sampling (engine draws), logprobs with top lists,
// n > 1, penalties, logit_bias, min_tokens with EOS.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/engine/engine_test_util.h"

namespace r2::engine {
namespace {

using testing::Collect;
using testing::Collected;
using testing::MakeEngine;
using testing::RandomPrompt;
using testing::TestEngineConfig;

std::vector<Collected> GenerateAll(const std::string& device, const std::vector<Request>& requests,
                                   bool sample_on_device = true) {
  EngineConfig config = TestEngineConfig(64);
  config.device = device;
  config.sample_on_device = sample_on_device;
  config.seed = 1234;
  auto engine = MakeEngine(config);
  if (engine == nullptr) return {};
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (const Request& request : requests) {
    auto handle = engine->Submit(request);
    EXPECT_TRUE(handle.ok()) << handle.status();
    if (handle.ok()) handles.push_back(*handle);
  }
  std::vector<Collected> out;
  for (size_t i = 0; i < handles.size(); ++i) {
    Collected c = Collect(*handles[i], requests[i].params.n);
    EXPECT_FALSE(c.timed_out) << device;
    for (const std::string& error : c.error) EXPECT_EQ(error, "") << device;
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<Request> MixedRequests() {
  std::mt19937 rng(17);
  std::vector<Request> requests;
  auto add = [&](auto edit) {
    Request r;
    r.prompt = RandomPrompt(rng, 5 + static_cast<int32_t>(requests.size()) % 9);
    r.params.max_tokens = 12;
    r.params.ignore_eos = true;
    edit(r.params);
    requests.push_back(std::move(r));
  };
  add([](sampling::SamplingParams& p) { p.temperature = 0; });
  add([](sampling::SamplingParams& p) {
    p.temperature = 0;
    p.logprobs = true;
    p.top_logprobs = 5;
  });
  add([](sampling::SamplingParams& p) { p.seed = 7; });
  add([](sampling::SamplingParams& p) {
    p.seed = 8;
    p.temperature = 0.7f;
    p.top_k = 40;
    p.top_p = 0.9f;
    p.min_p = 0.02f;
  });
  add([](sampling::SamplingParams& p) {
    p.seed = 9;
    p.temperature = 1.3f;
    p.top_p = 0.5f;
    p.logprobs = true;
    p.top_logprobs = 20;
  });
  // Unseeded: the engine's draws. Only one request is unseeded: the engine numbers its draws
  // over all unseeded rows in row order, so two unseeded requests would share the draws in an
  // order that depends on the step each one joins, which the thread submitting them does not fix.
  add([](sampling::SamplingParams& p) {
    p.temperature = 0.9f;
    p.top_k = 100;
  });
  add([](sampling::SamplingParams& p) {
    p.seed = 14;
    p.temperature = 1.0f;
    p.min_p = 0.1f;
  });
  add([](sampling::SamplingParams& p) {
    p.seed = 10;
    p.n = 3;
    p.temperature = 0.8f;
    p.logprobs = true;
  });
  add([](sampling::SamplingParams& p) {
    p.seed = 11;
    p.repetition_penalty = 1.3f;
    p.frequency_penalty = 0.7f;
    p.presence_penalty = 0.4f;
  });
  add([](sampling::SamplingParams& p) {
    p.temperature = 0;
    p.repetition_penalty = 1.5f;
    p.frequency_penalty = 1.0f;
  });
  add([](sampling::SamplingParams& p) {
    p.seed = 12;
    p.logit_bias = {{5, 100.0f}, {6, -100.0f}, {7, 3.0f}};
  });
  add([](sampling::SamplingParams& p) {  // min_tokens holds EOS (id 1) back, then it may end
    p.seed = 13;
    p.ignore_eos = false;
    p.min_tokens = 6;
    p.logit_bias = {{1, 8.0f}};
    p.stop_token_ids = {9};
  });
  return requests;
}

TEST(EngineDeviceSamplingTest, DevicePathGivesTheHostPathsTokensAndLogprobs) {
  const std::vector<Request> requests = MixedRequests();
  const std::vector<Collected> host = GenerateAll("cpu-reference", requests);
  const std::vector<Collected> device = GenerateAll("checked-memory", requests);
  ASSERT_EQ(host.size(), requests.size());
  ASSERT_EQ(device.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    EXPECT_EQ(device[i].tokens, host[i].tokens);
    EXPECT_EQ(device[i].logprobs, host[i].logprobs);
    EXPECT_EQ(device[i].finish, host[i].finish);
    for (const auto& tokens : host[i].tokens) EXPECT_FALSE(tokens.empty());
  }
  // The min_tokens request: no EOS before its 6th token, and the bias makes EOS likely after.
  const std::vector<int32_t>& held = host.back().tokens[0];
  for (size_t k = 0; k < held.size() && k < 6; ++k) EXPECT_NE(held[k], 1) << k;
}

// --nosample_on_device: a device backend's logits are copied to the host and the host Sampler
// takes them; the tokens are the same.
TEST(EngineDeviceSamplingTest, SamplingOnTheHostFromADeviceBackendGivesTheSameTokens) {
  const std::vector<Request> requests = MixedRequests();
  const std::vector<Collected> device = GenerateAll("checked-memory", requests);
  const std::vector<Collected> host = GenerateAll("checked-memory", requests, false);
  ASSERT_EQ(host.size(), requests.size());
  ASSERT_EQ(device.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "request " << i);
    EXPECT_EQ(host[i].tokens, device[i].tokens);
    EXPECT_EQ(host[i].logprobs, device[i].logprobs);
    EXPECT_EQ(host[i].finish, device[i].finish);
  }
}

}  // namespace
}  // namespace r2::engine

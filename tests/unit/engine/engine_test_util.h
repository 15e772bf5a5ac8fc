#pragma once
// Shared helpers of the engine tests: a small random-weight checkpoint written once per test
// binary (optionally with a byte-level BPE tokenizer beside it), engine construction with a KV pool
// of a given number of blocks, and a collector that reads a request's events to the end and
// checks the stream's contract (one terminal event per choice, usage last).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/model/tiny_model.h"
#include "engine/model_runner.h"
#include "tests/unit/test_paths.h"

namespace r2::engine::testing {

inline constexpr int32_t kBlockSize = 16;
inline constexpr int32_t kVocab = 2048;
// Generous: a wait that hits it is a failure, not a timing assumption.
inline absl::Duration WaitLimit() { return absl::Seconds(60); }

// The test model: the "tiny" preset with 2 decoder layers (one dense, one MoE) and a 2048-token
// vocabulary, so the gpt2_style fixture tokenizer (2000 tokens) fits.
inline model::TinyModelOptions TestModelOptions() {
  auto options = model::TinyModelPreset("tiny");
  EXPECT_TRUE(options.ok()) << options.status();
  options->vocab_size = kVocab;
  options->num_hidden_layers = 2;
  options->max_position_embeddings = 512;
  return *options;
}

// The model directory, written once per process; `with_tokenizer` adds tokenizer.json.
inline const std::string& TestModelDir(bool with_tokenizer = false) {
  static std::map<bool, std::string> dirs;
  auto it = dirs.find(with_tokenizer);
  if (it != dirs.end()) return it->second;
  const std::string dir = r2::testing::MakeTempDir(with_tokenizer ? "engine-tok" : "engine");
  const absl::Status written = model::WriteTinyModel(TestModelOptions(), dir);
  EXPECT_TRUE(written.ok()) << written;
  if (with_tokenizer) {
    std::filesystem::copy_file(
        r2::testing::SourceDir() + "/tests/golden/fixtures/tokenizer/gpt2_style.json",
        dir + "/tokenizer.json");
  }
  return dirs.emplace(with_tokenizer, dir).first->second;
}

inline int64_t BytesPerBlock() {
  model::ModelConfig config;
  const model::TinyModelOptions o = TestModelOptions();
  config.num_hidden_layers = o.num_hidden_layers;
  config.num_nextn_predict_layers = o.num_nextn_predict_layers;
  config.kv_lora_rank = o.kv_lora_rank;
  config.qk_rope_head_dim = o.qk_rope_head_dim;
  return KvBytesPerToken(config) * kBlockSize;
}

inline EngineConfig TestEngineConfig(int32_t num_blocks, bool with_tokenizer = false) {
  EngineConfig config;
  config.model_dir = TestModelDir(with_tokenizer);
  config.block_size = kBlockSize;
  config.kv_cache_memory_bytes = BytesPerBlock() * num_blocks;
  config.max_num_seqs = 64;
  config.max_num_batched_tokens = 512;
  return config;
}

inline std::unique_ptr<Engine> MakeEngine(const EngineConfig& config) {
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(config);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

inline std::vector<int32_t> RandomPrompt(std::mt19937& rng, int32_t length) {
  std::uniform_int_distribution<int32_t> token(2, kVocab - 1);
  std::vector<int32_t> prompt(length);
  for (int32_t& t : prompt) t = token(rng);
  return prompt;
}

inline Request GreedyRequest(std::vector<int32_t> prompt, int32_t max_tokens) {
  Request request;
  request.prompt = std::move(prompt);
  request.params.temperature = 0;
  request.params.max_tokens = max_tokens;
  request.params.ignore_eos = true;
  return request;
}

// Everything one request produced, per choice.
struct Collected {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> logprobs;  // of the sampled tokens
  std::vector<std::string> text;
  std::vector<FinishReason> finish;
  std::vector<std::string> stop_reason;
  std::vector<std::string> error;
  std::vector<int32_t> terminal_events;
  std::optional<Usage> usage;
  int32_t events = 0;
  bool timed_out = false;
};

// Reads `handle` to its end (or the deadline), checking that no output follows a choice's
// terminal event and that usage comes last.
inline Collected Collect(RequestHandle& handle, int32_t n = 1) {
  Collected c;
  c.tokens.resize(n);
  c.logprobs.resize(n);
  c.text.resize(n);
  c.finish.assign(n, FinishReason::kNone);
  c.stop_reason.resize(n);
  c.error.resize(n);
  c.terminal_events.assign(n, 0);
  const absl::Time deadline = absl::Now() + WaitLimit();
  RequestOutput out;
  while (!c.usage.has_value()) {
    if (!handle.Next(&out, deadline)) {
      c.timed_out = absl::Now() >= deadline;
      break;
    }
    ++c.events;
    for (const ChoiceDelta& d : out.choices) {
      EXPECT_TRUE(d.index >= 0 && d.index < n) << d.index;
      if (d.index < 0 || d.index >= n) continue;
      EXPECT_EQ(c.terminal_events[d.index], 0) << "output after choice " << d.index << " ended";
      c.tokens[d.index].insert(c.tokens[d.index].end(), d.token_ids.begin(), d.token_ids.end());
      for (const sampling::Logprobs& lp : d.logprobs) c.logprobs[d.index].push_back(lp.logprob);
      c.text[d.index] += d.text;
      if (d.finish_reason != FinishReason::kNone) {
        ++c.terminal_events[d.index];
        c.finish[d.index] = d.finish_reason;
        c.stop_reason[d.index] = d.stop_reason;
        c.error[d.index] = d.error;
      }
    }
    c.usage = out.usage;
  }
  if (c.usage.has_value()) {
    EXPECT_FALSE(handle.TryNext(&out)) << "an event after the final one";
    for (int32_t i = 0; i < n; ++i) EXPECT_EQ(c.terminal_events[i], 1) << "choice " << i;
  }
  return c;
}

// Submits and collects one request, alone.
inline Collected RunAlone(Engine& engine, Request request) {
  const int32_t n = request.params.n;
  absl::StatusOr<std::shared_ptr<RequestHandle>> handle = engine.Submit(std::move(request));
  EXPECT_TRUE(handle.ok()) << handle.status();
  if (!handle.ok()) return Collected{};
  return Collect(**handle, n);
}

// Statistics after every step so far has been published: CheckIntegrity runs on the engine
// thread after the step that was running, so it acts as a barrier.
inline EngineStats SettledStats(Engine& engine) {
  EXPECT_TRUE(engine.CheckIntegrity().ok());
  return engine.stats();
}

// The pool is back to "nothing in use" and consistent.
inline void ExpectPoolClean(Engine& engine) {
  EXPECT_TRUE(engine.CheckIntegrity().ok()) << engine.CheckIntegrity();
  const EngineStats stats = engine.stats();
  EXPECT_EQ(stats.kv_blocks_used, 0);
  EXPECT_EQ(stats.num_running, 0);
  EXPECT_EQ(stats.num_waiting, 0);
}

}  // namespace r2::engine::testing

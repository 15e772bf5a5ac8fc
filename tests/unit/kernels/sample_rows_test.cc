// SampleRows (kernels/sample_rows.h): the reference gives exactly the engine Sampler's tokens,
// logprobs, ranks and top lists, on thousands of random rows and parameter sets (greedy ties,
// quantized rows full of ties, peaked and flat rows, both top_p paths, top_k with boundary ties,
// penalties, logit_bias, min_tokens, seeded and engine draws), both on a host-memory backend and
// on the checked-memory backend (rows copied from "device" memory). Both run the one host
// implementation (kernels/cpu/host_sampling.h), so what this checks is the way there: the
// SamplingState -> spec conversion, the order of the edits, the draws' numbering and the copies.
// Also: rows hold their input values afterwards; bad specs are InvalidArgument naming the field.
#include "kernels/sample_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "engine/device_sampler.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_state.h"
#include "kernels/backend.h"

namespace r2 {
namespace {

using sampling::SampleResult;
using sampling::SamplingParams;
using sampling::SamplingState;

constexpr int32_t kEos = 1;

std::vector<float> RandomRow(std::mt19937_64& rng, int32_t vocab) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int kind = static_cast<int>(rng() % 5);
  const float scale = std::array<float, 4>{0.3f, 1.0f, 3.0f, 12.0f}[rng() % 4];
  std::vector<float> row(vocab);
  for (float& v : row) v = normal(rng) * scale;
  if (kind == 1) {  // quantized: many exact ties
    for (float& v : row) v = std::round(v * 2.0f) / 2.0f;
  } else if (kind == 2) {  // peaked, as a trained model's rows
    for (int i = 0; i < 3; ++i) row[rng() % vocab] += 15.0f + 5.0f * normal(rng);
  } else if (kind == 3) {  // a few -inf (banned by the model)
    for (int i = 0; i < vocab / 8; ++i) row[rng() % vocab] = -INFINITY;
  }
  return row;
}

SamplingParams RandomParams(std::mt19937_64& rng, int32_t vocab) {
  SamplingParams p;
  auto pick = [&](auto... values) {
    const std::array list{values...};
    return list[rng() % list.size()];
  };
  p.temperature = pick(0.0f, 0.25f, 0.8f, 1.0f, 1.0f, 1.6f);
  p.top_k = pick(0, 0, 1, 2, 5, 40, vocab, vocab + 3);
  p.top_p = pick(1.0f, 1.0f, 0.95f, 0.5f, 0.1f, 0.999f);
  p.min_p = pick(0.0f, 0.0f, 0.05f, 0.5f);
  if (rng() % 3 == 0) {
    p.repetition_penalty = pick(1.0f, 1.3f, 0.7f);
    p.frequency_penalty = pick(0.0f, 0.5f, -1.0f);
    p.presence_penalty = pick(0.0f, 1.5f, -0.5f);
  }
  for (int i = static_cast<int>(rng() % 4); i > 0; --i) {
    p.logit_bias[static_cast<int32_t>(rng() % vocab)] = pick(-100.0f, 100.0f, 3.5f, -2.0f);
  }
  if (rng() % 3 == 0) {
    p.min_tokens = pick(1, 3, 8);
    p.ignore_eos = rng() % 4 == 0;
    if (rng() % 2 == 0) p.stop_token_ids = {static_cast<int32_t>(rng() % vocab)};
  }
  if (rng() % 4 != 0) p.seed = static_cast<int64_t>(rng());
  if (rng() % 2 == 0) {
    p.logprobs = true;
    p.top_logprobs = static_cast<int32_t>(rng() % 21);
  }
  return p;
}

struct Case {
  std::vector<float> logits;  // [rows, vocab]
  std::vector<SamplingState> host_states, op_states;
};

Case RandomBatch(std::mt19937_64& rng, int32_t vocab, int rows) {
  Case c;
  for (int r = 0; r < rows; ++r) {
    const std::vector<float> row = RandomRow(rng, vocab);
    c.logits.insert(c.logits.end(), row.begin(), row.end());
    const SamplingParams params = RandomParams(rng, vocab);
    std::vector<int32_t> prompt(1 + rng() % 12);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % vocab);
    const auto choice = static_cast<uint32_t>(rng() % 3);
    absl::StatusOr<SamplingState> state = SamplingState::Create(params, prompt, vocab, choice);
    EXPECT_TRUE(state.ok()) << state.status();
    const int outputs = static_cast<int>(rng() % 6);
    for (int k = 0; k < outputs; ++k) state->AppendOutputToken(static_cast<int32_t>(rng() % vocab));
    c.host_states.push_back(*state);
    c.op_states.push_back(*state);
  }
  return c;
}

// Within 1e-5 (equal when infinite: a -inf logit's logprob is -inf).
void ExpectLogprob(float got, float expected) {
  if (got == expected) return;
  EXPECT_NEAR(got, expected, 1e-5);
}

std::vector<SamplingState*> Pointers(std::vector<SamplingState>& states) {
  std::vector<SamplingState*> out;
  for (SamplingState& s : states) out.push_back(&s);
  return out;
}

// Samples `rounds` batches with the Sampler and with DeviceSampler on `backend`, rows in
// backend memory, and expects identical results. Returns the number of rows compared.
int CompareWithSampler(Backend& backend, uint64_t seed, int rounds, int rows,
                       std::vector<int32_t> vocabs) {
  std::mt19937_64 rng(seed);
  sampling::SamplerOptions options{
      .vocab_size = 0, .eos_token_ids = {kEos}, .seed = seed, .num_threads = 1};
  int compared = 0;
  for (int32_t vocab : vocabs) {
    options.vocab_size = vocab;
    options.eos_token_ids = {vocab > kEos ? kEos : 0};
    absl::StatusOr<sampling::Sampler> sampler = sampling::Sampler::Create(options);
    EXPECT_TRUE(sampler.ok()) << sampler.status();
    engine::DeviceSampler device(options);
    for (int round = 0; round < rounds; ++round) {
      Case c = RandomBatch(rng, vocab, rows);
      // The op's copy of the logits in backend memory.
      const size_t bytes = c.logits.size() * sizeof(float);
      absl::StatusOr<void*> mem = backend.Allocate(bytes);
      EXPECT_TRUE(mem.ok()) << mem.status();
      EXPECT_TRUE(backend.CopyToBackend(*mem, c.logits.data(), bytes).ok());
      std::vector<SampleResult> expected(rows), got(rows);
      std::vector<SamplingState*> host_states = Pointers(c.host_states);
      std::vector<SamplingState*> op_states = Pointers(c.op_states);
      EXPECT_TRUE(
          sampler->SampleBatch(absl::MakeSpan(c.logits), host_states, absl::MakeSpan(expected))
              .ok());
      // Rows in reverse order, so the spec order differs from the memory order.
      std::vector<int64_t> row_ids(rows);
      for (int r = 0; r < rows; ++r) row_ids[r] = r;
      const absl::Status status = device.SampleRows(backend, static_cast<float*>(*mem), rows,
                                                    row_ids, op_states, absl::MakeSpan(got));
      EXPECT_TRUE(status.ok()) << status;
      std::vector<float> after(c.logits.size());
      EXPECT_TRUE(backend.CopyToHost(after.data(), *mem, bytes).ok());
      EXPECT_EQ(std::memcmp(after.data(), c.logits.data(), bytes), 0) << "rows were changed";
      backend.Free(*mem);
      for (int r = 0; r < rows; ++r) {
        SCOPED_TRACE(testing::Message() << "vocab " << vocab << " round " << round << " row " << r
                                        << " T " << c.host_states[r].params().temperature
                                        << " top_k " << c.host_states[r].params().top_k << " top_p "
                                        << c.host_states[r].params().top_p << " min_p "
                                        << c.host_states[r].params().min_p);
        EXPECT_EQ(got[r].token, expected[r].token);
        EXPECT_EQ(got[r].has_logprobs, expected[r].has_logprobs);
        if (expected[r].has_logprobs && got[r].has_logprobs) {
          const sampling::Logprobs& e = expected[r].logprobs;
          const sampling::Logprobs& g = got[r].logprobs;
          ExpectLogprob(g.logprob, e.logprob);
          EXPECT_EQ(g.rank, e.rank);
          EXPECT_EQ(g.num_top, e.num_top);
          for (int k = 0; k < std::min(e.num_top, g.num_top); ++k) {
            EXPECT_EQ(g.top[k].token, e.top[k].token);
            ExpectLogprob(g.top[k].logprob, e.top[k].logprob);
          }
        }
        EXPECT_EQ(c.op_states[r].num_output_tokens(), c.host_states[r].num_output_tokens());
        ++compared;
      }
    }
    EXPECT_EQ(device.engine_draws(), sampler->engine_draws());
  }
  return compared;
}

TEST(SampleRowsTest, ReferenceEqualsTheEngineSamplerOnHostMemory) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend();
  EXPECT_EQ(CompareWithSampler(*backend, 7, 60, 8, {1, 2, 7, 8, 9, 33, 64, 1000, 4099}), 4320);
}

TEST(SampleRowsTest, ReferenceEqualsTheEngineSamplerOnCheckedMemory) {
  std::unique_ptr<Backend> backend = MakeCheckedMemoryBackend();
  EXPECT_EQ(CompareWithSampler(*backend, 11, 20, 8, {3, 16, 500, 3001}), 640);
}

TEST(SampleRowsTest, ReferenceEqualsTheEngineSamplerAtFullVocabulary) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend();
  EXPECT_EQ(CompareWithSampler(*backend, 13, 3, 8, {129280}), 24);
}

SampleRowsParams OneRow(std::vector<float>& row, SampleRowSpec& spec, SampleRowResult& result) {
  return SampleRowsParams{.logits = row.data(),
                          .num_rows = 1,
                          .vocab_size = static_cast<int64_t>(row.size()),
                          .specs = &spec,
                          .num_specs = 1,
                          .results = &result};
}

TEST(SampleRowsTest, GreedyTiesGoToTheLowestId) {
  std::vector<float> row = {1.0f, 3.0f, -2.0f, 3.0f, 3.0f};
  SampleRowSpec spec{.temperature = 0.0f};
  SampleRowResult result;
  ASSERT_TRUE(SampleRowsOnHost(OneRow(row, spec, result)).ok());
  EXPECT_EQ(result.token, 1);
  const SampleLogitBias ban{.token = 1, .bias = -100.0f};
  spec.logit_bias = &ban;
  spec.num_logit_bias = 1;
  ASSERT_TRUE(SampleRowsOnHost(OneRow(row, spec, result)).ok());
  EXPECT_EQ(result.token, 3);
  EXPECT_EQ(row[1], 3.0f);  // the edit was undone
}

TEST(SampleRowsTest, EditsApplyInTheDocumentedOrder) {
  // Token 2: bias +10 then banned: banned wins. Token 3: bias +1 then repetition 2 on a positive
  // value: (1 + 1) / 2 = 1, then presence 0.5 with count 1 and frequency 1: 1 - 1.5 = -0.5.
  std::vector<float> row = {0.0f, 0.2f, 5.0f, 1.0f};
  const SampleLogitBias bias[] = {{2, 10.0f}, {3, 1.0f}};
  const int32_t banned[] = {2};
  const SampleTokenCount history[] = {{3, 1}};
  SampleRowSpec spec{.temperature = 0.0f,
                     .logit_bias = bias,
                     .num_logit_bias = 2,
                     .banned = banned,
                     .num_banned = 1,
                     .repetition_penalty = 2.0f,
                     .frequency_penalty = 1.0f,
                     .presence_penalty = 0.5f,
                     .history = history,
                     .num_history = 1,
                     .logprobs = true,
                     .top_logprobs = 2};
  SampleRowResult result;
  ASSERT_TRUE(SampleRowsOnHost(OneRow(row, spec, result)).ok());
  EXPECT_EQ(result.token, 1);  // 0.2 beats 0 and -0.5
  // Logprobs are of the raw row: token 2 is first, then 3.
  EXPECT_EQ(result.rank, 3);
  ASSERT_EQ(result.num_top, 2);
  EXPECT_EQ(result.top[0].token, 2);
  EXPECT_EQ(result.top[1].token, 3);
  const double z = std::exp(0.0) + std::exp(0.2) + std::exp(5.0) + std::exp(1.0);
  EXPECT_NEAR(result.logprob, 0.2 - std::log(z), 1e-6);
  EXPECT_EQ(row, (std::vector<float>{0.0f, 0.2f, 5.0f, 1.0f}));
}

TEST(SampleRowsTest, BadSpecsAreInvalidArgumentNamingTheField) {
  std::vector<float> row(10, 0.0f);
  SampleRowResult result;
  auto expect_invalid = [&](SampleRowSpec spec, const char* field) {
    const absl::Status s = SampleRowsOnHost(OneRow(row, spec, result));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
  };
  expect_invalid({.row = 1}, "row");
  expect_invalid({.temperature = -1.0f}, "temperature");
  expect_invalid({.top_p = 0.0f}, "top_p");
  expect_invalid({.min_p = 1.5f}, "min_p");
  expect_invalid({.uniform = 1.0}, "uniform");
  expect_invalid({.repetition_penalty = 0.0f}, "repetition_penalty");
  expect_invalid({.logprobs = true, .top_logprobs = 21}, "top_logprobs");
  const int32_t outside[] = {10};
  expect_invalid({.banned = outside, .num_banned = 1}, "banned");
  const SampleTokenCount bad_history[] = {{-1, 0}};
  expect_invalid({.history = bad_history, .num_history = 1}, "history");
  SampleRowSpec twice[2] = {{.row = 0}, {.row = 0}};
  SampleRowResult results[2];
  std::vector<float> rows(20, 0.0f);
  const absl::Status s = SampleRowsOnHost(SampleRowsParams{.logits = rows.data(),
                                                           .num_rows = 2,
                                                           .vocab_size = 10,
                                                           .specs = twice,
                                                           .num_specs = 2,
                                                           .results = results});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(SampleRowsTest, CheckedMemoryRefusesHostRows) {
  std::unique_ptr<Backend> backend = MakeCheckedMemoryBackend();
  std::vector<float> row(10, 0.0f);
  SampleRowSpec spec;
  SampleRowResult result;
  const absl::Status s = backend->SampleRows(OneRow(row, spec, result));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

}  // namespace
}  // namespace r2

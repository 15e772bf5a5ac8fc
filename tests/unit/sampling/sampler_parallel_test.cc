// The sampler's parallel path (Sampler::SampleRows on several threads): every row gives the
// token, logprobs and state it gives when the rows are sampled one by one in order on one thread,
// whatever the thread count and the batch around it; unseeded rows take their engine draws in row
// order; malformed batches are rejected before anything is sampled.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"
#include "kernels/cpu/sampling_simd.h"

namespace r2::sampling {
namespace {

namespace simd = cpu::sampling_simd;

constexpr int32_t kVocab = 3000;

Sampler MakeSampler(int32_t threads, uint64_t seed = 5) {
  absl::StatusOr<Sampler> sampler = Sampler::Create({.vocab_size = kVocab,
                                                     .eos_token_ids = {2},
                                                     .seed = seed,
                                                     .num_threads = threads,
                                                     .min_parallel_values = 0});
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return *std::move(sampler);
}

// Row r of a batch: a mix of every kind of request (greedy, seeded, unseeded, top_k, top_p,
// min_p, penalties, logit_bias, logprobs, min_tokens).
SamplingParams ParamsOf(int r) {
  SamplingParams params;
  switch (r % 6) {
    case 0:
      params.temperature = 0.0f;
      break;
    case 1:
      params.temperature = 0.8f;
      params.top_p = 0.9f;
      params.seed = 1000 + r;
      break;
    case 2:
      params.temperature = 1.1f;
      params.top_k = 40;
      break;
    case 3:
      params.temperature = 0.7f;
      params.min_p = 0.05f;
      params.logprobs = true;
      params.top_logprobs = 5;
      break;
    case 4:
      params.temperature = 0.0f;
      params.presence_penalty = 0.7f;
      params.repetition_penalty = 1.3f;
      params.logit_bias = {{7, 3.0f}};
      params.logprobs = true;
      params.top_logprobs = 2;
      break;
    default:
      params.temperature = 1.0f;
      params.min_tokens = 3;
      break;
  }
  return params;
}

struct Batch {
  std::vector<std::unique_ptr<SamplingState>> states;
  std::vector<float> logits;

  explicit Batch(int rows) {
    std::mt19937 rng(static_cast<uint32_t>(rows));
    std::normal_distribution<float> normal(0.0f, 2.0f);
    logits.resize(static_cast<size_t>(rows) * kVocab);
    for (float& x : logits) x = normal(rng);
    for (int r = 0; r < rows; ++r) {
      std::vector<int32_t> prompt = {r % kVocab, 7, 11};
      absl::StatusOr<SamplingState> state =
          SamplingState::Create(ParamsOf(r), prompt, kVocab, static_cast<uint32_t>(r % 3));
      EXPECT_TRUE(state.ok()) << state.status();
      states.push_back(std::make_unique<SamplingState>(*std::move(state)));
    }
  }
  std::vector<SamplingState*> pointers() const {
    std::vector<SamplingState*> out;
    for (const auto& state : states) out.push_back(state.get());
    return out;
  }
};

void ExpectSameResults(const std::vector<SampleResult>& a, const std::vector<SampleResult>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].token, b[i].token) << "row " << i;
    ASSERT_EQ(a[i].has_logprobs, b[i].has_logprobs) << "row " << i;
    if (!a[i].has_logprobs) continue;
    EXPECT_EQ(a[i].logprobs.logprob, b[i].logprobs.logprob) << "row " << i;
    EXPECT_EQ(a[i].logprobs.rank, b[i].logprobs.rank) << "row " << i;
    ASSERT_EQ(a[i].logprobs.num_top, b[i].logprobs.num_top) << "row " << i;
    for (int32_t k = 0; k < a[i].logprobs.num_top; ++k) {
      EXPECT_EQ(a[i].logprobs.top[k].token, b[i].logprobs.top[k].token) << "row " << i;
      EXPECT_EQ(a[i].logprobs.top[k].logprob, b[i].logprobs.top[k].logprob) << "row " << i;
    }
  }
}

// Several steps of a 48-row batch on `threads` threads; the tokens of every step.
std::vector<std::vector<SampleResult>> RunSteps(int32_t threads, int steps) {
  constexpr int kRows = 48;
  Batch batch(kRows);
  Sampler sampler = MakeSampler(threads);
  const std::vector<float> original = batch.logits;
  std::vector<std::vector<SampleResult>> out;
  for (int s = 0; s < steps; ++s) {
    std::vector<SampleResult> results(kRows);
    const std::vector<SamplingState*> states = batch.pointers();
    EXPECT_TRUE(
        sampler.SampleBatch(absl::MakeSpan(batch.logits), states, absl::MakeSpan(results)).ok());
    EXPECT_EQ(batch.logits, original);  // every row restored
    out.push_back(results);
  }
  // Rows 2, 3, 5 (mod 6) are unseeded and random: one engine draw each per step.
  EXPECT_EQ(sampler.engine_draws(), static_cast<uint64_t>(steps * 24));
  return out;
}

TEST(SamplerParallelTest, ThreadsGiveTheTokensOfOneThread) {
  const auto serial = RunSteps(1, 6);
  for (int32_t threads : {2, 3, 8}) {
    const auto parallel = RunSteps(threads, 6);
    ASSERT_EQ(parallel.size(), serial.size());
    for (size_t s = 0; s < serial.size(); ++s) {
      SCOPED_TRACE(testing::Message() << threads << " threads, step " << s);
      ExpectSameResults(parallel[s], serial[s]);
    }
  }
}

TEST(SamplerParallelTest, RowsSampledInOrderOneByOneGiveTheSameTokens) {
  // The batch on 4 threads == each row through Sample() in row order (the sequential definition
  // of the engine's draw counter).
  constexpr int kRows = 30;
  Batch batch(kRows);
  Batch alone(kRows);
  Sampler parallel = MakeSampler(4);
  Sampler one_by_one = MakeSampler(1);
  std::vector<SampleResult> results(kRows);
  const std::vector<SamplingState*> states = batch.pointers();
  ASSERT_TRUE(
      parallel.SampleBatch(absl::MakeSpan(batch.logits), states, absl::MakeSpan(results)).ok());
  std::vector<SampleResult> expected;
  for (int r = 0; r < kRows; ++r) {
    absl::StatusOr<SampleResult> result = one_by_one.Sample(
        absl::MakeSpan(alone.logits).subspan(static_cast<size_t>(r) * kVocab, kVocab),
        *alone.states[r]);
    ASSERT_TRUE(result.ok());
    expected.push_back(*result);
  }
  ExpectSameResults(results, expected);
  EXPECT_EQ(parallel.engine_draws(), one_by_one.engine_draws());
  for (int r = 0; r < kRows; ++r) {
    EXPECT_EQ(batch.states[r]->num_output_tokens(), 1);
  }
}

TEST(SamplerParallelTest, SeededRowIsIndependentOfTheBatchAroundIt) {
  // A seeded row at different positions of parallel batches of different sizes and contents
  // gives the tokens it gives alone.
  SamplingParams params;
  params.seed = 77;
  params.temperature = 0.9f;
  params.top_p = 0.95f;
  params.frequency_penalty = 0.2f;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<std::vector<float>> target_rows(12, std::vector<float>(kVocab));
  for (auto& row : target_rows) {
    for (float& x : row) x = normal(rng);
  }
  auto run = [&](int batch_size, int32_t threads) {
    Sampler sampler = MakeSampler(threads, /*seed=*/batch_size);
    absl::StatusOr<SamplingState> target = SamplingState::Create(params, {}, kVocab, 1);
    EXPECT_TRUE(target.ok());
    Batch others(batch_size);
    std::vector<int32_t> tokens;
    for (size_t step = 0; step < target_rows.size(); ++step) {
      const int position = batch_size == 0 ? 0 : static_cast<int>((step * 5) % (batch_size + 1));
      std::vector<absl::Span<float>> rows;
      std::vector<SamplingState*> states;
      std::vector<float> row = target_rows[step];
      for (int r = 0; r < batch_size; ++r) {
        if (r == position) {
          rows.push_back(absl::MakeSpan(row));
          states.push_back(&*target);
        }
        rows.push_back(
            absl::MakeSpan(others.logits).subspan(static_cast<size_t>(r) * kVocab, kVocab));
        states.push_back(others.states[r].get());
      }
      if (position >= batch_size) {
        rows.push_back(absl::MakeSpan(row));
        states.push_back(&*target);
      }
      std::vector<SampleResult> results(rows.size());
      EXPECT_TRUE(sampler.SampleRows(rows, states, absl::MakeSpan(results)).ok());
      tokens.push_back(results[std::min(position, batch_size)].token);
    }
    return tokens;
  };
  const std::vector<int32_t> alone = run(0, 1);
  EXPECT_EQ(run(7, 2), alone);
  EXPECT_EQ(run(31, 4), alone);
  EXPECT_EQ(run(64, 3), alone);
  EXPECT_GT(std::set<int32_t>(alone.begin(), alone.end()).size(), 3u);
}

TEST(SamplerParallelTest, RejectsAStateTwiceAndOverlappingRows) {
  Batch batch(3);
  Sampler sampler = MakeSampler(2);
  std::vector<SampleResult> results(3);
  std::vector<absl::Span<float>> rows;
  for (int r = 0; r < 3; ++r) {
    rows.push_back(absl::MakeSpan(batch.logits).subspan(static_cast<size_t>(r) * kVocab, kVocab));
  }
  std::vector<SamplingState*> twice = {batch.states[0].get(), batch.states[1].get(),
                                       batch.states[0].get()};
  absl::Status status = sampler.SampleRows(rows, twice, absl::MakeSpan(results));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("twice"), std::string::npos) << status;

  std::vector<absl::Span<float>> overlapping = rows;
  overlapping[2] = absl::MakeSpan(batch.logits).subspan(kVocab / 2, kVocab);
  status = sampler.SampleRows(overlapping, batch.pointers(), absl::MakeSpan(results));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("overlap"), std::string::npos) << status;

  std::vector<absl::Span<float>> short_row = rows;
  short_row[1] = short_row[1].subspan(0, 10);
  EXPECT_FALSE(sampler.SampleRows(short_row, batch.pointers(), absl::MakeSpan(results)).ok());
  for (const auto& state : batch.states) EXPECT_EQ(state->num_output_tokens(), 0);
  EXPECT_EQ(sampler.engine_draws(), 0u);
}

TEST(SamplerParallelTest, CreateRejectsNegativeThreads) {
  EXPECT_FALSE(Sampler::Create({.vocab_size = 4, .eos_token_ids = {}, .num_threads = -1}).ok());
  absl::StatusOr<Sampler> one = Sampler::Create({.vocab_size = 4, .num_threads = 1});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->num_threads(), 1);
}

// ---- the greedy pass -------------------------------------------------------------------------

int32_t ReferenceArgMax(const std::vector<float>& row) {
  int32_t best = -1;
  for (size_t i = 0; i < row.size(); ++i) {
    if (std::isnan(row[i])) continue;
    if (best < 0 || row[i] > row[best]) best = static_cast<int32_t>(i);
  }
  return best < 0 ? 0 : best;
}

TEST(SamplerParallelTest, ArgMaxIsTheFirstLargestOnRandomRows) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t n = 1 + rng() % 5000;
    std::vector<float> row(n);
    // Few distinct values, so ties (also across 1024-value chunks) are common.
    std::uniform_int_distribution<int> value(-20, trial % 2 == 0 ? 20 : 3);
    for (float& x : row) x = static_cast<float>(value(rng));
    if (trial % 5 == 0) row[rng() % n] = std::numeric_limits<float>::quiet_NaN();
    if (trial % 7 == 0) row[rng() % n] = -std::numeric_limits<float>::infinity();
    EXPECT_EQ(ArgMax(row), ReferenceArgMax(row)) << "trial " << trial << " n " << n;
  }
}

TEST(SamplerParallelTest, ArgMaxEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(ArgMax(std::vector<float>{nan, -inf, -inf}), 1);  // the first -inf
  EXPECT_EQ(ArgMax(std::vector<float>{nan, nan}), 0);
  EXPECT_EQ(ArgMax(std::vector<float>{nan, 1.0f, inf, inf}), 2);
  std::vector<float> tie_across_chunks(3000, 0.0f);
  tie_across_chunks[2500] = 5.0f;
  tie_across_chunks[1500] = 5.0f;
  EXPECT_EQ(ArgMax(tie_across_chunks), 1500);
  EXPECT_EQ(simd::ArgMax(tie_across_chunks.data(), 0), 0u);  // empty: n
}

}  // namespace
}  // namespace r2::sampling

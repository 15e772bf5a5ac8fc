#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace r2::sampling {
namespace {

using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Ne;

Sampler MakeSampler(int32_t vocab, std::vector<int32_t> eos = {}, uint64_t seed = 0) {
  absl::StatusOr<Sampler> sampler =
      Sampler::Create({.vocab_size = vocab, .eos_token_ids = std::move(eos), .seed = seed});
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return *std::move(sampler);
}

SamplingState MakeState(const SamplingParams& params, int32_t vocab, uint32_t choice = 0,
                        std::vector<int32_t> prompt = {}) {
  absl::StatusOr<SamplingState> state = SamplingState::Create(params, prompt, vocab, choice);
  EXPECT_TRUE(state.ok()) << state.status();
  return *std::move(state);
}

int32_t SampleOne(Sampler& sampler, std::vector<float>& row, SamplingState& state) {
  absl::StatusOr<SampleResult> result = sampler.Sample(absl::MakeSpan(row), state);
  EXPECT_TRUE(result.ok()) << result.status();
  return result->token;
}

SamplingParams Greedy() {
  SamplingParams params;
  params.temperature = 0.0f;
  return params;
}

TEST(SamplerTest, CreateRejectsBadOptions) {
  EXPECT_FALSE(Sampler::Create({.vocab_size = 0, .eos_token_ids = {}}).ok());
  EXPECT_FALSE(Sampler::Create({.vocab_size = 4, .eos_token_ids = {4}}).ok());
  EXPECT_FALSE(SamplingState::Create(SamplingParams(), std::vector<int32_t>{0, 9}, 4).ok());
}

TEST(SamplerTest, GreedyTakesTheLargestLogitAndTheLowestIdOnTies) {
  Sampler sampler = MakeSampler(5);
  SamplingState state = MakeState(Greedy(), 5);
  std::vector<float> row = {1, 5, 5, 2, 5};
  EXPECT_EQ(SampleOne(sampler, row, state), 1);
  std::vector<float> all_equal = {0, 0, 0, 0, 0};
  EXPECT_EQ(SampleOne(sampler, all_equal, state), 0);
  EXPECT_EQ(ArgMax(std::vector<float>{-INFINITY, -INFINITY}), 0);
  EXPECT_EQ(state.num_output_tokens(), 2);
}

TEST(SamplerTest, GreedyUsesProcessedLogitsAndLogprobsUseRawOnes) {
  Sampler sampler = MakeSampler(4);
  SamplingParams params = Greedy();
  params.logit_bias = {{0, 10.0f}};
  params.logprobs = true;
  params.top_logprobs = 2;
  SamplingState state = MakeState(params, 4);
  std::vector<float> row = {1, 4, 3, 2};
  const std::vector<float> original = row;
  absl::StatusOr<SampleResult> result = sampler.Sample(absl::MakeSpan(row), state);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->token, 0);
  ASSERT_TRUE(result->has_logprobs);
  EXPECT_EQ(result->logprobs.rank, 4);  // raw logits: 0 is the least likely
  const double log_z = std::log(std::exp(1.0) + std::exp(4.0) + std::exp(3.0) + std::exp(2.0));
  EXPECT_NEAR(result->logprobs.logprob, 1.0 - log_z, 1e-5);
  ASSERT_EQ(result->logprobs.num_top, 2);
  EXPECT_EQ(result->logprobs.top[0].token, 1);
  EXPECT_EQ(result->logprobs.top[1].token, 2);
  EXPECT_EQ(row, original);  // restored
}

TEST(SamplerTest, NoLogprobsUnlessAsked) {
  Sampler sampler = MakeSampler(3);
  SamplingState state = MakeState(SamplingParams(), 3);
  std::vector<float> row = {0, 1, 2};
  absl::StatusOr<SampleResult> result = sampler.Sample(absl::MakeSpan(row), state);
  ASSERT_TRUE(result.ok());
  EXPECT_FALSE(result->has_logprobs);
}

TEST(SamplerTest, LogitBiasMinus100BansATokenOver10000Draws) {
  constexpr int32_t kVocab = 8;
  Sampler sampler = MakeSampler(kVocab, {}, 99);
  SamplingParams params;
  params.logit_bias = {{3, -100.0f}};
  SamplingState state = MakeState(params, kVocab);
  std::vector<float> row = {0, 0, 0, 5, 0, 0, 0, 0};  // token 3 is the model's favourite
  std::vector<int> counts(kVocab, 0);
  for (int i = 0; i < 10000; ++i) ++counts[SampleOne(sampler, row, state)];
  EXPECT_EQ(counts[3], 0);
  EXPECT_THAT(counts, ElementsAre(Ne(0), Ne(0), Ne(0), 0, Ne(0), Ne(0), Ne(0), Ne(0)));
}

TEST(SamplerTest, LogitBiasPlus100ForcesAToken) {
  constexpr int32_t kVocab = 8;
  Sampler sampler = MakeSampler(kVocab, {}, 5);
  SamplingParams params;
  params.logit_bias = {{6, 100.0f}};
  SamplingState state = MakeState(params, kVocab);
  std::vector<float> row = {3, 2, 1, 0, -1, -2, -3, -4};
  std::vector<int32_t> tokens;
  for (int i = 0; i < 1000; ++i) tokens.push_back(SampleOne(sampler, row, state));
  EXPECT_THAT(tokens, Each(6));
}

TEST(SamplerTest, MinTokensSuppressesEos) {
  constexpr int32_t kVocab = 4, kEos = 3;
  Sampler sampler = MakeSampler(kVocab, {kEos});
  SamplingParams params = Greedy();
  params.min_tokens = 5;
  SamplingState state = MakeState(params, kVocab);
  std::vector<float> row = {0, 1, 0, 10};
  std::vector<int32_t> tokens;
  for (int i = 0; i < 6; ++i) tokens.push_back(SampleOne(sampler, row, state));
  EXPECT_THAT(tokens, ElementsAre(1, 1, 1, 1, 1, kEos));

  params.ignore_eos = true;  // EOS is then an ordinary token and is not masked
  SamplingState ignoring = MakeState(params, kVocab);
  EXPECT_EQ(SampleOne(sampler, row, ignoring), kEos);
}

TEST(SamplerTest, PresencePenaltyChangesGreedyChoices) {
  Sampler sampler = MakeSampler(2);
  SamplingParams params = Greedy();
  params.presence_penalty = 0.5f;
  SamplingState state = MakeState(params, 2);
  std::vector<float> row = {1.0f, 0.9f};
  std::vector<int32_t> tokens;
  for (int i = 0; i < 3; ++i) tokens.push_back(SampleOne(sampler, row, state));
  EXPECT_THAT(tokens, ElementsAre(0, 1, 0));  // 1 > 0.9; 0.5 < 0.9; 0.5 > 0.4
}

TEST(SamplerTest, RepetitionPenaltyCoversThePrompt) {
  Sampler sampler = MakeSampler(3);
  SamplingParams params = Greedy();
  params.repetition_penalty = 2.0f;
  SamplingState state = MakeState(params, 3, 0, {0});
  std::vector<float> row = {3.0f, 2.0f, 1.0f};
  EXPECT_EQ(SampleOne(sampler, row, state), 1);  // 3 / 2 = 1.5 < 2
}

TEST(SamplerTest, SampleBatchRejectsMismatchedInputs) {
  Sampler sampler = MakeSampler(4);
  SamplingState state = MakeState(SamplingParams(), 4);
  SamplingState other_vocab = MakeState(SamplingParams(), 5);
  std::vector<float> logits(8, 0.0f);
  std::vector<SampleResult> results(2);
  SamplingState* one[] = {&state};
  EXPECT_FALSE(sampler.SampleBatch(absl::MakeSpan(logits), one, absl::MakeSpan(results)).ok());
  SamplingState* with_null[] = {&state, nullptr};
  EXPECT_FALSE(
      sampler.SampleBatch(absl::MakeSpan(logits), with_null, absl::MakeSpan(results)).ok());
  SamplingState* mixed[] = {&state, &other_vocab};
  EXPECT_FALSE(sampler.SampleBatch(absl::MakeSpan(logits), mixed, absl::MakeSpan(results)).ok());
  EXPECT_EQ(state.num_output_tokens(), 0);
}

// ---- seeded determinism -----------------------------------------------------------------------

constexpr int32_t kVocab = 512;
constexpr int kSteps = 40;

std::vector<float> StepLogits(uint32_t stream, int step) {
  std::mt19937 rng(stream * 7919u + static_cast<uint32_t>(step));
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> row(kVocab);
  for (float& x : row) x = normal(rng);
  return row;
}

SamplingParams TargetParams() {
  SamplingParams params;
  params.seed = 1234;
  params.temperature = 0.9f;
  params.top_p = 0.95f;
  params.top_k = 200;
  params.min_p = 0.001f;
  params.frequency_penalty = 0.3f;
  return params;
}

// The target's tokens when it is sampled alone.
std::vector<int32_t> RunAlone(uint64_t engine_seed, uint32_t choice = 0) {
  Sampler sampler = MakeSampler(kVocab, {}, engine_seed);
  SamplingState state = MakeState(TargetParams(), kVocab, choice);
  std::vector<int32_t> tokens;
  for (int step = 0; step < kSteps; ++step) {
    std::vector<float> row = StepLogits(0, step);
    tokens.push_back(SampleOne(sampler, row, state));
  }
  return tokens;
}

// The target's tokens when it shares each step with 15 other sequences of random parameters and
// logits, at a position that changes from step to step.
std::vector<int32_t> RunInBatch(uint64_t engine_seed, uint32_t shuffle_seed) {
  constexpr int kBatch = 16;
  Sampler sampler = MakeSampler(kVocab, {}, engine_seed);
  std::mt19937 rng(shuffle_seed);
  std::vector<std::unique_ptr<SamplingState>> others;
  for (int i = 1; i < kBatch; ++i) {
    SamplingParams params;
    params.temperature = std::uniform_real_distribution<float>(0.0f, 1.5f)(rng);
    params.top_k = std::uniform_int_distribution<int32_t>(0, 100)(rng);
    if (i % 3 == 0) params.seed = static_cast<int64_t>(rng());
    if (i % 4 == 0) params.logprobs = true, params.top_logprobs = 5;
    others.push_back(std::make_unique<SamplingState>(MakeState(params, kVocab, i % 2)));
  }
  SamplingState target = MakeState(TargetParams(), kVocab);
  std::vector<int32_t> tokens;
  std::vector<SampleResult> results(kBatch);
  for (int step = 0; step < kSteps; ++step) {
    std::vector<SamplingState*> states = {&target};
    for (auto& other : others) states.push_back(other.get());
    std::shuffle(states.begin(), states.end(), rng);
    std::vector<float> logits;
    size_t target_row = 0;
    for (size_t r = 0; r < states.size(); ++r) {
      const bool is_target = states[r] == &target;
      if (is_target) target_row = r;
      const std::vector<float> row = StepLogits(is_target ? 0 : 1 + rng() % 1000, step);
      logits.insert(logits.end(), row.begin(), row.end());
    }
    EXPECT_TRUE(sampler.SampleBatch(absl::MakeSpan(logits), states, absl::MakeSpan(results)).ok());
    tokens.push_back(results[target_row].token);
  }
  return tokens;
}

TEST(SamplerSeedTest, SameSeedSameTokensWhateverTheBatch) {
  const std::vector<int32_t> alone = RunAlone(1);
  EXPECT_EQ(RunAlone(1), alone);
  EXPECT_EQ(RunAlone(2), alone);  // the engine seed does not matter to seeded requests
  EXPECT_EQ(RunInBatch(3, 17), alone);
  EXPECT_EQ(RunInBatch(4, 18), alone);
  // The tokens are not trivially constant.
  EXPECT_GT(std::set<int32_t>(alone.begin(), alone.end()).size(), 10u);
}

TEST(SamplerSeedTest, ChoicesOfOneSeedDiffer) { EXPECT_NE(RunAlone(1, 0), RunAlone(1, 1)); }

TEST(SamplerSeedTest, UnseededRequestsFollowTheEngineSeed) {
  auto run = [](uint64_t engine_seed) {
    Sampler sampler = MakeSampler(kVocab, {}, engine_seed);
    SamplingState state = MakeState(SamplingParams(), kVocab);
    std::vector<int32_t> tokens;
    for (int step = 0; step < kSteps; ++step) {
      std::vector<float> row = StepLogits(0, step);
      tokens.push_back(SampleOne(sampler, row, state));
    }
    EXPECT_EQ(sampler.engine_draws(), static_cast<uint64_t>(kSteps));
    return tokens;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

// ---- statistics ---------------------------------------------------------------------------------

// The target distribution for temperature 0.7 and top_p 0.9, computed independently: softmax in
// double, sort, keep the shortest prefix reaching 0.9, renormalize.
std::map<int32_t, double> ReferenceDistribution(const std::vector<float>& logits) {
  std::vector<double> p(logits.size());
  double z = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) z += p[i] = std::exp((logits[i] - logits[0]) / 0.7);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
  std::map<int32_t, double> kept;
  double cumulative = 0.0, kept_mass = 0.0;
  for (int32_t id : order) {
    kept[id] = p[id];
    kept_mass += p[id];
    cumulative += p[id] / z;
    if (cumulative >= 0.9) break;
  }
  for (auto& [id, q] : kept) q /= kept_mass;
  return kept;
}

TEST(SamplerStatisticsTest, FrequenciesMatchTemperatureAndTopP) {
  // Distinct logits, largest first; at temperature 0.7 the top 6 carry ~92% of the mass.
  const std::vector<float> logits = {2.0f, 1.5f, 1.2f,  1.0f,  0.8f,  0.5f,
                                     0.3f, 0.0f, -0.5f, -1.0f, -2.0f, -3.0f};
  const auto vocab = static_cast<int32_t>(logits.size());
  const std::map<int32_t, double> expected = ReferenceDistribution(logits);
  ASSERT_EQ(expected.size(), 6u);

  Sampler sampler = MakeSampler(vocab);
  SamplingParams params;
  params.temperature = 0.7f;
  params.top_p = 0.9f;
  params.seed = 20240601;
  SamplingState state = MakeState(params, vocab);
  constexpr int kDraws = 60000;
  std::vector<int> counts(vocab, 0);
  std::vector<float> row = logits;
  for (int i = 0; i < kDraws; ++i) ++counts[SampleOne(sampler, row, state)];

  double chi_square = 0.0;
  for (int32_t id = 0; id < vocab; ++id) {
    auto it = expected.find(id);
    if (it == expected.end()) {
      EXPECT_EQ(counts[id], 0) << "token " << id << " is outside the top_p set";
      continue;
    }
    const double e = it->second * kDraws;
    chi_square += (counts[id] - e) * (counts[id] - e) / e;
  }
  // 5 degrees of freedom; the 0.999 quantile of chi-square(5) is 20.515. The seed is fixed, so
  // the statistic is too: this fails only if the sampler's distribution is wrong.
  RecordProperty("chi_square", std::to_string(chi_square));
  EXPECT_LT(chi_square, 20.515);
}

}  // namespace
}  // namespace r2::sampling

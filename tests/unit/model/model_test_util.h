#pragma once
// Shared helpers for the forward-pass tests: a tiny preset checkpoint loaded on a backend
// (written once per preset per test binary), block assignment by hand, logits comparison.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/tiny_model.h"
#include "kernels/backend.h"
#include "tests/unit/test_paths.h"

namespace r2::model::testing {

struct LoadedModel {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<DeepseekModel> model;
};

// The backends the model tests run on: the reference, the optimized CPU backend ("cpu"), the
// checked-memory stand-in for a device (proves nothing host-side reaches a device op) and, where
// a device exists, CUDA twice: with float32 activations everywhere ("cuda-fp32", held to the CPU
// bounds: the same function) and in its serving mode ("cuda": bf16 operands through cuBLASLt
// above a few rows).
inline const std::vector<std::string>& ModelTestBackends() {
  static const std::vector<std::string> names = {"cpu-reference", "cpu", "checked-memory",
                                                 "cuda-fp32", "cuda"};
  return names;
}

// True where the rounding of a row depends on how many rows its step has ("cuda": the row count
// picks GEMV with float32 activations or cuBLASLt with bf16 operands). On random tiny models a
// router near-tie can then pick another expert, so tests that compare one batch shape against
// another run on the exact backends (cuda-fp32 covers the same kernels) and skip here.
inline bool RoundingDependsOnBatchShape(const std::string& backend) { return backend == "cuda"; }

// Empty when `backend` can be made here, else why not (for GTEST_SKIP).
inline std::string BackendUnavailable(const std::string& backend) {
  static std::map<std::string, std::string> reasons;
  auto it = reasons.find(backend);
  if (it != reasons.end()) return it->second;
  auto made = MakeBackend(backend);
  return reasons[backend] = made.ok() ? "" : std::string(made.status().message());
}

// The logits bound for `backend` where the CPU backends are held to `cpu_bound`: "cuda-fp32"
// differs from the reference only in summation order (1e-3 covers it); "cuda" computes with bf16
// tensor-core products (float32 accumulation), typically 5e-3 relative to the largest logit,
// 3e-2 per row allowed (golden_test.cc adds the share of rows that may exceed it: router flips).
inline double LogitsBound(const std::string& backend, double cpu_bound) {
  if (backend == "cuda-fp32") return std::max(cpu_bound, 1e-3);
  return backend == "cuda" ? std::max(cpu_bound, 3e-2) : cpu_bound;
}

// Writes preset `name` (seed `seed`) into a fresh temp dir and loads it on `backend`; cached per
// (name, seed, backend).
inline DeepseekModel& PresetModel(const std::string& name, uint64_t seed = 0,
                                  const std::string& backend = "cpu-reference") {
  static std::map<std::tuple<std::string, uint64_t, std::string>, LoadedModel> models;
  auto it = models.find({name, seed, backend});
  if (it != models.end()) return *it->second.model;
  auto options = TinyModelPreset(name);
  EXPECT_TRUE(options.ok()) << options.status();
  options->seed = seed;
  const std::string dir = r2::testing::MakeTempDir("model-" + name);
  const absl::Status written = WriteTinyModel(*options, dir);
  EXPECT_TRUE(written.ok()) << written;
  LoadedModel loaded;
  auto made = MakeBackend(backend);
  EXPECT_TRUE(made.ok()) << made.status();
  loaded.backend = made.ok() ? *std::move(made) : MakeCpuReferenceBackend();
  auto model = DeepseekModel::Load(dir, loaded.backend.get());
  EXPECT_TRUE(model.ok()) << model.status();
  loaded.model = *std::move(model);
  return *models.emplace(std::make_tuple(name, seed, backend), std::move(loaded))
              .first->second.model;
}

// Test parameter for the preset x backend suites, and its test-name suffix.
using PresetOnBackend = std::tuple<const char*, std::string>;
inline std::string PresetOnBackendName(const ::testing::TestParamInfo<PresetOnBackend>& info) {
  std::string name = std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

inline std::unique_ptr<PagedKvCache> MakeCache(const DeepseekModel& model, int64_t num_blocks,
                                               int64_t block_size) {
  auto cache = PagedKvCache::Create(model.CacheShape(num_blocks, block_size), model.backend());
  EXPECT_TRUE(cache.ok()) << cache.status();
  return *std::move(cache);
}

inline std::vector<int32_t> RandomTokens(std::mt19937& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> dist(2, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = dist(rng);
  return ids;
}

// `count` distinct block ids out of [0, num_blocks), shuffled (so sequences never own
// neighbouring blocks by accident).
inline std::vector<int32_t> ShuffledBlocks(std::mt19937& rng, int64_t num_blocks) {
  std::vector<int32_t> blocks(num_blocks);
  for (int64_t i = 0; i < num_blocks; ++i) blocks[i] = static_cast<int32_t>(i);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  return blocks;
}

// max |a - b| / max |b|.
inline double RelativeDiff(absl::Span<const float> a, absl::Span<const float> b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(double(b[i])));
  }
  return ref == 0 ? diff : diff / ref;
}

inline int64_t ArgMax(absl::Span<const float> v) {
  return std::max_element(v.begin(), v.end()) - v.begin();
}

// Logits of every token of `ids` from one prefill into a fresh cache.
inline std::vector<float> PrefillLogits(DeepseekModel& model, const std::vector<int32_t>& ids,
                                        std::vector<float>* hidden = nullptr) {
  auto cache = MakeCache(model, (ids.size() + 63) / 64 + 1, 64);
  std::vector<int32_t> table;
  for (int64_t b = 0; b < cache->num_blocks(); ++b) table.push_back(static_cast<int32_t>(b));
  SequenceInput seq{.token_ids = ids, .start_pos = 0, .block_table = table};
  auto out = model.Forward({&seq, 1}, LogitsMode::kAll, *cache);
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {};
  if (hidden != nullptr) *hidden = out->hidden;
  return out->logits;
}

// The KV cache format tests' run: `prompt` as a prefill in two chunks (its first `first_chunk`
// tokens, then the rest reading them through the cache), then `decode_steps` single-token steps,
// over a cache in `dtype` of 8-token blocks in shuffled order. The token fed after each step is
// forced[i] when `forced` is given (teacher forcing), else the greedy choice.
struct DecodeTrace {
  std::vector<std::vector<float>> logits;  // one row per step: the last prompt token, then decode
  std::vector<int32_t> tokens;             // the token fed after each row
};
inline absl::StatusOr<DecodeTrace> ChunkedPrefillThenDecode(
    DeepseekModel& model, KvCacheDType dtype, const std::vector<int32_t>& prompt,
    int64_t first_chunk, int64_t decode_steps, const std::vector<int32_t>* forced) {
  constexpr int64_t kBlockSize = 8;
  const int64_t blocks = (static_cast<int64_t>(prompt.size()) + decode_steps) / kBlockSize + 2;
  auto cache = PagedKvCache::Create(model.CacheShape(blocks, kBlockSize, dtype), model.backend());
  if (!cache.ok()) return cache.status();
  std::mt19937 rng(7);
  const std::vector<int32_t> table = ShuffledBlocks(rng, blocks);
  DecodeTrace run;
  std::vector<int32_t> step(prompt.begin(), prompt.begin() + first_chunk);
  int64_t start = 0;
  for (int64_t i = 0; i <= decode_steps + 1; ++i) {
    SequenceInput seq{.token_ids = step, .start_pos = start, .block_table = table};
    auto out = model.Forward({&seq, 1}, LogitsMode::kLastPerSequence, **cache);
    if (!out.ok()) return out.status();
    start += static_cast<int64_t>(step.size());
    if (i == 0) {  // the rest of the prompt, over the first chunk in the cache
      step.assign(prompt.begin() + first_chunk, prompt.end());
      continue;
    }
    const absl::Span<const float> row = out->logits_row(0);
    run.logits.emplace_back(row.begin(), row.end());
    const int32_t next = forced ? (*forced)[i - 1] : static_cast<int32_t>(ArgMax(row));
    run.tokens.push_back(next);
    step.assign(1, next);
  }
  return run;
}

}  // namespace r2::model::testing

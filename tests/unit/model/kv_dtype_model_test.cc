// The whole model over a bf16 or fp8 KV cache against the float32 cache, on the tiny presets and
// the CPU backends: a chunked prefill (the second chunk reads the first through the cache) and
// greedy decode steps. The compared run is teacher-forced with the float32 run's tokens so every
// step sees the same context; its logits must stay close and its next-token choice must agree
// with float32's on nearly every step (bounds below, measured values in the comments: these
// random-weight models amplify noise, see docs/perf/quantization.md). A free
// greedy run over each format must also run to the end.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/forwarding_backend.h"
#include "tests/unit/model/model_test_util.h"

namespace r2::model {
namespace {

using testing::ArgMax;
using testing::ChunkedPrefillThenDecode;
using testing::DecodeTrace;
using testing::PresetModel;
using testing::RandomTokens;
using testing::RelativeDiff;

constexpr int64_t kPrompt = 19, kFirstChunk = 11, kDecodeSteps = 24;

using Param = std::tuple<const char*, std::string, KvCacheDType>;

class KvDtypeModelTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    const std::string reason = testing::BackendUnavailable(backend());
    if (!reason.empty()) GTEST_SKIP() << backend() << " unavailable: " << reason;
  }
  const std::string& backend() const { return std::get<1>(GetParam()); }
  KvCacheDType dtype() const { return std::get<2>(GetParam()); }
  DeepseekModel& model() { return PresetModel(std::get<0>(GetParam()), 0, backend()); }
  // Logits: max |x - x_f32| / max |x_f32| per step, the median over the steps (a step whose
  // router picks another expert on a near-tie jumps far on these random models; the flips bound
  // covers those). Measured medians: bf16 <= 2.0e-2, fp8 <= 4.4e-2.
  double median_bound() const { return dtype() == KvCacheDType::kBF16 ? 5e-2 : 2e-1; }
  // Steps whose greedy token differs from float32's (of kDecodeSteps + 1). Measured: bf16
  // 0-1, fp8 0-3.
  int64_t max_flips() const { return dtype() == KvCacheDType::kBF16 ? 2 : 5; }
};

TEST_P(KvDtypeModelTest, TeacherForcedDecodeAgreesWithFloat32) {
  std::mt19937 rng(11);
  const std::vector<int32_t> prompt = RandomTokens(rng, kPrompt, model().config().vocab_size);
  absl::StatusOr<DecodeTrace> want = ChunkedPrefillThenDecode(
      model(), KvCacheDType::kFloat32, prompt, kFirstChunk, kDecodeSteps, nullptr);
  ASSERT_TRUE(want.ok()) << want.status();
  absl::StatusOr<DecodeTrace> got =
      ChunkedPrefillThenDecode(model(), dtype(), prompt, kFirstChunk, kDecodeSteps, &want->tokens);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->logits.size(), want->logits.size());
  int64_t flips = 0;
  std::vector<double> diffs;
  for (size_t i = 0; i < want->logits.size(); ++i) {
    diffs.push_back(RelativeDiff(got->logits[i], want->logits[i]));
    flips += ArgMax(got->logits[i]) != ArgMax(want->logits[i]);
  }
  std::sort(diffs.begin(), diffs.end());
  const double median = diffs[diffs.size() / 2];
  std::printf("%s: logits diff median %.3g, worst %.3g; top-1 flips %d of %d\n",
              KvCacheDTypeName(dtype()), median, diffs.back(), static_cast<int>(flips),
              static_cast<int>(diffs.size()));
  EXPECT_LE(median, median_bound());
  EXPECT_GT(diffs.back(), 0.0) << "the cache format changed nothing: was it rounded?";
  EXPECT_LE(flips, max_flips()) << "of " << want->logits.size() << " steps";
}

TEST_P(KvDtypeModelTest, GreedyGenerationRunsToTheEnd) {
  std::mt19937 rng(12);
  const std::vector<int32_t> prompt = RandomTokens(rng, kPrompt, model().config().vocab_size);
  absl::StatusOr<DecodeTrace> run =
      ChunkedPrefillThenDecode(model(), dtype(), prompt, kFirstChunk, kDecodeSteps, nullptr);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->tokens.size(), static_cast<size_t>(kDecodeSteps + 1));
  for (int32_t t : run->tokens) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, model().config().vocab_size);
  }
}

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  std::string name = std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param) + "_" +
                     std::string(KvCacheDTypeName(std::get<2>(info.param)));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(
    Presets, KvDtypeModelTest,
    ::testing::Combine(::testing::Values("tiny", "tiny-noqlora", "tiny-fp8"),
                       ::testing::Values("cpu-reference", "cpu", "checked-memory"),
                       ::testing::Values(KvCacheDType::kBF16, KvCacheDType::kFp8E4M3)),
    ParamName);

TEST(KvDtypePagedCacheTest, StorageShrinksWithTheFormatAndRowsReadBackDecoded) {
  KvCacheShape shape{
      .num_blocks = 3, .num_layers = 2, .block_size = 4, .kv_lora_rank = 512, .rope_dim = 64};
  const int64_t f32 = PagedKvCache::StorageBytes(shape);
  EXPECT_EQ(f32, 3 * 2 * 4 * 2304);
  shape.dtype = KvCacheDType::kBF16;
  EXPECT_EQ(PagedKvCache::StorageBytes(shape) * 2, f32);
  shape.dtype = KvCacheDType::kFp8E4M3;
  EXPECT_EQ(PagedKvCache::StorageBytes(shape), 3 * 2 * 4 * 656);
  for (KvCacheDType dtype : {KvCacheDType::kBF16, KvCacheDType::kFp8E4M3}) {
    shape.dtype = dtype;
    auto backend = MakeCheckedMemoryBackend();  // device-like: Row() reads back through copies
    auto cache = PagedKvCache::Create(shape, backend.get());
    ASSERT_TRUE(cache.ok()) << cache.status();
    std::vector<float> latent(512), k_pe(64);
    // Each group's largest is 3.5, so its fp8 scale is 3.5 / 448 = 2^-7 and these are exact.
    const float values[7] = {-3.5f, -1.0f, -0.5f, 0.0f, 0.25f, 1.75f, 3.5f};
    for (int i = 0; i < 512; ++i) latent[i] = values[i % 7];
    for (int i = 0; i < 64; ++i) k_pe[i] = 0.5f * (i % 5);
    float* dev = static_cast<float*>(*backend->Allocate(4 * 576));
    int64_t* slot = static_cast<int64_t*>(*backend->Allocate(8));
    ASSERT_TRUE(backend->CopyToBackend(dev, latent.data(), 4 * 512).ok());
    ASSERT_TRUE(backend->CopyToBackend(dev + 512, k_pe.data(), 4 * 64).ok());
    const int64_t at = 6;  // block 1, offset 2
    ASSERT_TRUE(backend->CopyToBackend(slot, &at, 8).ok());
    ASSERT_TRUE(backend
                    ->KvCacheWrite({.latent = dev,
                                    .k_pe = dev + 512,
                                    .slot_mapping = slot,
                                    .rows = 1,
                                    .cache = (*cache)->Layer(1)})
                    .ok());
    ASSERT_TRUE((*cache)->CopyBlock(1, 2).ok());
    std::vector<float> want = latent;
    want.insert(want.end(), k_pe.begin(), k_pe.end());
    EXPECT_EQ((*cache)->Row(1, 6), want) << KvCacheDTypeName(dtype);
    EXPECT_EQ((*cache)->Row(1, 10), want) << KvCacheDTypeName(dtype) << " (copied block)";
    EXPECT_EQ((*cache)->Row(0, 6), std::vector<float>(576, 0.0f)) << KvCacheDTypeName(dtype);
  }
}

// A device backend that reads float32 only is refused a bf16 cache by Forward, with a message
// naming the flag (the CUDA backend; checked here through the model's own check on a CPU backend
// that says it cannot read the format).
class Float32OnlyBackend final : public r2::testing::ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  std::string_view name() const override { return "float32-only"; }
  bool SupportsKvCacheDType(KvCacheDType dtype) const override {
    return dtype == KvCacheDType::kFloat32;
  }
};

TEST(KvDtypeModelRefusalTest, BackendWithoutTheFormatIsRefusedByForward) {
  auto options = TinyModelPreset("tiny");
  ASSERT_TRUE(options.ok());
  const std::string dir = r2::testing::MakeTempDir("kv-dtype-refusal");
  ASSERT_TRUE(WriteTinyModel(*options, dir).ok());
  Float32OnlyBackend backend(MakeCpuReferenceBackend());
  auto model = DeepseekModel::Load(dir, &backend);
  ASSERT_TRUE(model.ok()) << model.status();
  auto cache = PagedKvCache::Create((*model)->CacheShape(2, 8, KvCacheDType::kBF16), &backend);
  ASSERT_TRUE(cache.ok());
  const std::vector<int32_t> ids = {3, 4, 5}, table = {0, 1};
  SequenceInput seq{.token_ids = ids, .start_pos = 0, .block_table = table};
  auto out = (*model)->Forward({&seq, 1}, LogitsMode::kLastPerSequence, **cache);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("--kv-cache-dtype"), std::string::npos) << out.status();
  EXPECT_NE(out.status().message().find("bf16"), std::string::npos) << out.status();
}

}  // namespace
}  // namespace r2::model

// The model's two ways of running the routed experts agree: one Backend::MoeExperts call per MoE
// layer on the router's device outputs (device backends, few rows), and the host grouping by
// expert (host backends, and the fallback when a backend answers Unimplemented, which the model
// asks only once). Runs on the checked-memory backend (a device stand-in) behind a switch that
// counts MoeExperts calls and can refuse them.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/tiny_model.h"
#include "tests/unit/model/model_test_util.h"

namespace r2::model {
namespace {

using testing::MakeCache;
using testing::RandomTokens;
using testing::RelativeDiff;

// Forwards everything to a checked-memory backend; MoeExperts is Unimplemented when refused.
class MoeExpertsSwitch final : public Backend {
 public:
  explicit MoeExpertsSwitch(bool allow) : inner_(MakeCheckedMemoryBackend()), allow_(allow) {}
  int calls() const { return calls_; }

  std::string_view name() const override { return "moe-experts-switch"; }
  bool host_memory() const override { return inner_->host_memory(); }
  absl::StatusOr<void*> Allocate(size_t bytes) override { return inner_->Allocate(bytes); }
  void Free(void* ptr) override { inner_->Free(ptr); }
  absl::Status CopyToBackend(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToBackend(dst, src, bytes);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyToHost(dst, src, bytes);
  }
  absl::Status CopyWithin(void* dst, const void* src, size_t bytes) override {
    return inner_->CopyWithin(dst, src, bytes);
  }
  absl::Status Zero(void* dst, size_t bytes) override { return inner_->Zero(dst, bytes); }
  absl::Status Synchronize() override { return inner_->Synchronize(); }
  absl::StatusOr<MemoryInfo> QueryMemory() override { return inner_->QueryMemory(); }
  absl::Status Embedding(const EmbeddingParams& p) override { return inner_->Embedding(p); }
  absl::Status RmsNorm(const RmsNormParams& p) override { return inner_->RmsNorm(p); }
  absl::Status Linear(const LinearParams& p) override { return inner_->Linear(p); }
  absl::Status Rope(const RopeParams& p) override { return inner_->Rope(p); }
  absl::Status SiluMul(const SiluMulParams& p) override { return inner_->SiluMul(p); }
  absl::Status Add(const AddParams& p) override { return inner_->Add(p); }
  absl::Status GatherRows(const GatherRowsParams& p) override { return inner_->GatherRows(p); }
  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    return inner_->ScatterAddRows(p);
  }
  absl::Status MoeRoute(const MoeRouteParams& p) override { return inner_->MoeRoute(p); }
  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    return inner_->MlaPrefillAttention(p);
  }
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override {
    return inner_->KvCacheWrite(p);
  }
  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    return inner_->MlaDecodeAttention(p);
  }
  absl::Status MoeExperts(const MoeExpertsParams& p) override {
    ++calls_;
    if (!allow_) return absl::UnimplementedError("MoeExperts refused by the test");
    return inner_->MoeExperts(p);
  }

 private:
  std::unique_ptr<Backend> inner_;
  bool allow_;
  int calls_ = 0;
};

// A prefill of 6 tokens, then 3 single-token decode steps: every step's logits, concatenated.
std::vector<float> RunSteps(DeepseekModel& model, const std::vector<int32_t>& ids) {
  auto cache = MakeCache(model, 4, 8);
  const std::vector<int32_t> table = {2, 0, 3, 1};
  std::vector<float> logits;
  int64_t pos = 0;
  for (int64_t n : {6, 1, 1, 1}) {
    SequenceInput seq{.token_ids = absl::MakeConstSpan(ids.data() + pos, n),
                      .start_pos = pos,
                      .block_table = table};
    auto out = model.Forward({&seq, 1}, LogitsMode::kAll, *cache);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    logits.insert(logits.end(), out->logits.begin(), out->logits.end());
    pos += n;
  }
  return logits;
}

class MoeExpertsPathTest : public ::testing::TestWithParam<const char*> {};

TEST_P(MoeExpertsPathTest, DeviceOpAndHostGroupingAgree) {
  auto options = TinyModelPreset(GetParam());
  ASSERT_TRUE(options.ok()) << options.status();
  const std::string dir = r2::testing::MakeTempDir(std::string("moe-path-") + GetParam());
  ASSERT_TRUE(WriteTinyModel(*options, dir).ok());

  MoeExpertsSwitch fused(/*allow=*/true), grouped(/*allow=*/false);
  auto host_backend = MakeCpuReferenceBackend();
  auto fused_model = DeepseekModel::Load(dir, &fused);
  auto grouped_model = DeepseekModel::Load(dir, &grouped);
  auto host_model = DeepseekModel::Load(dir, host_backend.get());
  ASSERT_TRUE(fused_model.ok()) << fused_model.status();
  ASSERT_TRUE(grouped_model.ok()) << grouped_model.status();
  ASSERT_TRUE(host_model.ok()) << host_model.status();

  std::mt19937 rng(7);
  const std::vector<int32_t> ids = RandomTokens(rng, 9, (*host_model)->config().vocab_size);
  const std::vector<float> a = RunSteps(**fused_model, ids);
  const std::vector<float> b = RunSteps(**grouped_model, ids);
  const std::vector<float> ref = RunSteps(**host_model, ids);
  ASSERT_FALSE(ref.empty());
  ASSERT_EQ(a.size(), ref.size());
  ASSERT_EQ(b.size(), ref.size());
  // The two paths differ only in the order the k expert outputs are summed.
  EXPECT_LE(RelativeDiff(a, ref), 1e-4);
  EXPECT_LE(RelativeDiff(b, ref), 1e-4);
  EXPECT_EQ(b, ref) << "the fallback is the host path, run on device memory";
  // The device path ran once per MoE layer and step; the refusing backend was asked once.
  const ModelConfig& c = (*host_model)->config();
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.is_moe_layer(l) ? 1 : 0;
  ASSERT_GT(moe_layers, 0);
  EXPECT_EQ(fused.calls(), 4 * moe_layers);
  EXPECT_EQ(grouped.calls(), 1);
  // One token's k experts are distinct: the decode step's count is exact.
  EXPECT_EQ((*fused_model)->last_routed_experts_run(), (*host_model)->last_routed_experts_run());
}

INSTANTIATE_TEST_SUITE_P(Presets, MoeExpertsPathTest, ::testing::Values("tiny", "tiny-fp8"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace r2::model

// The model's routed experts on host backends: one Backend::MoeExperts call per MoE layer with the
// layer's expert views and its shared expert (the optimized CPU backend), against the grouping path
// (one Linear per selected expert) that a backend answering Unimplemented gets, and against the
// reference backend; bf16, fp8 and the int8/int4 conversions of the tiny model.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/quantize_checkpoint.h"
#include "engine/model/tiny_model.h"
#include "kernels/cpu/opt_backend.h"
#include "tests/unit/forwarding_backend.h"
#include "tests/unit/model/model_test_util.h"

namespace r2::model {
namespace {

using testing::MakeCache;
using testing::RandomTokens;
using testing::RelativeDiff;

// The optimized CPU backend, counting MoeExperts calls; Unimplemented when refused.
class CountingBackend final : public r2::testing::ForwardingBackend {
 public:
  explicit CountingBackend(bool allow)
      : ForwardingBackend(MakeCpuOptimizedBackend()), allow_(allow) {}
  int calls() const { return calls_; }
  // The experts and choices per token of the last call.
  int64_t last_experts() const { return last_experts_; }
  int64_t last_top_k() const { return last_top_k_; }

  std::string_view name() const override { return "moe-counting"; }
  absl::Status MoeExperts(const MoeExpertsParams& p) override {
    ++calls_;
    last_experts_ = p.num_experts;
    last_top_k_ = p.top_k;
    if (!allow_) return absl::UnimplementedError("MoeExperts refused by the test");
    return inner().MoeExperts(p);
  }

 private:
  bool allow_;
  int calls_ = 0;
  int64_t last_experts_ = 0, last_top_k_ = 0;
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

struct PathCase {
  const char* preset;
  const char* format;  // "" (as written), "int8", "int4"
  double bound;        // max |logit - reference| / max |reference logit|
};

class MoeHostPathTest : public ::testing::TestWithParam<PathCase> {};

TEST_P(MoeHostPathTest, ExpertsOpGroupingAndReferenceAgree) {
  const PathCase pc = GetParam();
  auto options = TinyModelPreset(pc.preset);
  ASSERT_TRUE(options.ok()) << options.status();
  const std::string tag = std::string("moe-host-") + pc.preset + "-" + pc.format;
  std::string dir = r2::testing::MakeTempDir(tag);
  ASSERT_TRUE(WriteTinyModel(*options, dir).ok());
  if (std::string(pc.format) != "") {
    QuantizeOptions q;
    q.format = std::string(pc.format) == "int8" ? QuantFormat::kInt8 : QuantFormat::kInt4;
    q.group_size = 32;
    q.symmetric = false;
    const std::string out = r2::testing::MakeTempDir(tag + "-q");
    auto summary = QuantizeCheckpoint(dir, out, q);
    ASSERT_TRUE(summary.ok()) << summary.status();
    ASSERT_GT(summary->quantized_tensors, 0);
    dir = out;
  }
  CountingBackend fused(/*allow=*/true), grouped(/*allow=*/false);
  auto ref_backend = MakeCpuReferenceBackend();
  auto fused_model = DeepseekModel::Load(dir, &fused);
  auto grouped_model = DeepseekModel::Load(dir, &grouped);
  auto ref_model = DeepseekModel::Load(dir, ref_backend.get());
  ASSERT_TRUE(fused_model.ok()) << fused_model.status();
  ASSERT_TRUE(grouped_model.ok()) << grouped_model.status();
  ASSERT_TRUE(ref_model.ok()) << ref_model.status();

  std::mt19937 rng(11);
  const std::vector<int32_t> ids = RandomTokens(rng, 9, (*ref_model)->config().vocab_size);
  const std::vector<float> a = RunSteps(**fused_model, ids);
  const std::vector<float> b = RunSteps(**grouped_model, ids);
  const std::vector<float> ref = RunSteps(**ref_model, ids);
  ASSERT_FALSE(ref.empty());
  ASSERT_EQ(a.size(), ref.size());
  ASSERT_EQ(b.size(), ref.size());
  EXPECT_LE(RelativeDiff(a, ref), pc.bound);
  EXPECT_LE(RelativeDiff(b, ref), pc.bound);
  EXPECT_LE(RelativeDiff(a, b), pc.bound);

  const ModelConfig& c = (*ref_model)->config();
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) moe_layers += c.is_moe_layer(l) ? 1 : 0;
  ASSERT_GT(moe_layers, 0);
  EXPECT_EQ(fused.calls(), 4 * moe_layers) << "one MoeExperts call per MoE layer and step";
  EXPECT_EQ(grouped.calls(), 1) << "an Unimplemented answer is remembered";
  // The shared expert (one, of the routed experts' width) rides in the call as one more expert
  // every token takes; the grouping path runs it as its own MLP (the logits above agree).
  ASSERT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(fused.last_experts(), c.n_routed_experts + 1);
  EXPECT_EQ(fused.last_top_k(), c.num_experts_per_tok + 1);
  // A one-token step selects top_k distinct experts per layer on every path.
  EXPECT_EQ((*fused_model)->last_routed_experts_run(), moe_layers * c.num_experts_per_tok);
  EXPECT_EQ((*grouped_model)->last_routed_experts_run(), moe_layers * c.num_experts_per_tok);
}

INSTANTIATE_TEST_SUITE_P(Formats, MoeHostPathTest,
                         ::testing::Values(PathCase{"tiny", "", 1e-4},
                                           PathCase{"tiny-fp8", "", 1e-4},
                                           PathCase{"tiny", "int8", 2e-3},
                                           PathCase{"tiny", "int4", 1e-4}),
                         [](const ::testing::TestParamInfo<PathCase>& info) {
                           std::string name = std::string(info.param.preset) +
                                              (info.param.format[0] ? "_" : "") + info.param.format;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace r2::model

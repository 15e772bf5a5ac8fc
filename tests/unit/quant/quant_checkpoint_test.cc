// r2serve quantize's converter and the loading of compressed-tensors checkpoints: converted tiny
// checkpoints (bf16 and fp8 sources, one file and sharded) load with integer weights that
// round-trip within the format's bound and generate; corrupt or inconsistent checkpoints and
// unsupported schemes fail with errors naming the tensor, field or scheme.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/model/checkpoint.h"
#include "engine/model/config.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/kv_cache.h"
#include "engine/model/model_weights.h"
#include "engine/model/quantization_config.h"
#include "engine/model/quantize_checkpoint.h"
#include "engine/model/safetensors.h"
#include "engine/model/tiny_model.h"
#include "engine/tokenizer/tiny_tokenizer.h"
#include "kernels/backend.h"
#include "kernels/numeric.h"
#include "kernels/quant_format.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_paths.h"

namespace r2::model {
namespace {

using Json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct Tensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<Tensor> ReadAll(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  std::vector<Tensor> out;
  for (const auto& [name, entry] : (*file)->entries()) {
    const auto* data = static_cast<const uint8_t*>((*file)->Get(name)->data);
    out.push_back({name, entry.dtype, entry.shape,
                   std::vector<uint8_t>(data, data + (entry.end - entry.begin))});
  }
  return out;
}

// Rewrites a safetensors file through `edit`.
void Edit(const std::string& path, const std::function<void(std::vector<Tensor>&)>& edit) {
  std::vector<Tensor> tensors = ReadAll(path);
  edit(tensors);
  SafetensorsWriter w;
  for (const Tensor& t : tensors) w.Add(t.name, t.dtype, t.shape, t.bytes);
  ASSERT_TRUE(w.Write(path).ok());
}

Tensor* Find(std::vector<Tensor>& tensors, const std::string& name) {
  for (Tensor& t : tensors) {
    if (t.name == name) return &t;
  }
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

void Erase(std::vector<Tensor>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const Tensor& t) { return t.name == name; });
}

void EditConfig(const std::string& dir, const std::function<void(Json&)>& edit) {
  std::ifstream in(dir + "/config.json");
  Json config = Json::parse(in);
  edit(config);
  std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump(2);
}

// Temporary checkpoints, removed when the test program ends.
std::string TempDir(const std::string& tag) {
  struct Cleanup : ::testing::Environment {
    std::vector<std::string> dirs;
    void TearDown() override {
      for (const std::string& d : dirs) std::filesystem::remove_all(d);
    }
  };
  static Cleanup* cleanup = [] {
    auto* c = new Cleanup;
    ::testing::AddGlobalTestEnvironment(c);
    return c;
  }();
  cleanup->dirs.push_back(testing::MakeTempDir(tag));
  return cleanup->dirs.back();
}

std::string MakeTiny(const std::string& preset, bool tokenizer = false) {
  const std::string dir = TempDir("quant_src_" + preset);
  auto options = TinyModelPreset(preset);
  EXPECT_TRUE(options.ok());
  const absl::Status s = tokenizer ? tokenizer::WriteTinyModelWithTokenizer(*options, dir)
                                   : WriteTinyModel(*options, dir);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

std::string ConvertWith(const std::string& src, const QuantizeOptions& o) {
  const std::string out = TempDir("quant_out");
  auto summary = QuantizeCheckpoint(src, out, o);
  EXPECT_TRUE(summary.ok()) << summary.status();
  return out;
}

std::string Convert(const std::string& src, QuantFormat format, bool symmetric = true,
                    bool lm_head = false) {
  QuantizeOptions o;
  o.format = format;
  o.symmetric = symmetric;
  o.quantize_lm_head = lm_head;
  return ConvertWith(src, o);
}

absl::Status OpenError(const std::string& dir) {
  auto c = Checkpoint::Open(dir);
  return c.ok() ? absl::OkStatus() : c.status();
}

const char kQa[] = "model.layers.0.self_attn.q_a_proj.weight";
const char kExpertDown[] = "model.layers.1.mlp.experts.3.down_proj.weight";
const char kSharedDown[] = "model.layers.1.mlp.shared_experts.down_proj.weight";

// Every linear weight of layers 0 and 1 that the converted config's ignore list does not name is
// an integer weight that dequantizes to the source rounded to the nearest step of its row's
// (int8) or group's (int4) range [(-8 - z) s, (7 - z) s] / [-127 s, 127 s]: within s / 2 inside
// the range, plus the distance to the range's end for values beyond it. (With least-squared-error
// scales, int4's default, the range may clip the largest values; with max-abs scales, int8's
// default, nothing is beyond it and the bound is s / 2, or s for asymmetric int4 whose rounded
// zero point can leave the lowest value half a step outside.) Ignored weights (the dense MLP) are
// the source's values in BF16.
void ExpectRoundTrip(const Checkpoint& src, const Checkpoint& dst, QuantFormat format) {
  int64_t checked = 0, ignored = 0;
  const CompressedTensorsScheme& scheme = dst.config().quantization->compressed;
  for (const ExpectedTensor& t : ExpectedTensors(src.config())) {
    if (t.kind != TensorKind::kLinear || !(absl::StartsWith(t.name, "model.layers.0.") ||
                                           absl::StartsWith(t.name, "model.layers.1."))) {
      continue;
    }
    auto a = src.Linear(t.name);
    auto b = dst.Linear(t.name);
    ASSERT_TRUE(a.ok() && b.ok()) << t.name;
    auto fa = DequantizeToFloat(*a);
    auto fb = DequantizeToFloat(*b);
    ASSERT_TRUE(fa.ok() && fb.ok());
    if (IgnoresModule(scheme, t.name.substr(0, t.name.size() - 7))) {
      ASSERT_EQ(b->weight.dtype, DType::kBF16) << t.name;
      for (size_t i = 0; i < fa->size(); ++i) {
        ASSERT_EQ((*fb)[i], BF16ToFloat(FloatToBF16((*fa)[i]))) << t.name << " " << i;
      }
      ++ignored;
      continue;
    }
    ASSERT_EQ(b->weight.dtype, format == QuantFormat::kInt8 ? DType::kI8 : DType::kU4) << t.name;
    const int64_t in = b->in_features();
    for (int64_t o = 0; o < b->out_features(); ++o) {
      for (int64_t j = 0; j < in; ++j) {
        const int64_t g = j / b->group_size;
        const double s = IntegerWeightScale(*b, o, g);
        const double z = format == QuantFormat::kInt4 ? U4ZeroPoint(*b, o, g) : 0;
        const double lo = format == QuantFormat::kInt4 ? (-8 - z) * s : -127 * s;
        const double hi = format == QuantFormat::kInt4 ? (7 - z) * s : 127 * s;
        const double x = (*fa)[o * in + j];
        const double beyond = std::max({0.0, x - hi, lo - x});
        const double bound = 0.5 * s * 1.001 + beyond + 1e-7;
        ASSERT_LE(std::fabs(x - (*fb)[o * in + j]), bound)
            << t.name << " [" << o << ", " << j << "]";
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 8);
  EXPECT_EQ(ignored, (IgnoresModule(scheme, "model.layers.0.mlp.down_proj") ? 3 : 0) +
                         (IgnoresModule(scheme, "model.layers.0.self_attn.o_proj") ? 2 : 0));
}

TEST(QuantCheckpointTest, Int8FromBf16LoadsWithPerChannelScalesAndRoundTrips) {
  const std::string src = MakeTiny("tiny", /*tokenizer=*/true);
  const std::string dst = Convert(src, QuantFormat::kInt8);
  auto a = Checkpoint::Open(src);
  auto b = Checkpoint::Open(dst);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  const auto& q = b.value()->config().quantization;
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->quant_method, "compressed-tensors");
  EXPECT_EQ(q->compressed.format, "int-quantized");
  EXPECT_EQ(q->compressed.num_bits, 8);
  auto w = b.value()->Linear(kQa);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->weight.dtype, DType::kI8);
  EXPECT_EQ(w->scale.shape, (std::vector<int64_t>{64, 1}));
  EXPECT_EQ(w->group_size, 256);
  // Kept as they were: lm_head, the router, the MTP eh_proj, embeddings.
  EXPECT_EQ(b.value()->Linear("lm_head.weight")->weight.dtype, DType::kBF16);
  EXPECT_EQ(b.value()->Tensor("model.layers.1.mlp.gate.weight")->dtype, DType::kBF16);
  EXPECT_EQ(b.value()->Linear("model.layers.4.eh_proj.weight")->weight.dtype, DType::kBF16);
  EXPECT_TRUE(std::filesystem::exists(dst + "/tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(dst + "/tokenizer_config.json"));
  EXPECT_TRUE(std::filesystem::exists(dst + "/generation_config.json"));
  ExpectRoundTrip(**a, **b, QuantFormat::kInt8);
}

TEST(QuantCheckpointTest, Int4FromBf16SymmetricAndAsymmetric) {
  const std::string src = MakeTiny("tiny");
  auto a = Checkpoint::Open(src);
  ASSERT_TRUE(a.ok());
  for (bool symmetric : {true, false}) {
    const std::string dst = Convert(src, QuantFormat::kInt4, symmetric);
    auto b = Checkpoint::Open(dst);
    ASSERT_TRUE(b.ok()) << b.status();
    const auto& q = b.value()->config().quantization;
    EXPECT_EQ(q->compressed.format, "pack-quantized");
    EXPECT_EQ(q->compressed.group_size, 128);
    EXPECT_EQ(q->compressed.symmetric, symmetric);
    auto w = b.value()->Linear(kExpertDown);  // [256, 64]: one partial group per row
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->weight.dtype, DType::kU4);
    EXPECT_EQ(w->weight.shape, (std::vector<int64_t>{256, 64}));
    EXPECT_EQ(w->scale.shape, (std::vector<int64_t>{256, 1}));
    EXPECT_EQ(w->scale.dtype, DType::kBF16);
    EXPECT_EQ(w->zero_point.empty(), symmetric);
    ExpectRoundTrip(**a, **b, QuantFormat::kInt4);
  }
}

TEST(QuantCheckpointTest, Fp8ShardedAndLmHeadSources) {
  // FP8 (block scales, partial edge blocks) to int4 and int8.
  const std::string fp8 = MakeTiny("tiny-fp8");
  auto a = Checkpoint::Open(fp8);
  ASSERT_TRUE(a.ok());
  for (QuantFormat f : {QuantFormat::kInt4, QuantFormat::kInt8}) {
    auto b = Checkpoint::Open(Convert(fp8, f));
    ASSERT_TRUE(b.ok()) << b.status();
    ExpectRoundTrip(**a, **b, f);
    // FP8 weights that stay unquantized are written as BF16 (no scale_inv left behind).
    auto eh = b.value()->Linear("model.layers.4.eh_proj.weight");
    ASSERT_TRUE(eh.ok());
    EXPECT_EQ(eh->weight.dtype, DType::kBF16);
    EXPECT_FALSE(b.value()->Has("model.layers.4.eh_proj.weight_scale_inv"));
  }
  // Two shards and an index in, two shards and an index out.
  const std::string sharded = Convert(MakeTiny("tiny-noqlora"), QuantFormat::kInt4);
  EXPECT_TRUE(std::filesystem::exists(sharded + "/model.safetensors.index.json"));
  EXPECT_TRUE(Checkpoint::Open(sharded).ok());
  // lm_head on request.
  auto head = Checkpoint::Open(Convert(MakeTiny("tiny"), QuantFormat::kInt8, true, true));
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head.value()->Linear("lm_head.weight")->weight.dtype, DType::kI8);
}

// Prefill then decode on `dir`; returns the logits of every step (prefill's last, then decode).
std::vector<std::vector<float>> Generate(const std::string& dir, int steps,
                                         const std::string& backend_name = "cpu") {
  auto backend = MakeBackend(backend_name);
  EXPECT_TRUE(backend.ok());
  auto model = DeepseekModel::Load(dir, backend->get());
  EXPECT_TRUE(model.ok()) << model.status();
  auto cache = PagedKvCache::Create((*model)->CacheShape(4), backend->get());
  const std::vector<int32_t> table = {0, 1, 2, 3};
  std::vector<int32_t> tokens = {1, 57, 300, 12, 999, 4, 77};
  std::vector<std::vector<float>> logits;
  int64_t pos = 0;
  std::vector<int32_t> step_tokens = tokens;
  for (int s = 0; s <= steps; ++s) {
    SequenceInput seq{.token_ids = step_tokens, .start_pos = pos, .block_table = table};
    auto out = (*model)->Forward({&seq, 1}, LogitsMode::kLastPerSequence, **cache);
    EXPECT_TRUE(out.ok()) << out.status();
    auto row = out->logits_row(0);
    logits.emplace_back(row.begin(), row.end());
    pos += static_cast<int64_t>(step_tokens.size());
    step_tokens = {static_cast<int32_t>((s * 131 + 7) % 1024)};  // fixed, not sampled
  }
  return logits;
}

TEST(QuantCheckpointTest, ConvertedModelsGenerateCloseToBf16) {
  const std::string src = MakeTiny("tiny");
  const auto ref = Generate(src, 4);
  double err[2];
  int k = 0;
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    const auto got = Generate(Convert(src, f), 4);
    ASSERT_EQ(got.size(), ref.size());
    double sq_diff = 0.0, sq_ref = 0.0;
    for (size_t s = 0; s < ref.size(); ++s) {
      for (size_t v = 0; v < ref[s].size(); ++v) {
        ASSERT_TRUE(std::isfinite(got[s][v]));
        sq_diff += (got[s][v] - ref[s][v]) * (got[s][v] - ref[s][v]);
        sq_ref += ref[s][v] * ref[s][v];
      }
    }
    err[k++] = std::sqrt(sq_diff / sq_ref);
  }
  // The logits follow BF16's (a broken format would give errors near or above 1), int8 closer
  // than int4.
  EXPECT_LT(err[0], 0.25);
  EXPECT_LT(err[1], 0.6);
  EXPECT_LT(err[0], err[1]);
}

TEST(QuantCheckpointTest, IntegerWeightsRunOnADeviceBackend) {
  // checked-memory fails any op handed a pointer outside its allocations: the weights, scales and
  // zero points must all have been uploaded. Same reference ops, so the same logits.
  const std::string dir = Convert(MakeTiny("tiny"), QuantFormat::kInt4, /*symmetric=*/false);
  EXPECT_EQ(Generate(dir, 2, "checked-memory"), Generate(dir, 2, "cpu-reference"));
  const std::string dir8 = Convert(MakeTiny("tiny-fp8"), QuantFormat::kInt8);
  EXPECT_EQ(Generate(dir8, 2, "checked-memory"), Generate(dir8, 2, "cpu-reference"));
}

// ---- corrupt and inconsistent checkpoints ---------------------------------------------------

class CorruptCheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    src_ = new std::string(MakeTiny("tiny"));
    int4_ = new std::string(Convert(*src_, QuantFormat::kInt4, /*symmetric=*/false));
    int8_ = new std::string(Convert(*src_, QuantFormat::kInt8));
  }
  // A fresh copy of a converted checkpoint to break.
  static std::string Copy(const std::string& dir) {
    const std::string out = TempDir("quant_corrupt");
    std::filesystem::copy(dir, out,
                          std::filesystem::copy_options::overwrite_existing |
                              std::filesystem::copy_options::recursive);
    return out;
  }
  static std::string* src_;
  static std::string* int4_;
  static std::string* int8_;
};
std::string* CorruptCheckpointTest::src_ = nullptr;
std::string* CorruptCheckpointTest::int4_ = nullptr;
std::string* CorruptCheckpointTest::int8_ = nullptr;

TEST_F(CorruptCheckpointTest, ScaleShapeMismatch) {
  const std::string dir = Copy(*int4_);
  Edit(dir + "/model.safetensors", [](std::vector<Tensor>& t) {
    Tensor* s = Find(t, "model.layers.0.self_attn.q_a_proj.weight_scale");
    s->shape = {64, 3};
    s->bytes.resize(64 * 3 * 2);
  });
  absl::Status s = OpenError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("'model.layers.0.self_attn.q_a_proj.weight_scale'"),
                                 HasSubstr("has shape [64, 3], expected [64, 2]")));

  const std::string dir8 = Copy(*int8_);
  Edit(dir8 + "/model.safetensors", [](std::vector<Tensor>& t) {
    Tensor* s = Find(t, "model.layers.1.mlp.experts.3.down_proj.weight_scale");
    s->shape = {1, 256};
  });
  EXPECT_THAT(OpenError(dir8).message(), AllOf(HasSubstr("experts.3.down_proj.weight_scale'"),
                                               HasSubstr("has shape [1, 256], expected [256, 1]")));
}

TEST_F(CorruptCheckpointTest, MissingScaleZeroPointOrShape) {
  for (const char* suffix : {".weight_scale", ".weight_zero_point", ".weight_shape"}) {
    const std::string dir = Copy(*int4_);
    const std::string name = std::string("model.layers.2.mlp.experts.7.up_proj") + suffix;
    Edit(dir + "/model.safetensors", [&](std::vector<Tensor>& t) { Erase(t, name); });
    absl::Status s = OpenError(dir);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << suffix;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("'" + name + "'"), HasSubstr("is missing")));
  }
  const std::string dir8 = Copy(*int8_);
  Edit(dir8 + "/model.safetensors",
       [](std::vector<Tensor>& t) { Erase(t, kSharedDown + std::string("_scale")); });
  EXPECT_THAT(OpenError(dir8).message(),
              AllOf(HasSubstr(absl::StrCat("'", kSharedDown, "_scale' is missing"))));
}

TEST_F(CorruptCheckpointTest, PackedShapeAndZeroPointInconsistencies) {
  const std::string dir = Copy(*int4_);
  Edit(dir + "/model.safetensors", [](std::vector<Tensor>& t) {
    Tensor* s = Find(t, "model.layers.0.self_attn.o_proj.weight_shape");
    const int64_t wrong[2] = {256, 512};
    std::memcpy(s->bytes.data(), wrong, 16);
  });
  EXPECT_THAT(OpenError(dir).message(),
              AllOf(HasSubstr("o_proj.weight_packed'"), HasSubstr("for weight_shape [256, 512]")));

  const std::string dir2 = Copy(*int4_);
  Edit(dir2 + "/model.safetensors", [](std::vector<Tensor>& t) {
    Tensor* z = Find(t, "model.layers.0.self_attn.o_proj.weight_zero_point");
    z->dtype = DType::kI64;
    z->bytes.resize(z->bytes.size() * 2);
  });
  EXPECT_THAT(OpenError(dir2).message(),
              AllOf(HasSubstr("o_proj.weight_zero_point'"), HasSubstr("must be I32 [32, 1]")));

  const std::string dir3 = Copy(*int8_);
  Edit(dir3 + "/model.safetensors", [](std::vector<Tensor>& t) {
    t.push_back({"model.layers.1.mlp.shared_experts.up_proj.weight_zero_point",
                 DType::kI8,
                 {64, 1},
                 std::vector<uint8_t>(64, 3)});
  });
  EXPECT_THAT(OpenError(dir3).message(), HasSubstr("asymmetric int8 weights are not supported"));

  const std::string dir4 = Copy(*int4_);
  Edit(dir4 + "/model.safetensors", [](std::vector<Tensor>& t) {
    t.push_back({"model.layers.1.mlp.shared_experts.up_proj.weight_g_idx",
                 DType::kI32,
                 {256},
                 std::vector<uint8_t>(1024, 0)});
  });
  EXPECT_THAT(OpenError(dir4).message(), HasSubstr("activation reordering"));
}

TEST_F(CorruptCheckpointTest, ConfigThatDoesNotMatchTheTensors) {
  const std::string dir = Copy(*int4_);
  EditConfig(dir, [](Json& c) { c.erase("quantization_config"); });
  EXPECT_THAT(OpenError(dir).message(),
              AllOf(HasSubstr("holds int4 weights"), HasSubstr("compressed-tensors")));

  const std::string dir8 = Copy(*int8_);
  EditConfig(dir8, [](Json& c) {
    c["quantization_config"]["format"] = "pack-quantized";
    c["quantization_config"]["config_groups"]["group_0"]["weights"] = {
        {"num_bits", 4}, {"type", "int"}, {"strategy", "group"}, {"group_size", 128}};
    c["quantization_config"]["config_groups"]["group_0"]["input_activations"] = nullptr;
  });
  EXPECT_THAT(OpenError(dir8).message(), AllOf(HasSubstr("holds int8 weights"),
                                               HasSubstr("pack-quantized scheme has num_bits 4")));

  const std::string sym = Copy(*int4_);  // asymmetric tensors, config made symmetric: still loads
  EditConfig(sym, [](Json& c) {
    c["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = true;
  });
  EXPECT_TRUE(Checkpoint::Open(sym).ok());
}

// config.json's quantization_config alone.
absl::Status ParseQuant(const Json& q) {
  Json config = Json::parse(TinyModelConfigJson(*TinyModelPreset("tiny")));
  config["quantization_config"] = q;
  auto c = ParseModelConfig(config.dump(), "config.json");
  return c.ok() ? absl::OkStatus() : c.status();
}

Json Int4Config() {
  CompressedTensorsScheme s;
  s.format = "pack-quantized";
  s.num_bits = 4;
  s.group_size = 128;
  return CompressedTensorsConfigJson(s);
}

TEST(QuantConfigTest, UnsupportedSchemesNameTheScheme) {
  EXPECT_TRUE(ParseQuant(Int4Config()).ok());
  for (const char* method : {"awq", "gptq", "bitsandbytes", "mxfp4"}) {
    absl::Status s = ParseQuant({{"quant_method", method}, {"bits", 4}, {"group_size", 128}});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(),
                AllOf(HasSubstr("quantization_config.quant_method"),
                      HasSubstr(absl::StrCat("'", method, "'")), HasSubstr("compressed-tensors")));
  }
  Json q = Int4Config();
  q["format"] = "float-quantized";
  EXPECT_THAT(ParseQuant(q).message(),
              AllOf(HasSubstr("quantization_config.format"), HasSubstr("float-quantized")));
  q = Int4Config();
  q["config_groups"]["group_0"]["input_activations"] = {
      {"num_bits", 8}, {"type", "int"}, {"strategy", "token"}, {"dynamic", true}};
  EXPECT_THAT(ParseQuant(q).message(), HasSubstr("W4A8"));
  q = Int4Config();
  q["config_groups"]["group_0"]["weights"]["actorder"] = "group";
  EXPECT_THAT(ParseQuant(q).message(), HasSubstr("actorder"));
  q = Int4Config();
  q["config_groups"]["group_0"]["weights"]["type"] = "float";
  EXPECT_THAT(ParseQuant(q).message(), AllOf(HasSubstr("weights.type"), HasSubstr("float")));
  q = Int4Config();
  q["config_groups"]["group_1"] = q["config_groups"]["group_0"];
  q["config_groups"]["group_1"]["weights"]["group_size"] = 64;
  EXPECT_THAT(ParseQuant(q).message(), HasSubstr("different weight schemes"));
  q = Int4Config();  // mixed-precision with one format, and a dense sparsity_config: accepted
  q["format"] = "mixed-precision";
  q["config_groups"]["group_0"]["format"] = "pack-quantized";
  q["sparsity_config"] = {{"format", "dense"}, {"sparsity_structure", "unstructured"}};
  EXPECT_TRUE(ParseQuant(q).ok());
  q["config_groups"]["group_1"] = q["config_groups"]["group_0"];
  q["config_groups"]["group_1"]["format"] = "float-quantized";
  EXPECT_THAT(ParseQuant(q).message(),
              AllOf(HasSubstr("group_1.format"), HasSubstr("float-quantized")));
  q = Int4Config();
  q["sparsity_config"] = {{"format", "sparse-bitmask"}};
  EXPECT_THAT(ParseQuant(q).message(), HasSubstr("sparse weights"));
  q = Int4Config();
  q["kv_cache_scheme"] = {{"num_bits", 8}, {"type", "float"}};
  EXPECT_THAT(ParseQuant(q).message(), HasSubstr("kv_cache_scheme"));
  // int8 without per-token activations (W8A16) and with static activation scales.
  CompressedTensorsScheme s8;
  s8.format = "int-quantized";
  s8.num_bits = 8;
  Json q8 = CompressedTensorsConfigJson(s8);
  EXPECT_TRUE(ParseQuant(q8).ok());
  Json w8a16 = q8;
  w8a16["config_groups"]["group_0"]["input_activations"] = nullptr;
  EXPECT_THAT(ParseQuant(w8a16).message(), HasSubstr("W8A16"));
  Json static_act = q8;
  static_act["config_groups"]["group_0"]["input_activations"]["dynamic"] = false;
  EXPECT_THAT(ParseQuant(static_act).message(), HasSubstr("static activation scales"));
}

TEST(QuantConverterTest, RejectsQuantizedInputAndSameDirectory) {
  const std::string src = MakeTiny("tiny");
  const std::string int8 = Convert(src, QuantFormat::kInt8);
  QuantizeOptions o;
  auto again = QuantizeCheckpoint(int8, TempDir("quant_again"), o);
  EXPECT_THAT(again.status().message(), HasSubstr("already quantized"));
  auto same = QuantizeCheckpoint(src, src, o);
  EXPECT_THAT(same.status().message(), HasSubstr("must differ"));
  auto missing = QuantizeCheckpoint(src + "/nope", TempDir("quant_missing"), o);
  EXPECT_FALSE(missing.ok());
  o.format = QuantFormat::kInt4;
  o.group_size = 0;
  EXPECT_THAT(QuantizeCheckpoint(src, TempDir("quant_g0"), o).status().message(),
              HasSubstr("group size must be positive"));
}

// ---- converter choices: the dense MLPs, searched scales, and the ignore list on loading ------

std::vector<std::string> IgnoreList(const std::string& dir) {
  std::ifstream in(dir + "/config.json");
  return Json::parse(in)["quantization_config"]["ignore"].get<std::vector<std::string>>();
}

TEST(QuantConverterTest, DenseMlpStaysBf16AndIsListedInIgnoreUnlessAsked) {
  const std::string src = MakeTiny("tiny");  // layer 0 dense, layers 1-3 MoE, MTP layer 4
  const char* const kDense[] = {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                                "model.layers.0.mlp.down_proj"};
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    QuantizeOptions o;
    o.format = f;
    const std::string kept = ConvertWith(src, o);
    std::vector<std::string> ignore = IgnoreList(kept);
    for (const char* m : kDense) {
      EXPECT_NE(std::find(ignore.begin(), ignore.end(), m), ignore.end()) << m;
    }
    // lm_head, the router, eh_proj, the three above, and for int8 every o_proj (one pattern).
    EXPECT_EQ(ignore.size(), f == QuantFormat::kInt8 ? 7u : 6u);
    auto c = Checkpoint::Open(kept);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c.value()->Linear("model.layers.0.mlp.down_proj.weight")->weight.dtype, DType::kBF16);
    EXPECT_NE(c.value()->Linear(kSharedDown)->weight.dtype, DType::kBF16);
    std::ifstream in(kept + "/config.json");
    const Json q = Json::parse(in)["quantization_config"];
    // kAuto: searched scales for int4, max-abs for int8.
    EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["observer"],
              f == QuantFormat::kInt4 ? "mse" : "minmax");
    EXPECT_EQ(SearchesScales(o), f == QuantFormat::kInt4);

    o.quantize_dense_mlp = true;
    o.scales = f == QuantFormat::kInt4 ? ScaleChoice::kMaxAbs : ScaleChoice::kMinSquaredError;
    const std::string all = ConvertWith(src, o);
    ignore = IgnoreList(all);
    EXPECT_EQ(std::find(ignore.begin(), ignore.end(), kDense[2]), ignore.end());
    auto d = Checkpoint::Open(all);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d.value()->Linear("model.layers.0.mlp.down_proj.weight")->weight.dtype,
              f == QuantFormat::kInt8 ? DType::kI8 : DType::kU4);
    std::ifstream in2(all + "/config.json");
    EXPECT_EQ(
        Json::parse(in2)["quantization_config"]["config_groups"]["group_0"]["weights"]["observer"],
        f == QuantFormat::kInt4 ? "minmax" : "mse");
  }
}

std::string FileBytes(const std::string& path);  // below

TEST(QuantConverterTest, AttentionOutputStaysBf16ForInt8UnlessAsked) {
  const std::string src = MakeTiny("tiny");
  const std::string kOProj = "model.layers.2.self_attn.o_proj";
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    for (AttentionOutput a :
         {AttentionOutput::kAuto, AttentionOutput::kBF16, AttentionOutput::kQuantize}) {
      QuantizeOptions o;
      o.format = f;
      o.attention_output = a;
      const bool kept =
          a == AttentionOutput::kBF16 || (a == AttentionOutput::kAuto && f == QuantFormat::kInt8);
      EXPECT_EQ(KeepsAttentionOutputBF16(o), kept);
      const std::string dir = ConvertWith(src, o);
      auto c = Checkpoint::Open(dir);
      ASSERT_TRUE(c.ok()) << c.status();
      for (int l = 0; l < 5; ++l) {  // layers 0-3 and the MTP layer 4
        const std::string name = absl::StrCat("model.layers.", l, ".self_attn.o_proj.weight");
        EXPECT_EQ(c.value()->Linear(name)->weight.dtype == DType::kBF16, kept) << name;
      }
      EXPECT_EQ(IgnoresModule(c.value()->config().quantization->compressed, kOProj), kept);
      // The rest of attention is quantized either way.
      EXPECT_NE(c.value()->Linear("model.layers.2.self_attn.kv_b_proj.weight")->weight.dtype,
                DType::kBF16);
    }
  }
}

// Smoothing rescales value channel c by s_c between kv_b_proj's row and o_proj's column: the
// kv_b_proj rows quantize to the same integers (max-abs scales absorb s_c; float rounding may
// move a value at a half step by one), the key rows are
// untouched, and o_proj holds the source's columns times s_c within half a step of its rows.
TEST(QuantConverterTest, SmoothedAttentionOutputIsTheSameFunction) {
  const std::string src = MakeTiny("tiny");
  QuantizeOptions o;
  o.format = QuantFormat::kInt8;
  o.attention_output = AttentionOutput::kQuantize;
  const std::string plain_dir = ConvertWith(src, o);
  o.smooth_attention_output = true;
  const std::string smooth_dir = ConvertWith(src, o);
  auto source = Checkpoint::Open(src);
  auto plain = Checkpoint::Open(plain_dir);
  auto smooth = Checkpoint::Open(smooth_dir);
  ASSERT_TRUE(source.ok() && plain.ok() && smooth.ok());
  const ModelConfig& c = source.value()->config();
  const int64_t nope = c.qk_nope_head_dim, dv = c.v_head_dim, heads = c.num_attention_heads;
  for (int l = 0; l < 5; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".self_attn.");
    auto kv_plain = plain.value()->Linear(p + "kv_b_proj.weight");
    auto kv_smooth = smooth.value()->Linear(p + "kv_b_proj.weight");
    ASSERT_TRUE(kv_plain.ok() && kv_smooth.ok());
    const int64_t rank = kv_plain->in_features();
    ASSERT_EQ(kv_plain->out_features(), heads * (nope + dv));
    // The same integers but for float rounding at a half step: at most 1 apart, rarely.
    const auto* qa = static_cast<const int8_t*>(kv_plain->weight.data);
    const auto* qb = static_cast<const int8_t*>(kv_smooth->weight.data);
    int64_t differ = 0;
    for (int64_t k = 0; k < kv_plain->out_features() * rank; ++k) {
      ASSERT_LE(std::abs(qa[k] - qb[k]), 1) << p << " " << k;
      differ += qa[k] != qb[k];
    }
    EXPECT_LT(differ, kv_plain->out_features() * rank / 100) << p;
    std::vector<double> s(heads * dv);
    double log_sum = 0, lo = 1e30, hi = 0;
    for (int64_t r = 0; r < kv_plain->out_features(); ++r) {
      const double ratio =
          IntegerWeightScale(*kv_plain, r, 0) / IntegerWeightScale(*kv_smooth, r, 0);
      const int64_t h = r / (nope + dv), d = r % (nope + dv);
      if (d < nope) {
        ASSERT_NEAR(ratio, 1.0, 1e-6) << p << " key row " << r;
      } else {
        s[h * dv + d - nope] = ratio;
        log_sum += std::log(ratio);
        lo = std::min(lo, ratio);
        hi = std::max(hi, ratio);
      }
    }
    EXPECT_NEAR(log_sum / (heads * dv), 0.0, 1e-5) << p;  // geometric mean 1
    EXPECT_GT(hi / lo, 1.05) << p;                        // it did rescale
    auto o_src = DequantizeToFloat(*source.value()->Linear(p + "o_proj.weight"));
    auto o_smooth_w = smooth.value()->Linear(p + "o_proj.weight");
    auto o_smooth = DequantizeToFloat(*o_smooth_w);
    ASSERT_TRUE(o_src.ok() && o_smooth.ok());
    const int64_t in = heads * dv;
    for (int64_t i = 0; i < o_smooth_w->out_features(); ++i) {
      const double step = IntegerWeightScale(*o_smooth_w, i, 0);
      for (int64_t j = 0; j < in; ++j) {
        ASSERT_LE(std::fabs((*o_src)[i * in + j] * s[j] - (*o_smooth)[i * in + j]),
                  0.5 * step * 1.001 + 1e-6)
            << p << " o_proj [" << i << ", " << j << "]";
      }
    }
  }
  // int4 and o_proj kept BF16 ignore the option: the same bytes as without it.
  for (auto [f, a] : {std::pair{QuantFormat::kInt4, AttentionOutput::kQuantize},
                      std::pair{QuantFormat::kInt8, AttentionOutput::kBF16}}) {
    QuantizeOptions q;
    q.format = f;
    q.attention_output = a;
    const std::string without = FileBytes(ConvertWith(src, q) + "/model.safetensors");
    q.smooth_attention_output = true;
    EXPECT_TRUE(without == FileBytes(ConvertWith(src, q) + "/model.safetensors"));
  }
}

// Sum over rows (int8) or groups (int4) of the squared error of every quantized weight of layer 1.
std::vector<double> SquaredErrors(const Checkpoint& src, const Checkpoint& dst) {
  std::vector<double> errors;
  for (const ExpectedTensor& t : ExpectedTensors(src.config())) {
    if (t.kind != TensorKind::kLinear || !absl::StartsWith(t.name, "model.layers.1.")) continue;
    auto wb = dst.Linear(t.name);
    if (wb->weight.dtype == DType::kBF16) continue;  // kept (int8's o_proj): not quantized
    auto a = DequantizeToFloat(*src.Linear(t.name));
    auto b = DequantizeToFloat(*wb);
    const int64_t in = wb->in_features(), group = wb->group_size;
    for (int64_t o = 0; o < wb->out_features(); ++o) {
      for (int64_t g = 0; g * group < in; ++g) {
        double e = 0.0;
        for (int64_t j = g * group; j < std::min(in, (g + 1) * group); ++j) {
          e += std::pow(double{(*a)[o * in + j]} - (*b)[o * in + j], 2);
        }
        errors.push_back(e);
      }
    }
  }
  return errors;
}

TEST(QuantConverterTest, SearchedScalesAreNeverWorseThanMaxAbs) {
  const std::string src = MakeTiny("tiny-fp8");
  auto a = Checkpoint::Open(src);
  ASSERT_TRUE(a.ok());
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    for (bool symmetric : {true, false}) {
      if (f == QuantFormat::kInt8 && !symmetric) continue;
      QuantizeOptions o;
      o.format = f;
      o.symmetric = symmetric;
      o.scales = ScaleChoice::kMinSquaredError;
      auto searched = Checkpoint::Open(ConvertWith(src, o));
      o.scales = ScaleChoice::kMaxAbs;
      auto max_abs = Checkpoint::Open(ConvertWith(src, o));
      ASSERT_TRUE(searched.ok() && max_abs.ok());
      const std::vector<double> es = SquaredErrors(**a, **searched);
      const std::vector<double> em = SquaredErrors(**a, **max_abs);
      ASSERT_EQ(es.size(), em.size());
      double sum_s = 0.0, sum_m = 0.0;
      for (size_t i = 0; i < es.size(); ++i) {
        ASSERT_LE(es[i], em[i] * (1 + 1e-5) + 1e-12) << i;
        sum_s += es[i];
        sum_m += em[i];
      }
      EXPECT_LT(sum_s, 0.98 * sum_m) << (f == QuantFormat::kInt8 ? "int8" : "int4");
    }
  }
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

TEST(QuantConverterTest, OutputDoesNotDependOnTheThreadCount) {
  const std::string src = MakeTiny("tiny");
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    QuantizeOptions o;
    o.format = f;
    o.symmetric = f == QuantFormat::kInt8;  // int4 with zero points: rows share packed words
    o.threads = 1;
    const std::string one = FileBytes(ConvertWith(src, o) + "/model.safetensors");
    o.threads = 3;
    const std::string three = FileBytes(ConvertWith(src, o) + "/model.safetensors");
    ASSERT_GT(one.size(), 1000u);
    EXPECT_TRUE(one == three) << (f == QuantFormat::kInt8 ? "int8" : "int4");
  }
}

constexpr auto kCopyAll =
    std::filesystem::copy_options::overwrite_existing | std::filesystem::copy_options::recursive;

TEST(QuantConverterTest, LoaderRefusesIntegerWeightsOfIgnoredModules) {
  QuantizeOptions o;
  o.format = QuantFormat::kInt8;
  o.quantize_dense_mlp = true;
  const std::string src = ConvertWith(MakeTiny("tiny"), o);
  ASSERT_TRUE(Checkpoint::Open(src).ok());
  const std::string by_name = TempDir("quant_ignore");
  std::filesystem::copy(src, by_name, kCopyAll);
  EditConfig(by_name, [](Json& c) {
    c["quantization_config"]["ignore"].push_back("model.layers.0.mlp.down_proj");
  });
  absl::Status s = OpenError(by_name);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("'model.layers.0.mlp.down_proj.weight'"),
                    HasSubstr("quantization_config.ignore"), HasSubstr("holds int8 weights")));
  // A "re:" pattern matches from the start of the module name (as compressed-tensors does).
  const std::string by_pattern = TempDir("quant_ignore_re");
  std::filesystem::copy(src, by_pattern, kCopyAll);
  EditConfig(by_pattern, [](Json& c) {
    c["quantization_config"]["ignore"].push_back("re:.*shared_experts\\.up_proj$");
  });
  EXPECT_THAT(OpenError(by_pattern).message(),
              HasSubstr("leaves module 'model.layers.1.mlp.shared_experts.up_proj' unquantized"));
  // Patterns that match nothing quantized, or only a suffix of a name, change nothing.
  EditConfig(by_pattern, [](Json& c) {
    c["quantization_config"]["ignore"] = {"lm_head", "re:shared_experts", "model.layers.0.mlp"};
  });
  EXPECT_TRUE(Checkpoint::Open(by_pattern).ok());
  // An invalid pattern is a config error naming the entry.
  EditConfig(by_pattern, [](Json& c) {
    c["quantization_config"]["ignore"] = {"lm_head", "re:(unclosed"};
  });
  EXPECT_THAT(OpenError(by_pattern).message(),
              AllOf(HasSubstr("quantization_config.ignore"), HasSubstr("re:(unclosed")));
}

TEST(QuantConfigTest, IgnoresModuleMatchesNamesAndPatternsFromTheStart) {
  CompressedTensorsScheme s;
  s.ignore = {"lm_head", "re:.*mlp\\.gate$", "re:model\\.layers\\.[0-2]\\.mlp\\."};
  ASSERT_TRUE(CompileIgnorePatterns(s).ok());
  EXPECT_TRUE(IgnoresModule(s, "lm_head"));
  EXPECT_TRUE(IgnoresModule(s, "model.layers.7.mlp.gate"));
  EXPECT_FALSE(IgnoresModule(s, "model.layers.7.mlp.gate_proj"));  // "$" anchors the end
  EXPECT_TRUE(IgnoresModule(s, "model.layers.2.mlp.down_proj"));
  EXPECT_FALSE(IgnoresModule(s, "model.layers.12.mlp.down_proj"));
  EXPECT_FALSE(IgnoresModule(s, "x.model.layers.2.mlp.down_proj"));  // matched from the start
  EXPECT_FALSE(IgnoresModule(s, "model.lm_head"));                   // names match whole
  s.ignore.push_back("re:[");
  EXPECT_THAT(CompileIgnorePatterns(s).message(), HasSubstr("'re:['"));
}

}  // namespace
}  // namespace r2::model

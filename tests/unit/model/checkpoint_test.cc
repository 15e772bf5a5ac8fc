#include "engine/model/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/model/tiny_model.h"
#include "kernels/numeric.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_paths.h"

namespace r2::model {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

struct RawTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<RawTensor> ReadTensors(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  std::vector<RawTensor> out;
  for (const auto& [name, e] : (*file)->entries()) {
    auto view = (*file)->Get(name);
    const uint8_t* p = static_cast<const uint8_t*>(view->data);
    out.push_back({name, e.dtype, e.shape, std::vector<uint8_t>(p, p + (e.end - e.begin))});
  }
  return out;
}

void WriteTensors(const std::string& path, const std::vector<RawTensor>& tensors) {
  SafetensorsWriter w;
  for (const RawTensor& t : tensors) w.Add(t.name, t.dtype, t.shape, t.bytes);
  ASSERT_TRUE(w.Write(path).ok());
}

// Rewrites a safetensors file through `edit` (which may change or erase tensors).
void EditTensors(const std::string& path,
                 const std::function<void(std::vector<RawTensor>&)>& edit) {
  std::vector<RawTensor> tensors = ReadTensors(path);
  edit(tensors);
  WriteTensors(path, tensors);
}

RawTensor* Find(std::vector<RawTensor>& tensors, const std::string& name) {
  for (RawTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

void Erase(std::vector<RawTensor>& tensors, const std::string& name) {
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                               [&](const RawTensor& t) { return t.name == name; }),
                tensors.end());
}

std::string WritePreset(const std::string& preset, const std::string& tag, int shards = 0) {
  auto options = TinyModelPreset(preset);
  EXPECT_TRUE(options.ok());
  if (shards > 0) options->shards = shards;
  const std::string dir = r2::testing::MakeTempDir(tag);
  const absl::Status s = WriteTinyModel(*options, dir);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

// Each test gets a fresh copy of a model written once per preset (writing is the slow part).
std::string CopyOf(const std::string& preset, const std::string& tag) {
  static std::map<std::string, std::string>* cache = new std::map<std::string, std::string>();
  auto it = cache->find(preset);
  if (it == cache->end()) it = cache->emplace(preset, WritePreset(preset, "ckpt-" + preset)).first;
  const std::string dir = r2::testing::MakeTempDir(tag);
  std::filesystem::copy(
      it->second, dir,
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  return dir;
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return Json::parse(in);
}

void WriteJson(const std::string& path, const Json& j) { std::ofstream(path) << j.dump(2); }

TEST(CheckpointTest, ExpectedTensorsOfTinyConfig) {
  auto options = TinyModelPreset("tiny");
  auto config = ParseModelConfig(TinyModelConfigJson(*options), "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::vector<ExpectedTensor> expected = ExpectedTensors(*config);
  std::map<std::string, ExpectedTensor> by_name;
  for (const ExpectedTensor& t : expected) by_name.emplace(t.name, t);
  EXPECT_EQ(by_name.size(), expected.size()) << "duplicate names";
  auto shape = [&](const std::string& n) {
    EXPECT_TRUE(by_name.count(n)) << n;
    return by_name.count(n) ? by_name.at(n).shape : std::vector<int64_t>{};
  };
  using V = std::vector<int64_t>;
  EXPECT_EQ(shape("model.embed_tokens.weight"), (V{1024, 256}));
  EXPECT_EQ(shape("lm_head.weight"), (V{1024, 256}));
  EXPECT_EQ(shape("model.norm.weight"), (V{256}));
  EXPECT_EQ(shape("model.layers.0.self_attn.q_a_proj.weight"), (V{64, 256}));
  EXPECT_EQ(shape("model.layers.0.self_attn.q_a_layernorm.weight"), (V{64}));
  EXPECT_EQ(shape("model.layers.0.self_attn.q_b_proj.weight"), (V{4 * 48, 64}));
  EXPECT_EQ(shape("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), (V{80, 256}));
  EXPECT_EQ(shape("model.layers.0.self_attn.kv_a_layernorm.weight"), (V{64}));
  EXPECT_EQ(shape("model.layers.0.self_attn.kv_b_proj.weight"), (V{4 * 56, 64}));
  EXPECT_EQ(shape("model.layers.0.self_attn.o_proj.weight"), (V{256, 4 * 24}));
  EXPECT_EQ(shape("model.layers.0.mlp.gate_proj.weight"), (V{512, 256}));
  EXPECT_EQ(shape("model.layers.0.mlp.down_proj.weight"), (V{256, 512}));
  EXPECT_EQ(shape("model.layers.1.mlp.gate.weight"), (V{16, 256}));
  EXPECT_EQ(shape("model.layers.1.mlp.gate.e_score_correction_bias"), (V{16}));
  EXPECT_EQ(shape("model.layers.3.mlp.experts.15.down_proj.weight"), (V{256, 64}));
  EXPECT_EQ(shape("model.layers.1.mlp.shared_experts.up_proj.weight"), (V{64, 256}));
  EXPECT_EQ(shape("model.layers.4.enorm.weight"), (V{256}));
  EXPECT_EQ(shape("model.layers.4.hnorm.weight"), (V{256}));
  EXPECT_EQ(shape("model.layers.4.eh_proj.weight"), (V{256, 512}));
  EXPECT_EQ(shape("model.layers.4.shared_head.norm.weight"), (V{256}));
  EXPECT_EQ(shape("model.layers.4.mlp.experts.0.gate_proj.weight"), (V{64, 256}));
  EXPECT_EQ(by_name.count("model.layers.0.mlp.gate.weight"), 0u);
  EXPECT_EQ(by_name.count("model.layers.4.embed_tokens.weight"), 0u);  // optional duplicate
  EXPECT_EQ(by_name.count("model.layers.4.shared_head.head.weight"), 0u);
  EXPECT_EQ(by_name.count("model.layers.5.input_layernorm.weight"), 0u);

  config->q_lora_rank = 0;
  config->tie_word_embeddings = true;
  config->topk_method = "greedy";
  config->n_shared_experts = 0;
  by_name.clear();
  for (const ExpectedTensor& t : ExpectedTensors(*config)) by_name.emplace(t.name, t);
  EXPECT_EQ(shape("model.layers.0.self_attn.q_proj.weight"), (V{4 * 48, 256}));
  EXPECT_EQ(by_name.count("model.layers.0.self_attn.q_a_proj.weight"), 0u);
  EXPECT_EQ(by_name.count("lm_head.weight"), 0u);
  EXPECT_EQ(by_name.count("model.layers.1.mlp.gate.e_score_correction_bias"), 0u);
  EXPECT_EQ(by_name.count("model.layers.1.mlp.shared_experts.up_proj.weight"), 0u);
}

TEST(CheckpointTest, OpensTinyModel) {
  const std::string dir = CopyOf("tiny", "ckpt-open");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->config().hidden_size, 256);
  EXPECT_EQ((*ckpt)->dir(), dir);
  for (const ExpectedTensor& t : ExpectedTensors((*ckpt)->config())) {
    auto view = (*ckpt)->Tensor(t.name);
    ASSERT_TRUE(view.ok()) << t.name;
    EXPECT_EQ(view->shape, t.shape);
  }
  auto w = (*ckpt)->Linear("model.layers.0.self_attn.q_a_proj.weight");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->weight.dtype, DType::kBF16);
  EXPECT_EQ(w->out_features(), 64);
  EXPECT_EQ(w->in_features(), 256);
  EXPECT_FALSE(w->block_scaled());
  auto bias = (*ckpt)->Tensor("model.layers.1.mlp.gate.e_score_correction_bias");
  ASSERT_TRUE(bias.ok());
  EXPECT_EQ(bias->dtype, DType::kF32);
  auto norm = (*ckpt)->Linear("model.norm.weight");
  EXPECT_FALSE(norm.ok());  // not a matrix
  auto missing = (*ckpt)->Tensor("model.layers.9.input_layernorm.weight");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE((*ckpt)->Has("model.layers.9.input_layernorm.weight"));
  EXPECT_TRUE((*ckpt)->Has("model.layers.4.eh_proj.weight"));
}

TEST(CheckpointTest, OpensShardedModelWithoutQLora) {
  const std::string dir = CopyOf("tiny-noqlora", "ckpt-sharded");
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/model-00001-of-00002.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/model-00002-of-00002.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors"));
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE((*ckpt)->config().has_q_lora());
  EXPECT_FALSE((*ckpt)->config().rope_scaling.has_value());
  EXPECT_TRUE((*ckpt)->Has("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE((*ckpt)->Has("model.layers.0.self_attn.q_a_proj.weight"));
  auto w = (*ckpt)->Linear("model.layers.4.self_attn.q_proj.weight");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->out_features(), 4 * 48);
}

TEST(CheckpointTest, OpensFp8ModelWithBlockScales) {
  const std::string dir = CopyOf("tiny-fp8", "ckpt-fp8");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_TRUE((*ckpt)->config().quantization.has_value());
  auto w = (*ckpt)->Linear("model.layers.1.self_attn.kv_a_proj_with_mqa.weight");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->weight.dtype, DType::kF8E4M3);
  ASSERT_TRUE(w->block_scaled());
  EXPECT_EQ(w->block_out, 128);
  EXPECT_EQ(w->block_in, 128);
  EXPECT_EQ(w->weight.shape, (std::vector<int64_t>{80, 192}));
  EXPECT_EQ(w->scale_inv.shape, (std::vector<int64_t>{1, 2}));  // partial in both dimensions
  // Unquantized per spec 5.3.
  auto eh = (*ckpt)->Linear("model.layers.4.eh_proj.weight");
  ASSERT_TRUE(eh.ok());
  EXPECT_EQ(eh->weight.dtype, DType::kBF16);
  EXPECT_FALSE(eh->block_scaled());
  auto gate = (*ckpt)->Linear("model.layers.1.mlp.gate.weight");
  ASSERT_TRUE(gate.ok());
  EXPECT_EQ(gate->weight.dtype, DType::kBF16);
  auto dense = (*ckpt)->Linear("model.layers.0.mlp.gate_proj.weight");
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(dense->scale_inv.shape, (std::vector<int64_t>{3, 2}));  // [320, 192]
}

TEST(CheckpointTest, Fp8BlocksUseTheFullRange) {
  const std::string dir = CopyOf("tiny-fp8", "ckpt-fp8-range");
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto w = (*ckpt)->Linear("model.layers.0.mlp.gate_proj.weight");
  ASSERT_TRUE(w.ok());
  const int64_t rows = w->out_features(), cols = w->in_features();
  const uint8_t* q = w->weight.as<uint8_t>();
  for (int64_t bi = 0; bi < w->scale_inv.shape[0]; ++bi) {
    for (int64_t bj = 0; bj < w->scale_inv.shape[1]; ++bj) {
      float amax = 0, scale = 0;
      std::memcpy(&scale, w->scale_inv.as<uint8_t>() + 4 * (bi * w->scale_inv.shape[1] + bj), 4);
      EXPECT_GT(scale, 0.0f);
      for (int64_t r = bi * 128; r < std::min(rows, bi * 128 + 128); ++r) {
        for (int64_t c = bj * 128; c < std::min(cols, bj * 128 + 128); ++c) {
          amax = std::max(amax, std::fabs(Fp8E4M3ToFloat(q[r * cols + c])));
        }
      }
      EXPECT_EQ(amax, 448.0f) << bi << "," << bj;
      // Dequantized magnitudes are those of std 1/sqrt(192) normals.
      EXPECT_LT(amax * scale, 0.5f);
      EXPECT_GT(amax * scale, 0.1f);
    }
  }
}

void ExpectOpenError(const std::string& dir, std::initializer_list<std::string> parts) {
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_FALSE(ckpt.ok());
  for (const std::string& p : parts) EXPECT_THAT(ckpt.status().message(), HasSubstr(p));
}

TEST(CheckpointTest, MissingTensorNamesTensorAndFile) {
  const std::string dir = CopyOf("tiny", "ckpt-missing");
  EditTensors(dir + "/model.safetensors", [](std::vector<RawTensor>& t) {
    Erase(t, "model.layers.2.mlp.experts.3.up_proj.weight");
  });
  ExpectOpenError(
      dir, {"model.safetensors", "'model.layers.2.mlp.experts.3.up_proj.weight'", "missing"});
}

TEST(CheckpointTest, MissingMtpTensor) {
  const std::string dir = CopyOf("tiny", "ckpt-missing-mtp");
  EditTensors(dir + "/model.safetensors",
              [](std::vector<RawTensor>& t) { Erase(t, "model.layers.4.hnorm.weight"); });
  ExpectOpenError(dir, {"'model.layers.4.hnorm.weight'", "missing"});
}

TEST(CheckpointTest, WrongShape) {
  const std::string dir = CopyOf("tiny", "ckpt-shape");
  EditTensors(dir + "/model.safetensors", [](std::vector<RawTensor>& t) {
    RawTensor* n = Find(t, "model.layers.1.self_attn.kv_a_layernorm.weight");
    n->shape = {32};
    n->bytes.resize(64);
  });
  ExpectOpenError(dir, {"model.safetensors", "'model.layers.1.self_attn.kv_a_layernorm.weight'",
                        "shape [32], expected [64]"});
}

TEST(CheckpointTest, WrongDtypeForVectorAndLinear) {
  const std::string dir = CopyOf("tiny", "ckpt-dtype");
  EditTensors(dir + "/model.safetensors", [](std::vector<RawTensor>& t) {
    RawTensor* n = Find(t, "model.norm.weight");
    n->dtype = DType::kI32;
    n->bytes.resize(256 * 4);
  });
  ExpectOpenError(dir, {"'model.norm.weight'", "dtype I32"});

  const std::string dir2 = CopyOf("tiny", "ckpt-dtype2");
  EditTensors(dir2 + "/model.safetensors", [](std::vector<RawTensor>& t) {
    RawTensor* n = Find(t, "model.layers.0.input_layernorm.weight");
    n->dtype = DType::kF8E4M3;  // FP8 is for linear weights only
    n->bytes.resize(256);
  });
  ExpectOpenError(dir2, {"'model.layers.0.input_layernorm.weight'", "dtype F8_E4M3"});

  const std::string dir3 = CopyOf("tiny", "ckpt-dtype3");
  EditTensors(dir3 + "/model.safetensors", [](std::vector<RawTensor>& t) {
    RawTensor* n = Find(t, "model.layers.0.self_attn.o_proj.weight");
    n->dtype = DType::kU8;
    n->bytes.resize(n->bytes.size() / 2);
  });
  ExpectOpenError(dir3, {"'model.layers.0.self_attn.o_proj.weight'", "dtype U8"});
}

TEST(CheckpointTest, Fp8WeightWithoutScale) {
  const std::string dir = CopyOf("tiny-fp8", "ckpt-noscale");
  EditTensors(dir + "/model.safetensors", [](std::vector<RawTensor>& t) {
    Erase(t, "model.layers.2.mlp.experts.7.down_proj.weight_scale_inv");
  });
  ExpectOpenError(dir, {"'model.layers.2.mlp.experts.7.down_proj.weight_scale_inv'", "missing"});
}

TEST(CheckpointTest, Fp8ScaleOfWrongShapeOrDtype) {
  const std::string dir = CopyOf("tiny-fp8", "ckpt-scaleshape");
  EditTensors(dir + "/model.safetensors", [](std::vector<RawTensor>& t) {
    RawTensor* s = Find(t, "model.layers.0.self_attn.q_b_proj.weight_scale_inv");
    s->shape = {1, 1};
    s->bytes.resize(4);
  });
  ExpectOpenError(dir, {"'model.layers.0.self_attn.q_b_proj.weight_scale_inv'",
                        "shape [1, 1], expected [2, 1]"});

  const std::string dir2 = CopyOf("tiny-fp8", "ckpt-scaledtype");
  EditTensors(dir2 + "/model.safetensors", [](std::vector<RawTensor>& t) {
    RawTensor* s = Find(t, "model.layers.0.self_attn.q_b_proj.weight_scale_inv");
    s->dtype = DType::kBF16;
    s->bytes.resize(s->bytes.size() / 2);
  });
  ExpectOpenError(dir2, {"'model.layers.0.self_attn.q_b_proj.weight_scale_inv'", "expected F32"});
}

TEST(CheckpointTest, IndexPointingToMissingShard) {
  const std::string dir = CopyOf("tiny-noqlora", "ckpt-noshard");
  Json index = ReadJson(dir + "/model.safetensors.index.json");
  index["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors";
  WriteJson(dir + "/model.safetensors.index.json", index);
  ExpectOpenError(dir, {"model.safetensors.index.json", "model-00009-of-00009.safetensors",
                        "'model.norm.weight'"});
}

TEST(CheckpointTest, IndexPointingOutsideTheDirectory) {
  for (const char* shard : {"../model-00001-of-00002.safetensors", "/etc/passwd",
                            "sub/../../x.safetensors", "", "./"}) {
    const std::string dir = CopyOf("tiny-noqlora", "ckpt-escape");
    Json index = ReadJson(dir + "/model.safetensors.index.json");
    index["weight_map"]["model.norm.weight"] = shard;
    WriteJson(dir + "/model.safetensors.index.json", index);
    ExpectOpenError(dir, {"model.safetensors.index.json", "'model.norm.weight'",
                          "inside the checkpoint directory"});
  }
}

TEST(CheckpointTest, IndexListsTensorAbsentFromShard) {
  const std::string dir = CopyOf("tiny-noqlora", "ckpt-wrongshard");
  Json index = ReadJson(dir + "/model.safetensors.index.json");
  const std::string shard = index["weight_map"]["model.embed_tokens.weight"];
  const std::string other = shard == "model-00001-of-00002.safetensors"
                                ? "model-00002-of-00002.safetensors"
                                : "model-00001-of-00002.safetensors";
  index["weight_map"]["model.embed_tokens.weight"] = other;
  WriteJson(dir + "/model.safetensors.index.json", index);
  ExpectOpenError(dir, {"model.safetensors.index.json", "'model.embed_tokens.weight'", other});
}

TEST(CheckpointTest, TensorMissingFromIndex) {
  const std::string dir = CopyOf("tiny-noqlora", "ckpt-unlisted");
  Json index = ReadJson(dir + "/model.safetensors.index.json");
  index["weight_map"].erase("model.layers.3.self_attn.o_proj.weight");
  WriteJson(dir + "/model.safetensors.index.json", index);
  ExpectOpenError(
      dir, {"model.safetensors.index.json", "'model.layers.3.self_attn.o_proj.weight'", "missing"});
}

TEST(CheckpointTest, MalformedIndex) {
  const std::string dir = CopyOf("tiny-noqlora", "ckpt-badindex");
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": [";
  ExpectOpenError(dir, {"model.safetensors.index.json", "invalid JSON"});
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"metadata\": {}}";
  ExpectOpenError(dir, {"model.safetensors.index.json", "field 'weight_map'"});
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": {\"a\": 3}}";
  ExpectOpenError(dir, {"model.safetensors.index.json", "'a'"});
}

TEST(CheckpointTest, ConfigBadFieldNamesFileAndField) {
  const std::string dir = CopyOf("tiny", "ckpt-config");
  Json config = ReadJson(dir + "/config.json");
  config["n_group"] = 3;
  WriteJson(dir + "/config.json", config);
  ExpectOpenError(dir, {"config.json", "field 'n_group'"});
  std::filesystem::remove(dir + "/config.json");
  ExpectOpenError(dir, {"config.json"});
}

TEST(CheckpointTest, ConfigShapeMismatchWithWeights) {
  const std::string dir = CopyOf("tiny", "ckpt-config-dims");
  Json config = ReadJson(dir + "/config.json");
  config["v_head_dim"] = 32;
  WriteJson(dir + "/config.json", config);
  ExpectOpenError(dir, {"'model.layers.0.self_attn.kv_b_proj.weight'", "expected [256, 64]"});
}

TEST(CheckpointTest, NoWeights) {
  const std::string dir = CopyOf("tiny", "ckpt-noweights");
  std::filesystem::remove(dir + "/model.safetensors");
  ExpectOpenError(dir, {"neither model.safetensors nor model.safetensors.index.json"});
}

TEST(CheckpointTest, CorruptShardHeader) {
  const std::string dir = CopyOf("tiny", "ckpt-corrupt");
  std::fstream f(dir + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.write("[", 1);
  f.close();
  ExpectOpenError(dir, {"model.safetensors", "not valid JSON"});
}

}  // namespace
}  // namespace r2::model

#include "engine/model/tiny_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/model/checkpoint.h"
#include "kernels/numeric.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_paths.h"

namespace r2::model {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// file name -> bytes of every file in dir.
std::map<std::string, std::vector<uint8_t>> ReadDir(const std::string& dir) {
  std::map<std::string, std::vector<uint8_t>> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    files[entry.path().filename().string()] = ReadAll(entry.path().string());
  }
  return files;
}

uint64_t Fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001b3ull;
  return h;
}

// A small model so that writing it several times stays fast under sanitizers.
TinyModelOptions Small(uint64_t seed) {
  TinyModelOptions o = *TinyModelPreset("tiny");
  o.vocab_size = 128;
  o.hidden_size = 64;
  o.intermediate_size = 96;
  o.moe_intermediate_size = 32;
  o.num_hidden_layers = 2;
  o.n_routed_experts = 4;
  o.n_group = 2;
  o.topk_group = 1;
  o.num_experts_per_tok = 2;
  o.q_lora_rank = 32;
  o.kv_lora_rank = 32;
  o.seed = seed;
  return o;
}

std::string Write(const TinyModelOptions& o, const std::string& tag) {
  const std::string dir = r2::testing::MakeTempDir(tag);
  const absl::Status s = WriteTinyModel(o, dir);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

std::vector<float> Floats(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const uint8_t* p = t.as<uint8_t>();
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == DType::kBF16) {
      out[i] = BF16ToFloat(static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8)));
    } else {
      std::memcpy(&out[i], p + 4 * i, 4);
    }
  }
  return out;
}

std::pair<double, double> MeanStd(const std::vector<float>& v) {
  double s = 0, s2 = 0;
  for (float x : v) s += x;
  const double mean = s / v.size();
  for (float x : v) s2 += (x - mean) * (x - mean);
  return {mean, std::sqrt(s2 / v.size())};
}

TEST(TinyModelTest, SameSeedGivesIdenticalBytes) {
  for (TinyWeightFormat format : {TinyWeightFormat::kBF16, TinyWeightFormat::kFp8Block}) {
    TinyModelOptions o = Small(7);
    o.format = format;
    o.shards = 2;
    const auto a = ReadDir(Write(o, "tiny-det-a"));
    const auto b = ReadDir(Write(o, "tiny-det-b"));
    ASSERT_EQ(a.size(), 5u);  // config, generation config, index, 2 shards
    EXPECT_EQ(a, b);
  }
}

TEST(TinyModelTest, DifferentSeedGivesDifferentWeights) {
  const auto a = ReadDir(Write(Small(1), "tiny-seed-a"));
  const auto b = ReadDir(Write(Small(2), "tiny-seed-b"));
  EXPECT_EQ(a.at("config.json"), b.at("config.json"));
  EXPECT_EQ(a.at("model.safetensors").size(), b.at("model.safetensors").size());
  EXPECT_NE(a.at("model.safetensors"), b.at("model.safetensors"));
}

TEST(TinyModelTest, SeedZeroTinyIsPinned) {
  // The bytes must not depend on the machine, compiler or math library. If the generator is changed
  // on purpose, update the hash (and regenerate golden fixtures made from the tiny checkpoints).
  const std::string dir = Write(*TinyModelPreset("tiny"), "tiny-pinned");
  const uint64_t hash = Fnv1a(ReadAll(dir + "/model.safetensors"));
  EXPECT_EQ(hash, 0xed2fb22f48c88113ull) << std::hex << "0x" << hash;
  const std::string fp8 = Write(*TinyModelPreset("tiny-fp8"), "tiny-pinned-fp8");
  const uint64_t fp8_hash = Fnv1a(ReadAll(fp8 + "/model.safetensors"));
  EXPECT_EQ(fp8_hash, 0x0e8f2f593648f301ull) << std::hex << "0x" << fp8_hash;
}

TEST(TinyModelTest, ShardingDoesNotChangeValues) {
  TinyModelOptions o = Small(3);
  auto one = Checkpoint::Open(Write(o, "tiny-shard1"));
  o.shards = 3;
  const std::string dir3 = Write(o, "tiny-shard3");
  auto three = Checkpoint::Open(dir3);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_TRUE(std::filesystem::exists(dir3 + "/model-00003-of-00003.safetensors"));
  const Json index = Json::parse(ReadAll(dir3 + "/model.safetensors.index.json"));
  uint64_t shard_bytes = 0;
  for (int k = 1; k <= 3; ++k) {
    shard_bytes +=
        std::filesystem::file_size(absl::StrFormat("%s/model-%05d-of-00003.safetensors", dir3, k));
  }
  EXPECT_LT(index["metadata"]["total_size"].get<uint64_t>(), shard_bytes);
  EXPECT_GT(index["metadata"]["total_size"].get<uint64_t>(), shard_bytes - 3 * 20000);
  for (const ExpectedTensor& t : ExpectedTensors((*one)->config())) {
    auto a = (*one)->Tensor(t.name);
    auto b = (*three)->Tensor(t.name);
    ASSERT_TRUE(a.ok() && b.ok()) << t.name;
    const size_t bytes = static_cast<size_t>(a->numel()) * DTypeSize(a->dtype);
    EXPECT_EQ(std::memcmp(a->data, b->data, bytes), 0) << t.name;
  }
}

TEST(TinyModelTest, TinyPresetIsSpecConfig) {
  const std::string dir = Write(*TinyModelPreset("tiny"), "tiny-spec");
  const Json c = Json::parse(ReadAll(dir + "/config.json"));
  EXPECT_EQ(c["architectures"], Json::array({"DeepseekV3ForCausalLM"}));
  EXPECT_EQ(c["model_type"], "deepseek_v3");
  const std::pair<const char*, int> ints[] = {
      {"vocab_size", 1024},          {"hidden_size", 256},     {"intermediate_size", 512},
      {"moe_intermediate_size", 64}, {"num_hidden_layers", 4}, {"num_nextn_predict_layers", 1},
      {"first_k_dense_replace", 1},  {"moe_layer_freq", 1},    {"num_attention_heads", 4},
      {"num_key_value_heads", 4},    {"q_lora_rank", 64},      {"kv_lora_rank", 64},
      {"qk_nope_head_dim", 32},      {"qk_rope_head_dim", 16}, {"v_head_dim", 24},
      {"n_routed_experts", 16},      {"n_group", 2},           {"topk_group", 1},
      {"num_experts_per_tok", 4},    {"n_shared_experts", 1},  {"max_position_embeddings", 1024},
      {"bos_token_id", 0},           {"eos_token_id", 1},
  };
  for (const auto& [key, value] : ints) EXPECT_EQ(c[key], value) << key;
  EXPECT_EQ(c["routed_scaling_factor"], 2.5);
  EXPECT_EQ(c["norm_topk_prob"], true);
  EXPECT_EQ(c["scoring_func"], "sigmoid");
  EXPECT_EQ(c["topk_method"], "noaux_tc");
  EXPECT_EQ(c["hidden_act"], "silu");
  EXPECT_EQ(c["rms_norm_eps"], 1e-6);
  EXPECT_EQ(c["rope_theta"], 10000.0);
  EXPECT_EQ(c["rope_scaling"]["type"], "yarn");
  EXPECT_EQ(c["rope_scaling"]["factor"], 4.0);
  EXPECT_EQ(c["rope_scaling"]["original_max_position_embeddings"], 256);
  EXPECT_EQ(c["rope_scaling"]["beta_fast"], 32.0);
  EXPECT_EQ(c["rope_scaling"]["beta_slow"], 1.0);
  EXPECT_EQ(c["rope_scaling"]["mscale"], 1.0);
  EXPECT_EQ(c["rope_scaling"]["mscale_all_dim"], 1.0);
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["tie_word_embeddings"], false);
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  EXPECT_FALSE(c.contains("quantization_config"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  const Json g = Json::parse(ReadAll(dir + "/generation_config.json"));
  EXPECT_EQ(g["bos_token_id"], 0);
  EXPECT_EQ(g["eos_token_id"], 1);
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
}

TEST(TinyModelTest, PresetsParse) {
  EXPECT_EQ(TinyModelPresetNames(),
            (std::vector<std::string>{"tiny", "tiny-noqlora", "tiny-fp8", "small", "bench-2b"}));
  for (const std::string& name : TinyModelPresetNames()) {
    auto o = TinyModelPreset(name);
    ASSERT_TRUE(o.ok()) << name;
    auto c = ParseModelConfig(TinyModelConfigJson(*o), "config.json");
    ASSERT_TRUE(c.ok()) << name << ": " << c.status();
    EXPECT_EQ(c->num_nextn_predict_layers, name == "bench-2b" ? 0 : 1) << name;
  }
  auto noq = ParseModelConfig(TinyModelConfigJson(*TinyModelPreset("tiny-noqlora")), "c");
  EXPECT_FALSE(noq->has_q_lora());
  EXPECT_FALSE(noq->rope_scaling.has_value());
  EXPECT_EQ(TinyModelPreset("tiny-noqlora")->shards, 2);
  auto fp8 = ParseModelConfig(TinyModelConfigJson(*TinyModelPreset("tiny-fp8")), "c");
  ASSERT_TRUE(fp8->quantization.has_value());
  EXPECT_LT(fp8->topk_group, fp8->n_group);
  EXPECT_NE(fp8->hidden_size % 128, 0);
  EXPECT_NE(fp8->intermediate_size % 128, 0);
  EXPECT_TRUE(fp8->rope_scaling.has_value());
  auto small = TinyModelParameterCount(*TinyModelPreset("small"));
  ASSERT_TRUE(small.ok());
  EXPECT_GT(*small, 200'000'000);
  EXPECT_LT(*small, 900'000'000);
  auto bench = TinyModelParameterCount(*TinyModelPreset("bench-2b"));
  ASSERT_TRUE(bench.ok());
  EXPECT_GT(*bench, 1'000'000'000);
  EXPECT_LT(*bench, 3'000'000'000);
  auto bad = TinyModelPreset("huge");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("huge"));
}

TEST(TinyModelTest, WeightStatisticsKeepActivationsOrderOne) {
  auto ckpt = Checkpoint::Open(Write(*TinyModelPreset("tiny"), "tiny-stats"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto stats = [&](const std::string& name) { return MeanStd(Floats(*(*ckpt)->Tensor(name))); };
  auto [emb_mean, emb_std] = stats("model.embed_tokens.weight");
  EXPECT_NEAR(emb_mean, 0.0, 0.02);
  EXPECT_NEAR(emb_std, 1.0, 0.02);
  auto [lin_mean, lin_std] = stats("model.layers.0.mlp.down_proj.weight");
  EXPECT_NEAR(lin_std, 1.0 / std::sqrt(512.0), 0.002);
  auto [head_mean, head_std] = stats("lm_head.weight");
  EXPECT_NEAR(head_std, 3.0 / 16.0, 0.005);
  auto [norm_mean, norm_std] = stats("model.layers.2.post_attention_layernorm.weight");
  EXPECT_NEAR(norm_mean, 1.0, 0.02);
  EXPECT_GT(norm_std, 0.02);
  EXPECT_LT(norm_std, 0.08);
  auto bias = (*ckpt)->Tensor("model.layers.1.mlp.gate.e_score_correction_bias");
  ASSERT_EQ(bias->dtype, DType::kF32);
  auto [bias_mean, bias_std] = MeanStd(Floats(*bias));
  EXPECT_GT(bias_std, 0.0);
  EXPECT_LT(bias_std, 0.2);
}

TEST(TinyModelTest, InvalidOptionsNameTheField) {
  TinyModelOptions o = Small(0);
  o.n_group = 3;
  absl::Status s = WriteTinyModel(o, r2::testing::MakeTempDir("tiny-bad"));
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("field 'n_group'"));
  o = Small(0);
  o.qk_rope_head_dim = 15;
  s = WriteTinyModel(o, r2::testing::MakeTempDir("tiny-bad"));
  EXPECT_THAT(s.message(), HasSubstr("field 'qk_rope_head_dim'"));
  o = Small(0);
  o.shards = 0;
  s = WriteTinyModel(o, r2::testing::MakeTempDir("tiny-bad"));
  EXPECT_THAT(s.message(), HasSubstr("shards"));
}

TEST(TinyModelTest, UnwritableDirectoryIsAnError) {
  const std::string dir = r2::testing::MakeTempDir("tiny-unwritable");
  std::ofstream(dir + "/file") << "x";
  const absl::Status s = WriteTinyModel(Small(0), dir + "/file/sub");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(dir + "/file/sub"));
}

TEST(TinyModelTest, TokenizerHookIsCalledLast) {
  TinyModelOptions o = Small(0);
  std::string seen;
  o.write_tokenizer = [&](const std::string& dir, const TinyModelOptions& opts) {
    seen = dir;
    EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
    EXPECT_EQ(opts.vocab_size, 128);
    return absl::OkStatus();
  };
  const std::string dir = Write(o, "tiny-hook");
  EXPECT_EQ(seen, dir);
  o.write_tokenizer = [](const std::string&, const TinyModelOptions&) {
    return absl::InternalError("tokenizer failed");
  };
  EXPECT_THAT(WriteTinyModel(o, dir).message(), HasSubstr("tokenizer failed"));
}

TEST(TinyModelTest, NoMtpAndSharedExpertVariants) {
  TinyModelOptions o = Small(5);
  o.num_nextn_predict_layers = 0;
  o.n_shared_experts = 0;
  o.yarn = false;
  auto ckpt = Checkpoint::Open(Write(o, "tiny-variant"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_FALSE((*ckpt)->Has("model.layers.2.eh_proj.weight"));
  EXPECT_FALSE((*ckpt)->Has("model.layers.1.mlp.shared_experts.up_proj.weight"));
}

}  // namespace
}  // namespace r2::model

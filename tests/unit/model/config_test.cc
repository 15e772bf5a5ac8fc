#include "engine/model/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace r2::model {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

// Spec 8.1's tiny config.
Json TinyJson() {
  return Json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 64,
    "num_hidden_layers": 4, "num_nextn_predict_layers": 1, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 64, "kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16,
    "v_head_dim": 24, "n_routed_experts": 16, "n_group": 2, "topk_group": 1,
    "num_experts_per_tok": 4, "n_shared_experts": 1, "routed_scaling_factor": 2.5,
    "norm_topk_prob": true, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000,
    "max_position_embeddings": 1024,
    "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 256,
                     "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "attention_bias": false, "tie_word_embeddings": false, "bos_token_id": 0,
    "eos_token_id": 1, "torch_dtype": "bfloat16"
  })");
}

absl::StatusOr<ModelConfig> Parse(const Json& j) {
  return ParseModelConfig(j.dump(), "config.json");
}

TEST(ConfigTest, ParsesTinyConfig) {
  auto c = Parse(TinyJson());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 1024);
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->q_lora_rank, 64);
  EXPECT_TRUE(c->has_q_lora());
  EXPECT_EQ(c->qk_head_dim(), 48);
  EXPECT_EQ(c->kv_cache_width(), 80);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->type, "yarn");
  EXPECT_EQ(c->rope_scaling->factor, 4.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 256);
  EXPECT_EQ(c->rope_scaling->beta_fast, 32.0);
  EXPECT_EQ(c->rope_scaling->mscale_all_dim, 1.0);
  EXPECT_FALSE(c->quantization.has_value());
  EXPECT_FALSE(c->is_moe_layer(0));
  EXPECT_TRUE(c->is_moe_layer(1));
  EXPECT_TRUE(c->is_moe_layer(4));  // the MTP layer
  const double m = 0.1 * std::log(4.0) + 1.0;
  EXPECT_NEAR(c->softmax_scale(), m * m / std::sqrt(48.0), 1e-12);
}

TEST(ConfigTest, AbsentFieldsTakeHuggingFaceDefaults) {
  auto c = ParseModelConfig(R"({"model_type": "deepseek_v3"})", "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vocab_size, 129280);
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_EQ(c->intermediate_size, 18432);
  EXPECT_EQ(c->moe_intermediate_size, 2048);
  EXPECT_EQ(c->num_hidden_layers, 61);
  EXPECT_EQ(c->num_attention_heads, 128);
  EXPECT_EQ(c->num_key_value_heads, 128);
  EXPECT_EQ(c->q_lora_rank, 1536);
  EXPECT_EQ(c->kv_lora_rank, 512);
  EXPECT_EQ(c->qk_nope_head_dim, 128);
  EXPECT_EQ(c->qk_rope_head_dim, 64);
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->n_routed_experts, 256);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->n_group, 8);
  EXPECT_EQ(c->topk_group, 4);
  EXPECT_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->scoring_func, "sigmoid");
  EXPECT_EQ(c->topk_method, "noaux_tc");
  EXPECT_EQ(c->first_k_dense_replace, 3);
  EXPECT_EQ(c->hidden_act, "silu");
  EXPECT_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_EQ(c->rope_theta, 10000.0);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_EQ(c->eos_token_id, 1);
  EXPECT_NEAR(c->softmax_scale(), 1.0 / std::sqrt(192.0), 1e-12);
}

TEST(ConfigTest, V3SoftmaxScaleMatchesSpec) {
  Json j = {{"model_type", "deepseek_v3"},
            {"rope_scaling",
             {{"type", "yarn"},
              {"factor", 40},
              {"original_max_position_embeddings", 4096},
              {"beta_fast", 32},
              {"beta_slow", 1},
              {"mscale", 1.0},
              {"mscale_all_dim", 1.0}}}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->softmax_scale(), 0.1352338, 1e-6);
}

TEST(ConfigTest, SoftmaxScaleIgnoresMscaleWhenAllDimIsZeroOrFactorOne) {
  Json j = TinyJson();
  j["rope_scaling"]["mscale_all_dim"] = 0;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->softmax_scale(), 1.0 / std::sqrt(48.0), 1e-12);
  j = TinyJson();
  j["rope_scaling"]["factor"] = 1;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NEAR(c->softmax_scale(), 1.0 / std::sqrt(48.0), 1e-12);
}

TEST(ConfigTest, NullQLoraRankSelectsQProjPath) {
  Json j = TinyJson();
  j["q_lora_rank"] = nullptr;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->q_lora_rank, 0);
  EXPECT_FALSE(c->has_q_lora());
  j["q_lora_rank"] = 0;  // the reference's spelling
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->has_q_lora());
}

TEST(ConfigTest, NullKeyValueHeadsMeansAttentionHeads) {
  Json j = TinyJson();
  j["num_key_value_heads"] = nullptr;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 4);
}

TEST(ConfigTest, RopeScalingVariants) {
  Json j = TinyJson();
  j["rope_scaling"].erase("type");
  j["rope_scaling"]["rope_type"] = "yarn";
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling->factor, 4.0);

  j["rope_scaling"]["factor"] = 4.5;  // doubles as well as ints
  j["rope_scaling"]["beta_fast"] = 32.0;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling->factor, 4.5);

  j["rope_scaling"] = nullptr;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->rope_scaling.has_value());

  j["rope_scaling"] = {{"type", "default"}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->rope_scaling.has_value());

  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2}};  // absent keys: defaults
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 1024);
  EXPECT_EQ(c->rope_scaling->beta_fast, 32.0);
  EXPECT_EQ(c->rope_scaling->beta_slow, 1.0);
}

TEST(ConfigTest, AcceptsTransformersV5RopeParameters) {
  Json j = TinyJson();
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "yarn"},
                          {"rope_theta", 50000.0},
                          {"factor", 8.0},
                          {"original_max_position_embeddings", 128},
                          {"mscale_all_dim", 1.0}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 50000.0);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->factor, 8.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 128);

  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 20000}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 20000.0);
  EXPECT_FALSE(c->rope_scaling.has_value());
}

TEST(ConfigTest, ParsesFp8QuantizationConfig) {
  Json j = TinyJson();
  j["quantization_config"] = {{"activation_scheme", "dynamic"},
                              {"fmt", "e4m3"},
                              {"quant_method", "fp8"},
                              {"weight_block_size", {128, 64}}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->quantization.has_value());
  EXPECT_EQ(c->quantization->quant_method, "fp8");
  EXPECT_EQ(c->quantization->block_out, 128);
  EXPECT_EQ(c->quantization->block_in, 64);
  EXPECT_FALSE(c->quantization->scale_ue8m0);
  j["quantization_config"]["scale_fmt"] = "ue8m0";
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->quantization->scale_ue8m0);
}

TEST(ConfigTest, AcceptsDeepseekV32) {
  Json j = TinyJson();
  j["model_type"] = "deepseek_v32";
  j.erase("max_position_embeddings");
  j["index_n_heads"] = 4;
  j["index_head_dim"] = 32;
  j["index_topk"] = 8;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model_type, "deepseek_v32");
  EXPECT_EQ(c->max_position_embeddings, 163840);
}

TEST(ConfigTest, IntegralFloatsAndEosListAccepted) {
  Json j = TinyJson();
  j["hidden_size"] = 256.0;
  j["eos_token_id"] = {1, 2};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 256);
  EXPECT_EQ(c->eos_token_id, 1);
}

TEST(ConfigTest, InvalidJsonReportsPosition) {
  auto c = ParseModelConfig("{\"model_type\": \"deepseek_v3\",\n \"vocab_size\": }", "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("config.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("invalid JSON at byte"));
  EXPECT_THAT(c.status().message(), HasSubstr("line 2"));
}

TEST(ConfigTest, NumberOutOfRangeIsAnError) {
  auto c =
      ParseModelConfig(R"({"model_type": "deepseek_v3", "rms_norm_eps": 1e706})", "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("config.json: invalid JSON"));
}

TEST(ConfigTest, NonObjectRejected) {
  auto c = ParseModelConfig("[1, 2]", "config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("expected a JSON object"));
}

// One bad field per case: the error names the file and the field.
struct BadField {
  const char* name;       // test name
  const char* field;      // expected in the message
  const char* json_path;  // JSON pointer of the value to set ("" = remove `remove`)
  Json value;
  const char* remove = nullptr;
};

class ConfigBadFieldTest : public ::testing::TestWithParam<BadField> {};

TEST_P(ConfigBadFieldTest, ErrorNamesFileAndField) {
  const BadField& bad = GetParam();
  Json j = TinyJson();
  if (bad.remove != nullptr) j.erase(bad.remove);
  if (absl::StartsWith(bad.json_path, "/quantization_config/")) {
    j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {128, 128}}};
  }
  if (bad.json_path[0] != '\0') j[Json::json_pointer(bad.json_path)] = bad.value;
  auto c = Parse(j);
  ASSERT_FALSE(c.ok()) << bad.name;
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("config.json: field '"));
  EXPECT_THAT(c.status().message(), HasSubstr(absl::StrCat("'", bad.field, "'"))) << bad.name;
}

const BadField kBadFields[] = {
    {"MissingModelType", "model_type", "", nullptr, "model_type"},
    {"UnknownModelType", "model_type", "/model_type", "llama"},
    {"ModelTypeNotString", "model_type", "/model_type", 3},
    {"VocabString", "vocab_size", "/vocab_size", "1024"},
    {"VocabZero", "vocab_size", "/vocab_size", 0},
    {"HiddenNegative", "hidden_size", "/hidden_size", -256},
    {"HiddenFraction", "hidden_size", "/hidden_size", 256.5},
    {"HiddenHuge", "hidden_size", "/hidden_size", uint64_t{1} << 63},
    {"HiddenBool", "hidden_size", "/hidden_size", true},
    {"IntermediateZero", "intermediate_size", "/intermediate_size", 0},
    {"MoeIntermediateArray", "moe_intermediate_size", "/moe_intermediate_size", {64}},
    {"LayersZero", "num_hidden_layers", "/num_hidden_layers", 0},
    {"HeadsNegative", "num_attention_heads", "/num_attention_heads", -4},
    {"KvHeadsZero", "num_key_value_heads", "/num_key_value_heads", 0},
    {"QLoraNegative", "q_lora_rank", "/q_lora_rank", -1},
    {"QLoraString", "q_lora_rank", "/q_lora_rank", "64"},
    {"KvLoraZero", "kv_lora_rank", "/kv_lora_rank", 0},
    {"NopeZero", "qk_nope_head_dim", "/qk_nope_head_dim", 0},
    {"RopeOdd", "qk_rope_head_dim", "/qk_rope_head_dim", 15},
    {"RopeZero", "qk_rope_head_dim", "/qk_rope_head_dim", 0},
    {"VHeadZero", "v_head_dim", "/v_head_dim", 0},
    {"ExpertsZero", "n_routed_experts", "/n_routed_experts", 0},
    {"SharedNegative", "n_shared_experts", "/n_shared_experts", -1},
    {"ExpertsNotDivisible", "n_group", "/n_group", 3},
    {"GroupZero", "n_group", "/n_group", 0},
    {"TopkGroupTooLarge", "topk_group", "/topk_group", 3},
    {"TopkGroupZero", "topk_group", "/topk_group", 0},
    {"ExpertsPerTokTooMany", "num_experts_per_tok", "/num_experts_per_tok", 17},
    {"ExpertsPerTokOverKeptGroups", "num_experts_per_tok", "/num_experts_per_tok", 9},
    {"ExpertsPerTokZero", "num_experts_per_tok", "/num_experts_per_tok", 0},
    {"ScalingFactorString", "routed_scaling_factor", "/routed_scaling_factor", "2.5"},
    {"ScalingFactorNegative", "routed_scaling_factor", "/routed_scaling_factor", -1.0},
    {"NormTopkNotBool", "norm_topk_prob", "/norm_topk_prob", 1},
    {"ScoringFunc", "scoring_func", "/scoring_func", "relu"},
    {"TopkMethod", "topk_method", "/topk_method", "top_k"},
    {"FirstDenseTooLarge", "first_k_dense_replace", "/first_k_dense_replace", 5},
    {"FirstDenseNegative", "first_k_dense_replace", "/first_k_dense_replace", -1},
    {"MoeFreqZero", "moe_layer_freq", "/moe_layer_freq", 0},
    {"HiddenAct", "hidden_act", "/hidden_act", "gelu"},
    {"EpsZero", "rms_norm_eps", "/rms_norm_eps", 0.0},
    {"EpsString", "rms_norm_eps", "/rms_norm_eps", "1e-6"},
    {"MaxPosZero", "max_position_embeddings", "/max_position_embeddings", 0},
    {"RopeThetaZero", "rope_theta", "/rope_theta", 0},
    {"RopeScalingNotObject", "rope_scaling", "/rope_scaling", "yarn"},
    {"RopeScalingUnknownType", "rope_scaling.type", "/rope_scaling/type", "linear"},
    {"RopeScalingTypeNotString", "rope_scaling.type", "/rope_scaling/type", 1},
    {"RopeScalingFactorBelowOne", "rope_scaling.factor", "/rope_scaling/factor", 0.5},
    {"RopeScalingFactorString", "rope_scaling.factor", "/rope_scaling/factor", "4"},
    {"RopeScalingFactorNull", "rope_scaling.factor", "/rope_scaling/factor", nullptr},
    {"RopeScalingOrigZero", "rope_scaling.original_max_position_embeddings",
     "/rope_scaling/original_max_position_embeddings", 0},
    {"RopeScalingBetaFast", "rope_scaling.beta_fast", "/rope_scaling/beta_fast", -32},
    {"RopeScalingBetaSlow", "rope_scaling.beta_slow", "/rope_scaling/beta_slow", "1"},
    {"RopeScalingMscale", "rope_scaling.mscale", "/rope_scaling/mscale", "1"},
    {"RopeScalingMscaleAllDim", "rope_scaling.mscale_all_dim", "/rope_scaling/mscale_all_dim",
     true},
    {"RopeParametersUnknownType", "rope_parameters.rope_type", "/rope_parameters/rope_type",
     "dynamic", "rope_scaling"},
    {"RopeInterleaveNotBool", "rope_interleave", "/rope_interleave", "yes"},
    {"AttentionBias", "attention_bias", "/attention_bias", true},
    {"TieNotBool", "tie_word_embeddings", "/tie_word_embeddings", "false"},
    {"BosNegative", "bos_token_id", "/bos_token_id", -1},
    {"EosOutOfVocab", "eos_token_id", "/eos_token_id", 5000},
    {"EosEmptyList", "eos_token_id", "/eos_token_id", Json::array()},
    {"MtpNegative", "num_nextn_predict_layers", "/num_nextn_predict_layers", -1},
    {"QuantNotObject", "quantization_config", "/quantization_config", "fp8"},
    {"QuantMethod", "quantization_config.quant_method", "/quantization_config/quant_method", "awq"},
    {"QuantFmt", "quantization_config.fmt", "/quantization_config/fmt", "e5m2"},
    {"QuantScaleFmt", "quantization_config.scale_fmt", "/quantization_config/scale_fmt", "e8m0x"},
    {"QuantActivation", "quantization_config.activation_scheme",
     "/quantization_config/activation_scheme", "static"},
    {"QuantBlockShape",
     "quantization_config.weight_block_size",
     "/quantization_config/weight_block_size",
     {128}},
    {"QuantBlockZero",
     "quantization_config.weight_block_size[0]",
     "/quantization_config/weight_block_size",
     {0, 128}},
    {"IndexTopkString", "index_topk", "/index_topk", "2048"},
};

std::string BadFieldName(const ::testing::TestParamInfo<BadField>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(AllFields, ConfigBadFieldTest, ::testing::ValuesIn(kBadFields),
                         BadFieldName);

TEST(ConfigTest, QuantizationMissingMethod) {
  Json j = TinyJson();
  j["quantization_config"] = {{"fmt", "e4m3"}};
  auto c = Parse(j);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("field 'quantization_config.quant_method'"));
}

TEST(ConfigTest, LoadModelConfigNamesThePath) {
  auto c = LoadModelConfig("/nonexistent-r2-dir");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("/nonexistent-r2-dir/config.json"));
}

}  // namespace
}  // namespace r2::model

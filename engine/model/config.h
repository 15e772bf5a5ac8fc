#pragma once
// config.json of a DeepSeek-V3/R1 checkpoint (model_type "deepseek_v3"): every field the forward
// pass needs, with Hugging Face's defaults for absent fields (spec section 1). Parsing rejects
// anything missing, mistyped or inconsistent with an error naming the file and the field.
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/quantization_config.h"

namespace r2::model {

struct RopeScaling {
  std::string type;  // only "yarn" is supported
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

// The checkpoint's quantization_config, when present.
struct QuantizationConfig {
  std::string quant_method;  // "fp8" or "compressed-tensors" (then `compressed` holds the scheme)
  std::string fmt;           // "e4m3"
  int64_t block_out = 128;   // weight_block_size[0]
  int64_t block_in = 128;    // weight_block_size[1]
  bool scale_ue8m0 = false;  // scale_fmt "ue8m0": scales are powers of two
  CompressedTensorsScheme compressed;  // integer weights (engine/model/quantization_config.h)
};

struct ModelConfig {
  std::string model_type = "deepseek_v3";
  int64_t vocab_size = 129280;
  int64_t hidden_size = 7168;
  int64_t intermediate_size = 18432;
  int64_t moe_intermediate_size = 2048;
  int64_t num_hidden_layers = 61;
  int64_t num_nextn_predict_layers = 0;  // MTP modules (absent = 0)
  int64_t num_attention_heads = 128;
  int64_t num_key_value_heads = 128;
  int64_t q_lora_rank = 1536;  // 0 when config.json has null: the q_proj path
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  int64_t n_routed_experts = 256;
  int64_t n_shared_experts = 1;
  int64_t num_experts_per_tok = 8;
  int64_t n_group = 8;
  int64_t topk_group = 4;
  double routed_scaling_factor = 2.5;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";  // or "softmax"
  std::string topk_method = "noaux_tc";  // or "greedy", "group_limited_greedy"
  int64_t first_k_dense_replace = 3;
  int64_t moe_layer_freq = 1;
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 4096;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool rope_interleave = true;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  std::optional<QuantizationConfig> quantization;

  // Derived quantities.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool has_q_lora() const { return q_lora_rank > 0; }
  // Layer l uses a MoE MLP (else the dense SwiGLU MLP). MTP layers (l >= num_hidden_layers) are
  // MoE.
  bool is_moe_layer(int64_t l) const {
    return l >= first_k_dense_replace && (l % moe_layer_freq == 0 || l >= num_hidden_layers);
  }
  // Values cached per token per layer: the normalized latent then the rope key (576 for V3).
  int64_t kv_cache_width() const { return kv_lora_rank + qk_rope_head_dim; }
  // Attention softmax scale: qk_head_dim^-1/2 times the YaRN mscale squared (spec 2.3).
  double softmax_scale() const;
};

// Parses config.json text. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& source);
// Reads and parses DIR/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace r2::model

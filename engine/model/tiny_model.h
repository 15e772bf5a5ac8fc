#pragma once
// Random-weight DeepSeek-V3 checkpoints in the exact Hugging Face layout, for tests and benchmarks
// (`r2serve make-tiny-model`): config.json, model.safetensors (or shards plus
// model.safetensors.index.json) and generation_config.json. The tensor list is ExpectedTensors() of
// the written config, so whatever this writes, Checkpoint::Open accepts.
//
// Deterministic: the same options give the same bytes on every machine. Each tensor draws from its
// own splitmix64 stream (seeded from the seed and the tensor's name, so sharding does not change
// values) and samples are Irwin-Hall sums of uniform integers, scaled once, never through libm.
//
// Weight scales keep activations O(1) and the logits far from flat: embeddings std 1, linear
// weights std 1/sqrt(in_features), lm_head std 3/sqrt(hidden_size), norm weights 1 + N(0, 0.05^2),
// e_score_correction_bias N(0, 0.05^2).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace r2::model {

enum class TinyWeightFormat {
  kBF16,     // every tensor BF16 (e_score_correction_bias F32)
  kFp8Block  // linear weights F8_E4M3 with F32 weight_scale_inv per block; the rest as kBF16
};

struct TinyModelOptions {
  int64_t vocab_size = 1024;
  int64_t hidden_size = 256;
  int64_t intermediate_size = 512;
  int64_t moe_intermediate_size = 64;
  int64_t num_hidden_layers = 4;
  int64_t num_nextn_predict_layers = 1;  // MTP layers
  int64_t first_k_dense_replace = 1;
  int64_t num_attention_heads = 4;
  int64_t q_lora_rank = 64;  // 0: no q-LoRA (config.json null, q_proj)
  int64_t kv_lora_rank = 64;
  int64_t qk_nope_head_dim = 32;
  int64_t qk_rope_head_dim = 16;
  int64_t v_head_dim = 24;
  int64_t n_routed_experts = 16;
  int64_t n_group = 2;
  int64_t topk_group = 1;
  int64_t num_experts_per_tok = 4;
  int64_t n_shared_experts = 1;
  double routed_scaling_factor = 2.5;
  int64_t max_position_embeddings = 1024;
  bool yarn = true;  // rope_scaling YaRN, else null
  double yarn_factor = 4.0;
  int64_t yarn_original_max_position_embeddings = 256;

  TinyWeightFormat format = TinyWeightFormat::kBF16;
  int64_t fp8_block = 128;  // weight_block_size (square)
  int shards = 1;           // 1: model.safetensors; N: model-0000k-of-0000N + index
  uint64_t seed = 0;

  // Hook for the tokenizer writer (tokenizer.json, tokenizer_config.json): called last, with the
  // output directory, when set. make-tiny-model plugs in the tiny tokenizer writer
  // (engine/tokenizer/tiny_tokenizer.h) unless --no-tokenizer is given.
  std::function<absl::Status(const std::string& dir, const TinyModelOptions& options)>
      write_tokenizer;
};

// Named presets; the names are a contract other code and scripts use:
//   "tiny"          spec 8.1 exactly: BF16, q_lora 64, YaRN factor 4, 1 MTP layer, one file
//   "tiny-noqlora"  the same dims, q_lora_rank null, no rope_scaling, 1 MTP layer, 2 shards + index
//   "tiny-fp8"      FP8 128x128 blocks with partial edge blocks in both dimensions (hidden 192,
//                   intermediate 320, moe_intermediate 96, kv_lora 64, q_lora 96), 16 experts in
//                   4 groups, topk_group 2, 4 per token, YaRN, 1 MTP layer
//   "small"         DeepSeek-shaped, about 0.4 B parameters (vocab 32768, hidden 1024, 12 layers,
//                   64 experts in 8 groups, 6 per token), 4 shards: for benchmarks
//   "bench-2b"      DeepSeek-shaped, about 2.5 B parameters in BF16 for GPU decode benchmarks:
//                   vocab 129280, hidden 2048, 16 heads (q_lora 768, kv_lora 512, nope 128,
//                   rope 64, v 128), 10 layers (first dense, width 5632), 64 experts of width
//                   512 in 8 groups (topk_group 4, 6 per token), 2 shared, no MTP, 8 shards
absl::StatusOr<TinyModelOptions> TinyModelPreset(absl::string_view name);
std::vector<std::string> TinyModelPresetNames();

// The config.json the options describe (HF-loadable deepseek_v3).
std::string TinyModelConfigJson(const TinyModelOptions& options);
// Number of parameters (elements of every tensor written, block scales excluded).
absl::StatusOr<int64_t> TinyModelParameterCount(const TinyModelOptions& options);

// Writes the checkpoint into `dir` (created if needed; existing files of the same names are
// replaced). Invalid options fail with the config.json field they break.
absl::Status WriteTinyModel(const TinyModelOptions& options, const std::string& dir);

}  // namespace r2::model

#pragma once
// The DeepSeek weights bound by name from a Checkpoint: views into the mapped files (no copies;
// UploadModelWeights moves them to a device backend's memory), plus what is precomputed at load:
// the absorbed-attention matrices W_UK^T / W_UV per head from kv_b_proj (dequantized to float32)
// and e_score_correction_bias as float32.
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/backend_buffer.h"
#include "engine/model/checkpoint.h"
#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace r2::model {

struct MlpWeights {  // SwiGLU: down(silu(gate x) * up x)
  WeightView gate, up, down;
  int64_t width() const { return gate.out_features(); }
};

struct MlaWeights {
  WeightView q_a, q_b;  // q-LoRA path (q_lora_rank > 0)
  TensorView q_a_norm;
  WeightView q;     // no-q-LoRA path
  WeightView kv_a;  // [kv_lora_rank + rope_dim, hidden]
  TensorView kv_a_norm;
  WeightView kv_b;  // [heads * (nope + v), kv_lora_rank]
  WeightView o;     // [hidden, heads * v]
  // Absorption, float32, owned: per head h, W_UK[h]^T [kv_lora_rank, nope] and W_UV[h]
  // [v, kv_lora_rank], heads back to back in the vectors below. w_uk_t / w_uv are F32 views of
  // head 0's matrix (shape of one head); head h starts h * numel() elements later, the layout
  // LinearParams' strided batch takes (one op for every head). After StoreExactAbsorbedAsBf16
  // the views may be BF16 over the *_bf16 vectors instead (the float32 ones then empty).
  // After TransposeAbsorbed (for backends whose Linear takes weight_transposed), each head's
  // matrices are stored transposed instead: W_UK [nope, kv_lora_rank] and W_UV^T [kv_lora_rank,
  // v]; the views' shapes are unchanged.
  std::vector<float> w_uk_t_data, w_uv_data;
  std::vector<uint16_t> w_uk_t_bf16, w_uv_bf16;
  WeightView w_uk_t, w_uv;
  bool absorbed_transposed = false;  // the Linear calls pass it as weight_transposed
};

struct MoeWeights {
  WeightView router;                   // [n_routed_experts, hidden]
  std::vector<float> score_bias_data;  // e_score_correction_bias as float32 (empty: none)
  TensorView score_bias;               // F32 [n_routed_experts] view of it (empty: none)
  std::vector<MlpWeights> experts;
  bool has_shared = false;
  MlpWeights shared;
};

struct LayerWeights {
  TensorView input_norm, post_attention_norm;
  MlaWeights attn;
  bool moe = false;
  MlpWeights dense;    // when !moe
  MoeWeights experts;  // when moe
};

struct MtpWeights {
  TensorView enorm, hnorm, head_norm;
  WeightView eh_proj;  // [hidden, 2 * hidden], input [embedding; hidden]
  TensorView embed;    // the layer's own copy, else the main embedding
  WeightView head;     // the layer's own copy, else the main lm_head
  LayerWeights block;
};

struct ModelWeights {
  TensorView embed;  // [vocab, hidden]
  TensorView final_norm;
  WeightView lm_head;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<MtpWeights> mtp;
};

// Binds every tensor the config implies; errors name the missing or malformed tensor. The views
// point into `checkpoint`, which must outlive the result.
absl::StatusOr<std::unique_ptr<ModelWeights>> BindModelWeights(const Checkpoint& checkpoint);

// For a backend whose memory is not host memory: copies every tensor the model hands to ops
// (weights and their scales, norms, the absorbed matrices, the score bias, plus `extra` tensors
// such as the RoPE tables) into one allocation in `arena`, in their stored dtypes, and points the
// views at the copies. Tensors shared by several views (tied embeddings, MTP's shared head) are
// copied once. The host sources (the mapped checkpoint) stay valid and unused afterwards.
absl::Status UploadModelWeights(ModelWeights& weights, absl::Span<TensorView* const> extra,
                                Backend& backend, BackendBuffer& arena);

// For a host backend: where a layer's absorbed matrices are all exactly bf16 values (a bf16
// checkpoint's kv_b_proj), points w_uk_t / w_uv at bf16 copies and frees the float32 ones. The
// values are unchanged; the per-head products read half the bytes.
void StoreExactAbsorbedAsBf16(ModelWeights& weights);
// Stores every layer's absorbed per-head matrices transposed (MlaWeights::absorbed_transposed).
// Before StoreExactAbsorbedAsBf16 (on the float32 copies).
void TransposeAbsorbed(const ModelConfig& config, ModelWeights& weights);

// Bytes a tensor's data spans (packed U4 rows start on 32-bit words).
int64_t TensorBytes(const TensorView& t);

// A linear weight as float32 [out, in] (FP8 dequantized with its block scales).
absl::StatusOr<std::vector<float>> DequantizeToFloat(const WeightView& w);

}  // namespace r2::model

#include "engine/model/model_weights.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/quantization.h"
#include "kernels/numeric.h"

namespace r2::model {
namespace {

float LoadElement(const TensorView& t, int64_t i) {
  const auto* bytes = static_cast<const uint8_t*>(t.data);
  switch (t.dtype) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, bytes + 4 * i, 4);
      return v;
    }
    case DType::kBF16:
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, bytes + 2 * i, 2);
      return t.dtype == DType::kBF16 ? BF16ToFloat(v) : HalfToFloat(v);
    }
    case DType::kF8E4M3:
      return Fp8E4M3ToFloat(bytes[i]);
    default:
      return 0.0f;
  }
}

// A weight without block scales (the absorbed matrices, a tied lm_head).
WeightView FloatWeight(const TensorView& t) {
  WeightView w;
  w.weight = t;
  return w;
}

// Binds names under one prefix, remembering the first error.
class Binder {
 public:
  Binder(const Checkpoint& checkpoint, std::string prefix)
      : checkpoint_(checkpoint), prefix_(std::move(prefix)) {}
  WeightView Linear(const std::string& name) {
    auto view = checkpoint_.Linear(prefix_ + name + ".weight");
    if (!view.ok()) return Fail<WeightView>(view.status());
    return *view;
  }
  TensorView Tensor(const std::string& name) {
    auto view = checkpoint_.Tensor(prefix_ + name);
    if (!view.ok()) return Fail<TensorView>(view.status());
    return *view;
  }
  bool Has(const std::string& name) const { return checkpoint_.Has(prefix_ + name); }
  MlpWeights Mlp(const std::string& prefix) {
    return MlpWeights{Linear(prefix + "gate_proj"), Linear(prefix + "up_proj"),
                      Linear(prefix + "down_proj")};
  }
  const absl::Status& status() const { return status_; }

 private:
  template <typename T>
  T Fail(const absl::Status& s) {
    if (status_.ok()) status_ = s;
    return T{};
  }
  const Checkpoint& checkpoint_;
  std::string prefix_;
  absl::Status status_;
};

// Splits kv_b_proj [H * (nope + v), lora] into per-head W_UK^T [lora, nope] and W_UV [v, lora].
absl::Status PrecomputeAbsorption(const ModelConfig& c, MlaWeights& w) {
  auto kv_b = DequantizeToFloat(w.kv_b);
  if (!kv_b.ok()) return kv_b.status();
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim;
  const int64_t lora = c.kv_lora_rank, per_head = nope + v;
  w.w_uk_t_data.resize(heads * lora * nope);
  w.w_uv_data.resize(heads * v * lora);
  for (int64_t h = 0; h < heads; ++h) {
    const float* rows = kv_b->data() + h * per_head * lora;
    for (int64_t d = 0; d < nope; ++d) {
      for (int64_t l = 0; l < lora; ++l) {
        w.w_uk_t_data[(h * lora + l) * nope + d] = rows[d * lora + l];
      }
    }
    std::memcpy(w.w_uv_data.data() + h * v * lora, rows + nope * lora, v * lora * sizeof(float));
  }
  for (int64_t h = 0; h < heads; ++h) {
    w.w_uk_t.push_back(
        FloatWeight(TensorView{DType::kF32, {lora, nope}, w.w_uk_t_data.data() + h * lora * nope}));
    w.w_uv.push_back(
        FloatWeight(TensorView{DType::kF32, {v, lora}, w.w_uv_data.data() + h * v * lora}));
  }
  return absl::OkStatus();
}

absl::Status BindLayer(const Checkpoint& checkpoint, int64_t l, LayerWeights& w) {
  const ModelConfig& c = checkpoint.config();
  Binder b(checkpoint, absl::StrCat("model.layers.", l, "."));
  w.input_norm = b.Tensor("input_layernorm.weight");
  w.post_attention_norm = b.Tensor("post_attention_layernorm.weight");
  MlaWeights& a = w.attn;
  if (c.has_q_lora()) {
    a.q_a = b.Linear("self_attn.q_a_proj");
    a.q_a_norm = b.Tensor("self_attn.q_a_layernorm.weight");
    a.q_b = b.Linear("self_attn.q_b_proj");
  } else {
    a.q = b.Linear("self_attn.q_proj");
  }
  a.kv_a = b.Linear("self_attn.kv_a_proj_with_mqa");
  a.kv_a_norm = b.Tensor("self_attn.kv_a_layernorm.weight");
  a.kv_b = b.Linear("self_attn.kv_b_proj");
  a.o = b.Linear("self_attn.o_proj");
  w.moe = c.is_moe_layer(l);
  if (!w.moe) {
    w.dense = b.Mlp("mlp.");
  } else {
    MoeWeights& m = w.experts;
    m.router = b.Linear("mlp.gate");
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      m.experts.push_back(b.Mlp(absl::StrCat("mlp.experts.", e, ".")));
    }
    m.has_shared = c.n_shared_experts > 0;
    if (m.has_shared) m.shared = b.Mlp("mlp.shared_experts.");
    if (b.Has("mlp.gate.e_score_correction_bias")) {
      TensorView bias = b.Tensor("mlp.gate.e_score_correction_bias");
      if (b.status().ok()) {
        for (int64_t e = 0; e < bias.numel(); ++e) m.score_bias.push_back(LoadElement(bias, e));
      }
    }
  }
  if (!b.status().ok()) return b.status();
  return PrecomputeAbsorption(c, a);
}

absl::Status BindMtp(const Checkpoint& checkpoint, const ModelWeights& main, int64_t l,
                     MtpWeights& w) {
  Binder b(checkpoint, absl::StrCat("model.layers.", l, "."));
  w.enorm = b.Tensor("enorm.weight");
  w.hnorm = b.Tensor("hnorm.weight");
  w.head_norm = b.Tensor("shared_head.norm.weight");
  w.eh_proj = b.Linear("eh_proj");
  w.embed = b.Has("embed_tokens.weight") ? b.Tensor("embed_tokens.weight") : main.embed;
  w.head = b.Has("shared_head.head.weight") ? b.Linear("shared_head.head") : main.lm_head;
  if (!b.status().ok()) return b.status();
  return BindLayer(checkpoint, l, w.block);
}

}  // namespace

absl::StatusOr<std::vector<float>> DequantizeToFloat(const WeightView& w) {
  if (w.integer_quantized()) return DequantizeIntegerToFloat(w);  // quantization.cc
  if (w.weight.shape.size() != 2) return absl::InvalidArgumentError("weight is not a matrix");
  const int64_t out = w.out_features(), in = w.in_features();
  const bool fp8 = w.weight.dtype == DType::kF8E4M3;
  if (fp8 && (w.scale_inv.empty() || w.scale_inv.dtype != DType::kF32 ||
              w.scale_inv.shape.size() != 2 || w.block_out <= 0 || w.block_in <= 0)) {
    return absl::InvalidArgumentError("f8_e4m3 weight without a valid f32 scale_inv");
  }
  std::vector<float> result(out * in);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t j = 0; j < in; ++j) {
      float v = LoadElement(w.weight, o * in + j);
      if (fp8)
        v *= LoadElement(w.scale_inv, (o / w.block_out) * w.scale_inv.shape[1] + j / w.block_in);
      result[o * in + j] = v;
    }
  }
  return result;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> BindModelWeights(const Checkpoint& checkpoint) {
  const ModelConfig& c = checkpoint.config();
  auto w = std::make_unique<ModelWeights>();
  Binder b(checkpoint, "");
  w->embed = b.Tensor("model.embed_tokens.weight");
  w->final_norm = b.Tensor("model.norm.weight");
  w->lm_head = c.tie_word_embeddings ? FloatWeight(w->embed) : b.Linear("lm_head");
  if (!b.status().ok()) return b.status();
  w->layers.resize(c.num_hidden_layers);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    if (absl::Status s = BindLayer(checkpoint, l, w->layers[l]); !s.ok()) return s;
  }
  w->mtp.resize(c.num_nextn_predict_layers);
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    absl::Status s = BindMtp(checkpoint, *w, c.num_hidden_layers + k, w->mtp[k]);
    if (!s.ok()) return s;
  }
  return w;
}

}  // namespace r2::model

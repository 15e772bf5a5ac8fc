#include "engine/model/model_weights.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/model/quantization.h"
#include "kernels/numeric.h"

namespace r2::model {
namespace {

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
  w.w_uk_t = FloatWeight(TensorView{DType::kF32, {lora, nope}, w.w_uk_t_data.data()});
  w.w_uv = FloatWeight(TensorView{DType::kF32, {v, lora}, w.w_uv_data.data()});
  return absl::OkStatus();
}

// Whether every value is exactly a bf16 (its float32 bits' low half zero).
bool Bf16Exact(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return (bits & 0xffffu) == 0;
  });
}

// The float32 vector's values (each exactly a bf16) as bf16; the float32 vector is freed.
void MoveToBf16(std::vector<float>& src, std::vector<uint16_t>& dst) {
  dst.resize(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &src[i], 4);
    dst[i] = static_cast<uint16_t>(bits >> 16);
  }
  std::vector<float>().swap(src);
}

void AbsorbedToBf16(MlaWeights& w) {
  if (w.w_uk_t_data.empty() || !Bf16Exact(w.w_uk_t_data) || !Bf16Exact(w.w_uv_data)) return;
  MoveToBf16(w.w_uk_t_data, w.w_uk_t_bf16);
  MoveToBf16(w.w_uv_data, w.w_uv_bf16);
  w.w_uk_t.weight = TensorView{DType::kBF16, w.w_uk_t.weight.shape, w.w_uk_t_bf16.data()};
  w.w_uv.weight = TensorView{DType::kBF16, w.w_uv.weight.shape, w.w_uv_bf16.data()};
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
        for (int64_t e = 0; e < bias.numel(); ++e) {
          m.score_bias_data.push_back(ElementAsFloat(bias, e));
        }
        m.score_bias = TensorView{DType::kF32, {bias.numel()}, m.score_bias_data.data()};
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

// Every view of `w` the ops read.
template <typename Fn>
void ForEachTensor(WeightView& w, Fn&& fn) {
  for (TensorView* t : {&w.weight, &w.scale_inv, &w.scale, &w.zero_point}) fn(*t);
}
template <typename Fn>
void ForEachTensor(MlpWeights& m, Fn&& fn) {
  for (WeightView* w : {&m.gate, &m.up, &m.down}) ForEachTensor(*w, fn);
}
template <typename Fn>
void ForEachTensor(LayerWeights& l, Fn&& fn) {
  fn(l.input_norm);
  fn(l.post_attention_norm);
  MlaWeights& a = l.attn;
  for (WeightView* w : {&a.q_a, &a.q_b, &a.q, &a.kv_a, &a.kv_b, &a.o, &a.w_uk_t, &a.w_uv}) {
    ForEachTensor(*w, fn);
  }
  fn(a.q_a_norm);
  fn(a.kv_a_norm);
  if (!l.moe) return ForEachTensor(l.dense, fn);
  MoeWeights& m = l.experts;
  ForEachTensor(m.router, fn);
  fn(m.score_bias);
  for (MlpWeights& e : m.experts) ForEachTensor(e, fn);
  if (m.has_shared) ForEachTensor(m.shared, fn);
}

}  // namespace

void TransposeAbsorbed(const ModelConfig& c, ModelWeights& weights) {
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim;
  const int64_t lora = c.kv_lora_rank;
  // Per head, the [rows, cols] matrix at h * rows * cols becomes its [cols, rows] transpose, in
  // the same buffer (the views point into it).
  auto transpose = [heads](std::vector<float>& m, int64_t rows, int64_t cols) {
    std::vector<float> t(m.size());
    for (int64_t h = 0; h < heads; ++h) {
      const float* src = m.data() + h * rows * cols;
      float* dst = t.data() + h * rows * cols;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t k = 0; k < cols; ++k) dst[k * rows + r] = src[r * cols + k];
      }
    }
    std::copy(t.begin(), t.end(), m.begin());
  };
  auto one = [&](MlaWeights& a) {
    if (a.absorbed_transposed || a.w_uk_t_data.empty()) return;
    transpose(a.w_uk_t_data, lora, nope);  // W_UK^T [lora, nope] -> W_UK [nope, lora]
    transpose(a.w_uv_data, v, lora);       // W_UV [v, lora] -> W_UV^T [lora, v]
    a.absorbed_transposed = true;
  };
  for (LayerWeights& l : weights.layers) one(l.attn);
  for (MtpWeights& m : weights.mtp) one(m.block.attn);
}

void StoreExactAbsorbedAsBf16(ModelWeights& weights) {
  for (LayerWeights& l : weights.layers) AbsorbedToBf16(l.attn);
  for (MtpWeights& m : weights.mtp) AbsorbedToBf16(m.block.attn);
}

int64_t TensorBytes(const TensorView& t) {
  if (t.dtype == DType::kU4) {
    if (t.shape.empty()) return 0;
    return t.numel() / t.shape.back() * PackedU4RowBytes(t.shape.back());
  }
  return t.numel() * static_cast<int64_t>(DTypeSize(t.dtype));
}

absl::Status UploadModelWeights(ModelWeights& weights, absl::Span<TensorView* const> extra,
                                Backend& backend, BackendBuffer& arena) {
  // Each distinct host range once (the absorbed per-head batch is one tensor: head 0's view
  // covers `heads` matrices, so its size is taken from the owning vector below).
  std::vector<TensorView*> views;
  auto collect = [&](TensorView& t) {
    if (!t.empty()) views.push_back(&t);
  };
  collect(weights.embed);
  collect(weights.final_norm);
  ForEachTensor(weights.lm_head, collect);
  for (LayerWeights& l : weights.layers) ForEachTensor(l, collect);
  for (MtpWeights& m : weights.mtp) {
    for (TensorView* t : {&m.enorm, &m.hnorm, &m.head_norm, &m.embed}) collect(*t);
    ForEachTensor(m.eh_proj, collect);
    ForEachTensor(m.head, collect);
    ForEachTensor(m.block, collect);
  }
  for (TensorView* t : extra) collect(*t);
  std::map<const void*, int64_t> bytes_of;  // host start -> bytes (largest view wins)
  auto note = [&](const void* data, int64_t bytes) {
    int64_t& b = bytes_of[data];
    b = std::max(b, bytes);
  };
  for (TensorView* t : views) note(t->data, TensorBytes(*t));
  auto note_absorbed = [&](const MlaWeights& a) {
    if (!a.w_uk_t_bf16.empty()) {
      note(a.w_uk_t_bf16.data(), static_cast<int64_t>(a.w_uk_t_bf16.size() * sizeof(uint16_t)));
      note(a.w_uv_bf16.data(), static_cast<int64_t>(a.w_uv_bf16.size() * sizeof(uint16_t)));
      return;
    }
    note(a.w_uk_t_data.data(), static_cast<int64_t>(a.w_uk_t_data.size() * sizeof(float)));
    note(a.w_uv_data.data(), static_cast<int64_t>(a.w_uv_data.size() * sizeof(float)));
  };
  for (const LayerWeights& l : weights.layers) note_absorbed(l.attn);
  for (const MtpWeights& m : weights.mtp) note_absorbed(m.block.attn);
  std::map<const void*, int64_t> offset_of;
  int64_t total = 0;
  for (const auto& [data, bytes] : bytes_of) {
    offset_of[data] = total;
    total += (bytes + 255) / 256 * 256;
  }
  if (absl::Status s = arena.Reserve(&backend, static_cast<size_t>(std::max<int64_t>(total, 1)));
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("uploading ", total, " bytes of weights to ",
                                               std::string(backend.name()), ": ", s.message()));
  }
  auto* base = arena.as<uint8_t>();
  for (const auto& [data, bytes] : bytes_of) {
    absl::Status s = backend.CopyToBackend(base + offset_of[data], data, bytes);
    if (!s.ok()) return s;
  }
  for (TensorView* t : views) t->data = base + offset_of.find(t->data)->second;
  return backend.Synchronize();
}

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
      float v = ElementAsFloat(w.weight, o * in + j);
      if (fp8)
        v *= ElementAsFloat(w.scale_inv, (o / w.block_out) * w.scale_inv.shape[1] + j / w.block_in);
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

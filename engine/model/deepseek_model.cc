// DeepseekModel: construction, the main forward pass, one decoder block and the output head.
// Attention lives in mla.cc, the MLPs in moe.cc, the MTP module in mtp.cc.
#include "engine/model/deepseek_model.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/model/forward_scratch.h"
#include "engine/model/rope_frequencies.h"

namespace r2::model {

DeepseekModel::DeepseekModel(std::unique_ptr<Checkpoint> checkpoint, Backend* backend)
    : checkpoint_(std::move(checkpoint)), backend_(backend), scratch_(new Scratch) {}

DeepseekModel::~DeepseekModel() = default;

absl::StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Create(
    std::unique_ptr<Checkpoint> checkpoint, Backend* backend) {
  if (checkpoint == nullptr || backend == nullptr) {
    return absl::InvalidArgumentError("DeepseekModel needs a checkpoint and a backend");
  }
  const ModelConfig& c = checkpoint->config();
  if (c.qk_rope_head_dim % 2 != 0) {
    return absl::InvalidArgumentError("qk_rope_head_dim must be even");
  }
  std::unique_ptr<DeepseekModel> model(new DeepseekModel(std::move(checkpoint), backend));
  auto weights = BindModelWeights(*model->checkpoint_);
  if (!weights.ok()) return weights.status();
  model->weights_ = *std::move(weights);
  model->rope_ =
      BuildRopeTable(RopeInverseFrequencies(c), c.max_position_embeddings, RopeAttentionFactor(c));
  model->softmax_scale_ = static_cast<float>(c.softmax_scale());
  return model;
}

absl::StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Load(const std::string& dir,
                                                                   Backend* backend) {
  auto checkpoint = Checkpoint::Open(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  return Create(*std::move(checkpoint), backend);
}

int64_t DeepseekModel::num_cache_layers() const {
  return config().num_hidden_layers + config().num_nextn_predict_layers;
}

KvCacheShape DeepseekModel::CacheShape(int64_t num_blocks, int64_t block_size) const {
  return PagedKvCache::ShapeFor(config(), num_blocks, block_size);
}

absl::StatusOr<StepPlan> DeepseekModel::Plan(absl::Span<const SequenceInput> batch,
                                             LogitsMode logits, const PagedKvCache& cache) const {
  const KvCacheShape& shape = cache.shape();
  if (shape.num_layers != num_cache_layers() || shape.kv_lora_rank != config().kv_lora_rank ||
      shape.rope_dim != config().qk_rope_head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache shape (", shape.num_layers, " layers, rows ", shape.kv_lora_rank,
                     "+", shape.rope_dim, ") does not fit the model (", num_cache_layers(),
                     " layers, rows ", config().kv_lora_rank, "+", config().qk_rope_head_dim, ")"));
  }
  return BuildStepPlan(batch, logits,
                       StepPlanLimits{.vocab_size = config().vocab_size,
                                      .max_positions = rope_.max_positions,
                                      .num_blocks = shape.num_blocks,
                                      .block_size = shape.block_size});
}

absl::StatusOr<ForwardOutput> DeepseekModel::Forward(absl::Span<const SequenceInput> batch,
                                                     LogitsMode logits, PagedKvCache& cache) {
  auto plan = Plan(batch, logits, cache);
  if (!plan.ok()) return plan.status();
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  s.Resize(c, plan->rows);
  R2_RETURN_IF_ERROR(backend_->Embedding({.table = weights_->embed,
                                          .ids = plan->token_ids.data(),
                                          .rows = plan->rows,
                                          .out = s.h.data()}));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    R2_RETURN_IF_ERROR(DecoderLayer(l, weights_->layers[l], *plan, cache));
  }
  ForwardOutput out;
  R2_RETURN_IF_ERROR(Finish(weights_->final_norm, weights_->lm_head, *plan, out));
  return out;
}

absl::Status DeepseekModel::DecoderLayer(int64_t layer, const LayerWeights& w, const StepPlan& plan,
                                         PagedKvCache& cache) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const float eps = static_cast<float>(c.rms_norm_eps);
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.h.data(),
                                        .y = s.x.data(),
                                        .rows = plan.rows,
                                        .dim = c.hidden_size,
                                        .weight = w.input_norm,
                                        .eps = eps}));
  R2_RETURN_IF_ERROR(Attention(layer, w.attn, plan, cache));
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.h.data(),
                                        .y = s.x.data(),
                                        .rows = plan.rows,
                                        .dim = c.hidden_size,
                                        .weight = w.post_attention_norm,
                                        .eps = eps}));
  if (w.moe) return Moe(w.experts, plan);
  return Mlp(w.dense, s.x.data(), plan.rows, s.h.data(), nullptr, nullptr);
}

absl::Status DeepseekModel::Finish(const TensorView& norm, const WeightView& head,
                                   const StepPlan& plan, ForwardOutput& out) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t d = c.hidden_size;
  out.vocab_size = c.vocab_size;
  out.hidden_size = d;
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.h.data(),
                                        .y = s.x.data(),
                                        .rows = plan.rows,
                                        .dim = d,
                                        .weight = norm,
                                        .eps = static_cast<float>(c.rms_norm_eps)}));
  out.hidden.resize(plan.rows * d);
  R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                           .x_rows = plan.rows,
                                           .index = plan.internal_row.data(),
                                           .rows = plan.rows,
                                           .dim = d,
                                           .out = out.hidden.data()}));
  const int64_t n = static_cast<int64_t>(plan.logit_rows.size());
  if (n == 0) return absl::OkStatus();
  R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                           .x_rows = plan.rows,
                                           .index = plan.logit_rows.data(),
                                           .rows = n,
                                           .dim = d,
                                           .out = s.head_in.data()}));
  out.logits.resize(n * c.vocab_size);
  return backend_->Linear(
      {.x = s.head_in.data(), .rows = n, .weight = head, .y = out.logits.data()});
}

}  // namespace r2::model

// DeepseekModel: construction, the main forward pass, one decoder block and the output head.
// Attention lives in mla.cc, the MLPs in moe.cc, the MTP module in mtp.cc.
#include "engine/model/deepseek_model.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

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
  const int64_t table = static_cast<int64_t>(model->rope_.cos.size());
  model->rope_cos_ = TensorView{DType::kF32, {table}, model->rope_.cos.data()};
  model->rope_sin_ = TensorView{DType::kF32, {table}, model->rope_.sin.data()};
  model->softmax_scale_ = static_cast<float>(c.softmax_scale());
  // On the CPU the per-head absorbed products run on transposed weights (LinearParams::
  // weight_transposed): with 64-128 inputs per product, a sum of broadcast weight rows per row
  // tile instead of a short dot product per output.
  if (backend->SupportsTransposedLinear()) TransposeAbsorbed(c, *model->weights_);
  if (backend->host_memory()) {
    model->weight_placement_ = PlaceWeightsInHugePages(model->checkpoint_->Mappings());
    StoreExactAbsorbedAsBf16(*model->weights_);
  }
  if (!backend->host_memory()) {
    TensorView* extra[] = {&model->rope_cos_, &model->rope_sin_};
    R2_RETURN_IF_ERROR(UploadModelWeights(*model->weights_, extra, *backend, model->weight_arena_));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<DeepseekModel>> DeepseekModel::Load(const std::string& dir,
                                                                   Backend* backend) {
  auto checkpoint = Checkpoint::Open(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  return Create(*std::move(checkpoint), backend);
}

int64_t DeepseekModel::last_routed_experts_run() const { return scratch_->experts_run; }

int64_t DeepseekModel::num_cache_layers() const {
  return config().num_hidden_layers + config().num_nextn_predict_layers;
}

KvCacheShape DeepseekModel::CacheShape(int64_t num_blocks, int64_t block_size,
                                       KvCacheDType dtype) const {
  return PagedKvCache::ShapeFor(config(), num_blocks, block_size, dtype);
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
  if (!backend_->SupportsKvCacheDType(shape.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("backend '", std::string(backend_->name()), "' cannot read a ",
                     KvCacheDTypeName(shape.dtype), " KV cache (--kv-cache-dtype)"));
  }
  if (!backend_->host_memory() && cache.backend() != backend_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache is not in the memory of backend '", std::string(backend_->name()),
        "' (create it with PagedKvCache::Create(shape, backend))"));
  }
  return BuildStepPlan(batch, logits,
                       StepPlanLimits{.vocab_size = config().vocab_size,
                                      .max_positions = rope_.max_positions,
                                      .num_blocks = shape.num_blocks,
                                      .block_size = shape.block_size});
}

absl::Status DeepseekModel::BeginStep(const StepPlan& plan) {
  Scratch& s = *scratch_;
  s.experts_run = 0;
  R2_RETURN_IF_ERROR(s.Resize(backend_, config(), plan.rows));
  PlanArrays& a = s.plan;
  if (backend_->host_memory()) {
    a = PlanArrays{.token_ids = plan.token_ids.data(),
                   .positions = plan.positions.data(),
                   .slots = plan.slots.data(),
                   .batch_row = plan.batch_row.data(),
                   .internal_row = plan.internal_row.data(),
                   .prefill_cu_seqlens = plan.prefill_cu_seqlens.data(),
                   .decode_cu_seqlens = plan.decode_cu_seqlens.data(),
                   .decode_kv_lens = plan.decode_kv_lens.data(),
                   .decode_block_tables = plan.decode_block_tables.data(),
                   .logit_rows = plan.logit_rows.data()};
    return absl::OkStatus();
  }
  // Device: every array packed into one staging buffer (256-byte aligned pieces), one upload.
  std::vector<uint8_t>& staging = s.plan_staging;
  staging.clear();
  std::vector<size_t> offsets;
  auto pack = [&](const auto& v) {
    const size_t at = (staging.size() + 255) / 256 * 256;
    const size_t bytes = v.size() * sizeof(v[0]);
    staging.resize(at + std::max<size_t>(bytes, 1));
    if (bytes != 0) std::memcpy(staging.data() + at, v.data(), bytes);
    offsets.push_back(at);
  };
  pack(plan.token_ids);
  pack(plan.positions);
  pack(plan.slots);
  pack(plan.batch_row);
  pack(plan.internal_row);
  pack(plan.prefill_cu_seqlens);
  pack(plan.decode_cu_seqlens);
  pack(plan.decode_kv_lens);
  pack(plan.decode_block_tables);
  pack(plan.logit_rows);
  R2_RETURN_IF_ERROR(s.plan_buffer.Reserve(backend_, staging.size()));
  R2_RETURN_IF_ERROR(backend_->CopyToBackend(s.plan_buffer.data(), staging.data(), staging.size()));
  const auto* base = s.plan_buffer.as<uint8_t>();
  auto i32 = [&](int i) { return reinterpret_cast<const int32_t*>(base + offsets[i]); };
  a = PlanArrays{.token_ids = i32(0),
                 .positions = i32(1),
                 .slots = reinterpret_cast<const int64_t*>(base + offsets[2]),
                 .batch_row = i32(3),
                 .internal_row = i32(4),
                 .prefill_cu_seqlens = i32(5),
                 .decode_cu_seqlens = i32(6),
                 .decode_kv_lens = i32(7),
                 .decode_block_tables = i32(8),
                 .logit_rows = i32(9)};
  return absl::OkStatus();
}

absl::StatusOr<ForwardOutput> DeepseekModel::Forward(absl::Span<const SequenceInput> batch,
                                                     LogitsMode logits, PagedKvCache& cache) {
  auto plan = Plan(batch, logits, cache);
  if (!plan.ok()) return plan.status();
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  R2_RETURN_IF_ERROR(BeginStep(*plan));
  R2_RETURN_IF_ERROR(backend_->Embedding(
      {.table = weights_->embed, .ids = s.plan.token_ids, .rows = plan->rows, .out = s.h.data()}));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    R2_RETURN_IF_ERROR(DecoderLayer(l, weights_->layers[l], *plan, cache));
  }
  ForwardOutput out;
  if (outputs_stay_on_device_ && !backend_->host_memory()) {
    R2_RETURN_IF_ERROR(FinishOnDevice(weights_->final_norm, weights_->lm_head, *plan, out));
    return out;
  }
  R2_RETURN_IF_ERROR(Finish(weights_->final_norm, weights_->lm_head, *plan, out));
  return out;
}

absl::Status DeepseekModel::FinishOnDevice(const TensorView& norm, const WeightView& head,
                                           const StepPlan& plan, ForwardOutput& out) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  out.vocab_size = c.vocab_size;
  out.hidden_size = c.hidden_size;
  const int64_t n = static_cast<int64_t>(plan.logit_rows.size());
  if (n == 0) return absl::OkStatus();
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.h.data(),
                                        .y = s.x.data(),
                                        .rows = plan.rows,
                                        .dim = c.hidden_size,
                                        .weight = norm,
                                        .eps = static_cast<float>(c.rms_norm_eps)}));
  R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                           .x_rows = plan.rows,
                                           .index = s.plan.logit_rows,
                                           .rows = n,
                                           .dim = c.hidden_size,
                                           .out = s.head_in.data()}));
  R2_RETURN_IF_ERROR(s.logits.Grow(backend_, n * c.vocab_size));
  R2_RETURN_IF_ERROR(
      backend_->Linear({.x = s.head_in.data(), .rows = n, .weight = head, .y = s.logits.data()}));
  out.device_logits = s.logits.data();
  out.device_logit_rows = n;
  return absl::OkStatus();
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
  // On a host backend the outputs are written in place; a device backend stages them in
  // scratch and copies them back.
  const bool host = backend_->host_memory();
  out.hidden.resize(plan.rows * d);
  float* hidden = host ? out.hidden.data() : s.hidden_out.data();
  R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                           .x_rows = plan.rows,
                                           .index = s.plan.internal_row,
                                           .rows = plan.rows,
                                           .dim = d,
                                           .out = hidden}));
  const int64_t n = static_cast<int64_t>(plan.logit_rows.size());
  if (n > 0) {
    R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                             .x_rows = plan.rows,
                                             .index = s.plan.logit_rows,
                                             .rows = n,
                                             .dim = d,
                                             .out = s.head_in.data()}));
    out.logits.resize(n * c.vocab_size);
    if (!host) R2_RETURN_IF_ERROR(s.logits.Grow(backend_, n * c.vocab_size));
    float* logits = host ? out.logits.data() : s.logits.data();
    R2_RETURN_IF_ERROR(
        backend_->Linear({.x = s.head_in.data(), .rows = n, .weight = head, .y = logits}));
    if (!host) {
      R2_RETURN_IF_ERROR(
          backend_->CopyToHost(out.logits.data(), logits, out.logits.size() * sizeof(float)));
    }
  }
  if (!host) {
    R2_RETURN_IF_ERROR(
        backend_->CopyToHost(out.hidden.data(), hidden, out.hidden.size() * sizeof(float)));
  }
  return absl::OkStatus();
}

}  // namespace r2::model

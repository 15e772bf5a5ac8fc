// Multi-head latent attention (spec 2.3, 3.1-3.2): projections, RoPE, the cache write, then the
// plain formulation for rows without cached context and the absorbed one for the rest.
#include "engine/model/deepseek_model.h"
#include "engine/model/forward_scratch.h"

namespace r2::model {

absl::Status DeepseekModel::Attention(int64_t layer, const MlaWeights& w, const StepPlan& plan,
                                      PagedKvCache& cache) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t rows = plan.rows, heads = c.num_attention_heads, dq = c.qk_head_dim();
  const int64_t lora = c.kv_lora_rank, rope = c.qk_rope_head_dim, width = lora + rope;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // The projections of x, one op: q_a (or q_proj, straight to q) and kv_a.
  const bool q_lora = c.has_q_lora();
  const LinearParams projections[] = {
      {.x = s.x.data(),
       .rows = rows,
       .weight = q_lora ? w.q_a : w.q,
       .y = q_lora ? s.cq.data() : s.q.data()},
      {.x = s.x.data(), .rows = rows, .weight = w.kv_a, .y = s.kv.data()}};
  R2_RETURN_IF_ERROR(backend_->LinearGroup(projections));
  // Query: q = q_b(norm(q_a(x))) or q_proj(x), [rows, heads, nope + rope].
  if (q_lora) {
    R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.cq.data(),
                                          .y = s.cq.data(),
                                          .rows = rows,
                                          .dim = c.q_lora_rank,
                                          .weight = w.q_a_norm,
                                          .eps = eps}));
    R2_RETURN_IF_ERROR(
        backend_->Linear({.x = s.cq.data(), .rows = rows, .weight = w.q_b, .y = s.q.data()}));
  }
  // Latent row: [norm(kv_a(x)[0:lora]); rope(kv_a(x)[lora:])], exactly what the cache stores.
  R2_RETURN_IF_ERROR(backend_->RmsNorm({.x = s.kv.data(),
                                        .x_stride = width,
                                        .y = s.kv.data(),
                                        .y_stride = width,
                                        .rows = rows,
                                        .dim = lora,
                                        .weight = w.kv_a_norm,
                                        .eps = eps}));
  const RopeParams rope_common{.rows = rows,
                               .rope_dim = rope,
                               .positions = s.plan.positions,
                               .cos = rope_cos_.as<float>(),
                               .sin = rope_sin_.as<float>(),
                               .max_positions = rope_.max_positions};
  RopeParams k_rope = rope_common;
  k_rope.x = s.kv.data() + lora;
  k_rope.heads = 1;
  k_rope.token_stride = width;
  R2_RETURN_IF_ERROR(backend_->Rope(k_rope));
  RopeParams q_rope = rope_common;
  q_rope.x = s.q.data() + c.qk_nope_head_dim;
  q_rope.heads = heads;
  q_rope.token_stride = heads * dq;
  q_rope.head_stride = dq;
  R2_RETURN_IF_ERROR(backend_->Rope(q_rope));
  const PagedLatentCache layer_cache = cache.Layer(layer);
  R2_RETURN_IF_ERROR(backend_->KvCacheWrite({.latent = s.kv.data(),
                                             .latent_stride = width,
                                             .k_pe = s.kv.data() + lora,
                                             .k_pe_stride = width,
                                             .slot_mapping = s.plan.slots,
                                             .rows = rows,
                                             .cache = layer_cache}));
  if (plan.prefill_rows > 0) R2_RETURN_IF_ERROR(PlainAttention(w, plan));
  if (plan.prefill_rows < rows) R2_RETURN_IF_ERROR(AbsorbedAttention(w, plan, layer_cache));
  return backend_->Linear(
      {.x = s.o.data(), .rows = rows, .weight = w.o, .y = s.h.data(), .accumulate = true});
}

// Rows [0, prefill_rows): expand the latents to per-head k_nope / v with kv_b_proj and attend
// causally within each sequence (spec 2.3 steps 3-5).
absl::Status DeepseekModel::PlainAttention(const MlaWeights& w, const StepPlan& plan) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim;
  const int64_t dq = c.qk_head_dim(), width = c.kv_cache_width(), up = nope + v;
  R2_RETURN_IF_ERROR(backend_->Linear({.x = s.kv.data(),
                                       .x_stride = width,
                                       .rows = plan.prefill_rows,
                                       .weight = w.kv_b,
                                       .y = s.kv_up.data()}));
  const int64_t seqs = static_cast<int64_t>(plan.prefill_cu_seqlens.size()) - 1;
  return backend_->MlaPrefillAttention({.q = s.q.data(),
                                        .q_token_stride = heads * dq,
                                        .q_head_stride = dq,
                                        .k_nope = s.kv_up.data(),
                                        .k_nope_token_stride = heads * up,
                                        .k_nope_head_stride = up,
                                        .k_pe = s.kv.data() + c.kv_lora_rank,
                                        .k_pe_token_stride = width,
                                        .v = s.kv_up.data() + nope,
                                        .v_token_stride = heads * up,
                                        .v_head_stride = up,
                                        .out = s.o.data(),
                                        .out_token_stride = heads * v,
                                        .out_head_stride = v,
                                        .cu_seqlens_q = s.plan.prefill_cu_seqlens,
                                        .cu_seqlens_k = s.plan.prefill_cu_seqlens,
                                        .num_seqs = seqs,
                                        .heads = heads,
                                        .nope_dim = nope,
                                        .rope_dim = c.qk_rope_head_dim,
                                        .v_dim = v,
                                        .softmax_scale = softmax_scale_});
}

// Rows [prefill_rows, rows): q_lat = W_UK^T q_nope per head, MQA over the paged cache with
// 576-wide keys (for V3), then o = W_UV o_lat per head (spec 3.2).
absl::Status DeepseekModel::AbsorbedAttention(const MlaWeights& w, const StepPlan& plan,
                                              const PagedLatentCache& cache) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t first = plan.prefill_rows, n = plan.rows - first;
  const int64_t heads = c.num_attention_heads, nope = c.qk_nope_head_dim, v = c.v_head_dim;
  const int64_t dq = c.qk_head_dim(), lora = c.kv_lora_rank, width = c.kv_cache_width();
  const float* q = s.q.data() + first * heads * dq;
  // One batched op over the heads: head h reads q_nope at h * dq, W_UK[h]^T, writes at h * width.
  R2_RETURN_IF_ERROR(backend_->Linear({.x = q,
                                       .x_stride = heads * dq,
                                       .rows = n,
                                       .weight = w.w_uk_t,
                                       .y = s.q_abs.data(),
                                       .y_stride = heads * width,
                                       .batch = heads,
                                       .x_batch_stride = dq,
                                       .y_batch_stride = width,
                                       .weight_batch_stride = lora * nope,
                                       .weight_transposed = w.absorbed_transposed}));
  // q_pe of every (row, head) into the tail of its absorbed query.
  R2_RETURN_IF_ERROR(backend_->GatherRows({.x = q + nope,
                                           .x_stride = dq,
                                           .x_rows = n * heads,
                                           .rows = n * heads,
                                           .dim = c.qk_rope_head_dim,
                                           .out = s.q_abs.data() + lora,
                                           .out_stride = width}));
  R2_RETURN_IF_ERROR(
      backend_->MlaDecodeAttention({.q = s.q_abs.data(),
                                    .q_token_stride = heads * width,
                                    .q_head_stride = width,
                                    .cache = cache,
                                    .block_tables = s.plan.decode_block_tables,
                                    .block_table_stride = plan.decode_block_table_stride,
                                    .kv_lens = s.plan.decode_kv_lens,
                                    .cu_seqlens_q = s.plan.decode_cu_seqlens,
                                    .num_seqs = plan.decode_seqs(),
                                    .heads = heads,
                                    .softmax_scale = softmax_scale_,
                                    .out = s.o_lat.data(),
                                    .out_token_stride = heads * lora,
                                    .out_head_stride = lora}));
  float* o = s.o.data() + first * heads * v;
  return backend_->Linear({.x = s.o_lat.data(),
                           .x_stride = heads * lora,
                           .rows = n,
                           .weight = w.w_uv,
                           .y = o,
                           .y_stride = heads * v,
                           .batch = heads,
                           .x_batch_stride = lora,
                           .y_batch_stride = v,
                           .weight_batch_stride = v * lora,
                           .weight_transposed = w.absorbed_transposed});
}

}  // namespace r2::model

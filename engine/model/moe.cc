// The MLP blocks (spec 2.5-2.6): the SwiGLU MLP, and the MoE layer with router, routed experts
// (tokens grouped by expert; only selected experts run) and shared experts. Outputs are added
// into the float32 residual stream.
#include <vector>

#include "engine/model/deepseek_model.h"
#include "engine/model/forward_scratch.h"

namespace r2::model {

// h += down(silu(gate x) * up x) on `rows` rows of x. With out_index, row i of the result is
// instead added to h[out_index[i]] scaled by out_scale[i] (routed experts).
absl::Status DeepseekModel::Mlp(const MlpWeights& w, const float* x, int64_t rows, float* h,
                                const int32_t* out_index, const float* out_scale) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t width = w.width(), d = c.hidden_size;
  R2_RETURN_IF_ERROR(backend_->Linear(
      {.x = x, .rows = rows, .weight = w.gate, .y = s.gu.data(), .y_stride = 2 * width}));
  R2_RETURN_IF_ERROR(backend_->Linear(
      {.x = x, .rows = rows, .weight = w.up, .y = s.gu.data() + width, .y_stride = 2 * width}));
  R2_RETURN_IF_ERROR(backend_->SiluMul({.gate = s.gu.data(),
                                        .gate_stride = 2 * width,
                                        .up = s.gu.data() + width,
                                        .up_stride = 2 * width,
                                        .out = s.act.data(),
                                        .rows = rows,
                                        .dim = width}));
  if (out_index == nullptr) {
    return backend_->Linear(
        {.x = s.act.data(), .rows = rows, .weight = w.down, .y = h, .accumulate = true});
  }
  R2_RETURN_IF_ERROR(
      backend_->Linear({.x = s.act.data(), .rows = rows, .weight = w.down, .y = s.ye.data()}));
  return backend_->ScatterAddRows({.x = s.ye.data(),
                                   .index = out_index,
                                   .scale = out_scale,
                                   .rows = rows,
                                   .dim = d,
                                   .out = h,
                                   .out_rows = s.rows});
}

absl::Status DeepseekModel::Moe(const MoeWeights& w, const StepPlan& plan) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t rows = plan.rows, experts = c.n_routed_experts, k = c.num_experts_per_tok;
  R2_RETURN_IF_ERROR(
      backend_->Linear({.x = s.x.data(), .rows = rows, .weight = w.router, .y = s.router.data()}));
  const bool softmax = c.scoring_func == "softmax";
  const bool grouped = c.topk_method != "greedy";
  R2_RETURN_IF_ERROR(backend_->MoeRoute(
      {.logits = s.router.data(),
       .rows = rows,
       .num_experts = experts,
       .bias = w.score_bias.empty() ? nullptr : w.score_bias.data(),
       .scoring = softmax ? MoeScoring::kSoftmax : MoeScoring::kSigmoid,
       .group_score = c.topk_method == "noaux_tc" ? MoeGroupScore::kTop2Sum : MoeGroupScore::kMax,
       .n_group = grouped ? c.n_group : 1,
       .topk_group = grouped ? c.topk_group : 1,
       .top_k = k,
       .norm_topk_prob = c.norm_topk_prob,
       .scaling_factor = static_cast<float>(c.routed_scaling_factor),
       .expert_ids = s.expert_ids.data(),
       .expert_weights = s.expert_weights.data()}));
  if (w.has_shared) {
    R2_RETURN_IF_ERROR(Mlp(w.shared, s.x.data(), rows, s.h.data(), nullptr, nullptr));
  }
  // Group the (token, weight) pairs by expert, tokens in order within each expert. NOTE: this
  // reads the router's output on the host; a device backend will need a copy back (or a device
  // side grouping op) here.
  std::vector<std::vector<int32_t>> tokens(experts);
  std::vector<std::vector<float>> scales(experts);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = s.expert_ids[t * k + j];
      tokens[e].push_back(static_cast<int32_t>(t));
      scales[e].push_back(s.expert_weights[t * k + j]);
    }
  }
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = static_cast<int64_t>(tokens[e].size());
    if (n == 0) continue;
    R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                             .x_rows = rows,
                                             .index = tokens[e].data(),
                                             .rows = n,
                                             .dim = c.hidden_size,
                                             .out = s.xe.data()}));
    R2_RETURN_IF_ERROR(
        Mlp(w.experts[e], s.xe.data(), n, s.h.data(), tokens[e].data(), scales[e].data()));
  }
  return absl::OkStatus();
}

}  // namespace r2::model

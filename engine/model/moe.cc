// The MLP blocks (spec 2.5-2.6): the SwiGLU MLP, and the MoE layer with router, routed experts
// (tokens grouped by expert; only selected experts run) and shared experts. Outputs are added
// into the float32 residual stream. On host backends the routed experts go to one
// Backend::MoeExperts call with the layer's expert views (the optimized CPU backend groups the
// tokens and spreads the experts' feature blocks over its threads; with decode batches of a few
// rows that beats one Linear call per expert); backends that answer Unimplemented (the reference)
// and device backends keep the grouping below, one Linear per selected expert.
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/forward_scratch.h"

namespace r2::model {
namespace {

// The host MoeExperts call's scratch holds about 4 * (2 hidden + 2 width) bytes per (token,
// expert) pair; above this many bytes (long prefills) the grouping path runs instead.
constexpr int64_t kHostExpertsMaxScratchBytes = int64_t{64} << 20;

}  // namespace

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

absl::Status DeepseekModel::RoutedExpertsOnHost(const MoeWeights& w, int64_t rows, bool* ran) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  *ran = false;
  const int64_t experts = static_cast<int64_t>(w.experts.size()), k = c.num_experts_per_tok;
  if (experts == 0) return absl::OkStatus();
  auto it = moe_expert_views_.find(&w);
  if (it == moe_expert_views_.end()) {
    std::vector<WeightView> views(3 * experts);
    for (int64_t e = 0; e < experts; ++e) {
      views[e] = w.experts[e].gate;
      views[experts + e] = w.experts[e].up;
      views[2 * experts + e] = w.experts[e].down;
    }
    it = moe_expert_views_.emplace(&w, std::move(views)).first;
  }
  const absl::Status status = backend_->MoeExperts({.x = s.x.data(),
                                                    .rows = rows,
                                                    .hidden = c.hidden_size,
                                                    .width = w.experts[0].width(),
                                                    .num_experts = experts,
                                                    .top_k = k,
                                                    .expert_ids = s.expert_ids(),
                                                    .expert_weights = s.expert_weights(c),
                                                    .h = s.h.data(),
                                                    .expert_views = it->second.data()});
  if (absl::IsUnimplemented(status)) {
    moe_experts_on_host_ = false;
    return absl::OkStatus();
  }
  R2_RETURN_IF_ERROR(status);
  *ran = true;
  // Distinct experts selected this step (the op checked the ids).
  moe_expert_seen_.assign(experts, 0);
  const int32_t* ids = s.expert_ids();
  for (int64_t i = 0; i < rows * k; ++i) {
    s.experts_run += moe_expert_seen_[ids[i]] == 0 ? 1 : 0;
    moe_expert_seen_[ids[i]] = 1;
  }
  return absl::OkStatus();
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
       .bias = w.score_bias.empty() ? nullptr : w.score_bias.as<float>(),
       .scoring = softmax ? MoeScoring::kSoftmax : MoeScoring::kSigmoid,
       .group_score = c.topk_method == "noaux_tc" ? MoeGroupScore::kTop2Sum : MoeGroupScore::kMax,
       .n_group = grouped ? c.n_group : 1,
       .topk_group = grouped ? c.topk_group : 1,
       .top_k = k,
       .norm_topk_prob = c.norm_topk_prob,
       .scaling_factor = static_cast<float>(c.routed_scaling_factor),
       .expert_ids = s.expert_ids(),
       .expert_weights = s.expert_weights(c)}));
  if (w.has_shared) {
    R2_RETURN_IF_ERROR(Mlp(w.shared, s.x.data(), rows, s.h.data(), nullptr, nullptr));
  }
  const int64_t pair_bytes = 4 * (2 * c.hidden_size + 2 * c.moe_intermediate_size);
  if (backend_->host_memory() && moe_experts_on_host_ &&
      rows * k * pair_bytes <= kHostExpertsMaxScratchBytes) {
    bool ran = false;
    R2_RETURN_IF_ERROR(RoutedExpertsOnHost(w, rows, &ran));
    if (ran) return absl::OkStatus();
  }
  // Group the (token, weight) pairs by expert, tokens in order within each expert, on the host.
  // A device backend copies the router's ids and weights back first (one copy, and so one
  // synchronization, per MoE layer) and uploads the grouping in one copy. That round trip is to
  // be replaced by a device-side grouping op before decode can be captured in a CUDA Graph.
  const bool host = backend_->host_memory();
  const int64_t pairs = rows * k;
  const int32_t* ids = s.expert_ids();
  const float* weights = s.expert_weights(c);
  if (!host) {
    s.route_host.resize(2 * pairs);
    R2_RETURN_IF_ERROR(
        backend_->CopyToHost(s.route_host.data(), s.expert_ids(), 2 * pairs * sizeof(int32_t)));
    ids = s.route_host.data();
    weights = reinterpret_cast<const float*>(s.route_host.data() + pairs);
  }
  // Counting sort by expert: staging = [token rows (pairs)][their scales (pairs)].
  std::vector<int32_t> start(experts + 1, 0);
  for (int64_t i = 0; i < pairs; ++i) {
    if (ids[i] < 0 || ids[i] >= experts) {
      return absl::InternalError(
          absl::StrCat("MoeRoute returned expert ", ids[i], " not in [0, ", experts, ")"));
    }
    ++start[ids[i] + 1];
  }
  for (int64_t e = 0; e < experts; ++e) start[e + 1] += start[e];
  s.moe_staging.resize(2 * pairs);
  std::vector<int32_t> next(start.begin(), start.end() - 1);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t at = next[ids[t * k + j]]++;
      s.moe_staging[at] = static_cast<int32_t>(t);
      std::memcpy(&s.moe_staging[pairs + at], &weights[t * k + j], sizeof(float));
    }
  }
  const int32_t* groups = s.moe_staging.data();
  if (!host && pairs > 0) {
    R2_RETURN_IF_ERROR(backend_->CopyToBackend(s.moe_groups.data(), s.moe_staging.data(),
                                               2 * pairs * sizeof(int32_t)));
    groups = s.moe_groups.data();
  }
  const auto* scales = reinterpret_cast<const float*>(groups + pairs);
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t n = start[e + 1] - start[e];
    if (n == 0) continue;
    ++s.experts_run;
    const int32_t* tokens = groups + start[e];
    R2_RETURN_IF_ERROR(backend_->GatherRows({.x = s.x.data(),
                                             .x_rows = rows,
                                             .index = tokens,
                                             .rows = n,
                                             .dim = c.hidden_size,
                                             .out = s.xe.data()}));
    R2_RETURN_IF_ERROR(Mlp(w.experts[e], s.xe.data(), n, s.h.data(), tokens, scales + start[e]));
  }
  return absl::OkStatus();
}

}  // namespace r2::model

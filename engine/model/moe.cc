// The MLP blocks (spec 2.5-2.6): the SwiGLU MLP, and the MoE layer with router, routed experts
// (tokens grouped by expert; only selected experts run) and shared experts. Outputs are added
// into the float32 residual stream. On host backends the routed experts go to one
// Backend::MoeExperts call with the layer's expert views (the optimized CPU backend groups the
// tokens and spreads the experts over its threads; with decode batches of a few rows that beats
// one Linear call per expert), the shared expert in the same call as one more expert that every
// token takes at weight 1 when its width and formats are the routed experts'; backends that
// answer Unimplemented (the reference) and device backends keep the grouping below, one Linear
// per selected expert.
#include <algorithm>
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

// Whether the shared expert can ride in the host MoeExperts call as one more expert that every
// token selects with weight 1: it must have the routed experts' width and formats (the op takes
// one width, one gate/up format and one down format).
bool SharedExpertFolds(const MoeWeights& w) {
  if (!w.has_shared || w.experts.empty()) return false;
  const MlpWeights& e = w.experts[0];
  const MlpWeights& sh = w.shared;
  return sh.width() == e.width() && sh.gate.weight.dtype == e.gate.weight.dtype &&
         sh.up.weight.dtype == e.up.weight.dtype && sh.down.weight.dtype == e.down.weight.dtype;
}

}  // namespace

// h += down(silu(gate x) * up x) on `rows` rows of x. With out_index, row i of the result is
// instead added to h[out_index[i]] scaled by out_scale[i] (routed experts).
absl::Status DeepseekModel::Mlp(const MlpWeights& w, const float* x, int64_t rows, float* h,
                                const int32_t* out_index, const float* out_scale) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  const int64_t width = w.width(), d = c.hidden_size;
  const LinearParams gate_up[] = {
      {.x = x, .rows = rows, .weight = w.gate, .y = s.gu.data(), .y_stride = 2 * width},
      {.x = x, .rows = rows, .weight = w.up, .y = s.gu.data() + width, .y_stride = 2 * width}};
  R2_RETURN_IF_ERROR(backend_->LinearGroup(gate_up));
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

absl::Status DeepseekModel::RoutedExpertsOnHost(const MoeWeights& w, int64_t rows, bool with_shared,
                                                bool* ran) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  *ran = false;
  const int64_t experts = static_cast<int64_t>(w.experts.size()), k = c.num_experts_per_tok;
  if (experts == 0) return absl::OkStatus();
  // The op's experts: the routed ones, then (with_shared) the shared expert as number `experts`.
  const int64_t n = experts + (with_shared ? 1 : 0);
  auto it = moe_expert_views_.find(&w);
  if (it == moe_expert_views_.end() || static_cast<int64_t>(it->second.size()) != 3 * n) {
    std::vector<WeightView> views(3 * n);
    for (int64_t e = 0; e < n; ++e) {
      const MlpWeights& m = e < experts ? w.experts[e] : w.shared;
      views[e] = m.gate;
      views[n + e] = m.up;
      views[2 * n + e] = m.down;
    }
    it = moe_expert_views_.insert_or_assign(&w, std::move(views)).first;
  }
  const int32_t* ids = s.expert_ids();
  const float* weights = s.expert_weights(c);
  int64_t top_k = k;
  if (with_shared) {  // each token's k routed choices, then the shared expert at weight 1
    top_k = k + 1;
    moe_shared_ids_.resize(rows * top_k);
    moe_shared_weights_.resize(rows * top_k);
    for (int64_t t = 0; t < rows; ++t) {
      std::copy_n(ids + t * k, k, moe_shared_ids_.data() + t * top_k);
      std::copy_n(weights + t * k, k, moe_shared_weights_.data() + t * top_k);
      moe_shared_ids_[t * top_k + k] = static_cast<int32_t>(experts);
      moe_shared_weights_[t * top_k + k] = 1.0f;
    }
    ids = moe_shared_ids_.data();
    weights = moe_shared_weights_.data();
  }
  const absl::Status status = backend_->MoeExperts({.x = s.x.data(),
                                                    .rows = rows,
                                                    .hidden = c.hidden_size,
                                                    .width = w.experts[0].width(),
                                                    .num_experts = n,
                                                    .top_k = top_k,
                                                    .expert_ids = ids,
                                                    .expert_weights = weights,
                                                    .h = s.h.data(),
                                                    .expert_views = it->second.data()});
  if (absl::IsUnimplemented(status)) {
    moe_experts_on_host_ = false;
    return absl::OkStatus();
  }
  R2_RETURN_IF_ERROR(status);
  *ran = true;
  // Distinct routed experts selected this step (the op checked the ids).
  moe_expert_seen_.assign(experts, 0);
  const int32_t* routed = s.expert_ids();
  for (int64_t i = 0; i < rows * k; ++i) {
    s.experts_run += moe_expert_seen_[routed[i]] == 0 ? 1 : 0;
    moe_expert_seen_[routed[i]] = 1;
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
  // On a host backend the routed experts (and, where it fits, the shared one) go to one
  // MoeExperts call; otherwise, or when the backend does not take it, the shared expert's MLP
  // and then the grouping below.
  const int64_t pair_bytes = 4 * (2 * c.hidden_size + 2 * c.moe_intermediate_size);
  const bool fold = SharedExpertFolds(w);
  if (backend_->host_memory() && moe_experts_on_host_ &&
      rows * (k + (fold ? 1 : 0)) * pair_bytes <= kHostExpertsMaxScratchBytes) {
    bool ran = false;
    R2_RETURN_IF_ERROR(RoutedExpertsOnHost(w, rows, fold, &ran));
    if (ran && fold) return absl::OkStatus();
    if (ran)
      return w.has_shared ? Mlp(w.shared, s.x.data(), rows, s.h.data(), nullptr, nullptr)
                          : absl::OkStatus();
  }
  if (w.has_shared) {
    R2_RETURN_IF_ERROR(Mlp(w.shared, s.x.data(), rows, s.h.data(), nullptr, nullptr));
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

// The MLP blocks (spec 2.5-2.6): the SwiGLU MLP, and the MoE layer with router, routed experts
// and shared experts. Outputs are added into the float32 residual stream. The routed experts run
// either as one Backend::MoeExperts call on the router's outputs where they lie (device backends,
// decode-sized batches: no host round trip), or grouped by expert on the host with only the
// selected experts run (host backends, larger batches, backends without MoeExperts).
#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/deepseek_model.h"
#include "engine/model/forward_scratch.h"

namespace r2::model {
namespace {

// Above this many (token, expert) pairs the experts run grouped: each selected expert's weights
// are then read once for all its tokens instead of once per pair.
constexpr int64_t kDeviceExpertsMaxPairs = 64;

// The pointer tables MoeExperts reads, on the host: [gate, up, down, gate_scale_inv,
// up_scale_inv, down_scale_inv] x num_experts. False when the experts do not share one
// dtype, shape and block layout that MoeExperts takes (integer-quantized weights, for one).
bool ExpertTables(const std::vector<MlpWeights>& experts, std::vector<const void*>& table) {
  if (experts.empty()) return false;
  const MlpWeights& first = experts[0];
  const int64_t n = static_cast<int64_t>(experts.size());
  const DType dtype = first.gate.weight.dtype;
  if (dtype != DType::kBF16 && dtype != DType::kF16 && dtype != DType::kF32 &&
      dtype != DType::kF8E4M3) {
    return false;
  }
  const bool fp8 = dtype == DType::kF8E4M3;
  table.assign(6 * n, nullptr);
  for (int64_t e = 0; e < n; ++e) {
    const WeightView* views[3] = {&experts[e].gate, &experts[e].up, &experts[e].down};
    for (int m = 0; m < 3; ++m) {
      const WeightView& v = *views[m];
      const WeightView& ref = m == 0 ? first.gate : (m == 1 ? first.up : first.down);
      if (v.weight.dtype != dtype || v.weight.shape != ref.weight.shape ||
          v.weight.shape.size() != 2 || v.integer_quantized() || v.block_scaled() != fp8 ||
          (fp8 && (v.block_out != first.gate.block_out || v.block_in != first.gate.block_in))) {
        return false;
      }
      table[m * n + e] = v.weight.data;
      if (fp8) table[(3 + m) * n + e] = v.scale_inv.data;
    }
  }
  const int64_t width = first.gate.out_features(), hidden = first.gate.in_features();
  return first.up.weight.shape == first.gate.weight.shape && first.down.out_features() == hidden &&
         first.down.in_features() == width;
}

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

absl::Status DeepseekModel::RoutedExpertsOnDevice(const MoeWeights& w, int64_t rows, bool* ran) {
  const ModelConfig& c = config();
  Scratch& s = *scratch_;
  *ran = false;
  const int64_t experts = static_cast<int64_t>(w.experts.size());
  auto it = moe_expert_tables_.find(&w);
  if (it == moe_expert_tables_.end()) {
    std::vector<const void*> table;
    if (!ExpertTables(w.experts, table)) {
      moe_experts_usable_ = false;
      return absl::OkStatus();
    }
    BackendBuffer buffer;
    R2_RETURN_IF_ERROR(buffer.Reserve(backend_, table.size() * sizeof(const void*)));
    R2_RETURN_IF_ERROR(
        backend_->CopyToBackend(buffer.data(), table.data(), table.size() * sizeof(const void*)));
    it = moe_expert_tables_.emplace(&w, std::move(buffer)).first;
  }
  const auto* table = it->second.as<const void*>();
  const MlpWeights& first = w.experts[0];
  const bool fp8 = first.gate.weight.dtype == DType::kF8E4M3;
  const auto* scales = reinterpret_cast<const float* const*>(table + 3 * experts);
  const absl::Status status =
      backend_->MoeExperts({.x = s.x.data(),
                            .rows = rows,
                            .hidden = c.hidden_size,
                            .width = first.width(),
                            .num_experts = experts,
                            .top_k = c.num_experts_per_tok,
                            .expert_ids = s.expert_ids(),
                            .expert_weights = s.expert_weights(c),
                            .dtype = first.gate.weight.dtype,
                            .gate = table,
                            .up = table + experts,
                            .down = table + 2 * experts,
                            .gate_scale_inv = fp8 ? scales : nullptr,
                            .up_scale_inv = fp8 ? scales + experts : nullptr,
                            .down_scale_inv = fp8 ? scales + 2 * experts : nullptr,
                            .block_out = first.gate.block_out,
                            .block_in = first.gate.block_in,
                            .h = s.h.data()});
  if (absl::IsUnimplemented(status)) {
    moe_experts_usable_ = false;
    return absl::OkStatus();
  }
  R2_RETURN_IF_ERROR(status);
  *ran = true;
  // The selected experts stay on the device: one token's k experts are distinct; for more tokens
  // this counts as if no two tokens shared an expert (an upper bound for bytes-read accounting).
  s.experts_run += std::min(rows * c.num_experts_per_tok, experts);
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
  const bool host = backend_->host_memory();
  if (!host && moe_experts_usable_ && rows * k <= kDeviceExpertsMaxPairs) {
    bool ran = false;
    R2_RETURN_IF_ERROR(RoutedExpertsOnDevice(w, rows, &ran));
    if (ran) return absl::OkStatus();
  }
  // Group the (token, weight) pairs by expert, tokens in order within each expert, on the host.
  // A device backend copies the router's ids and weights back first (one copy, and so one
  // synchronization, per MoE layer) and uploads the grouping in one copy.
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

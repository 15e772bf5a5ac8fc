#pragma once
// DeepseekModel::Scratch: the activation buffers of one forward pass in the backend's memory,
// sized once per call for its row count (buffers only grow, so steady-state decode allocates
// nothing). Internal to engine/model.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "engine/model/backend_buffer.h"
#include "engine/model/config.h"
#include "engine/model/deepseek_model.h"

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define R2_RETURN_IF_ERROR(expr)                                               \
  do {                                                                         \
    if (absl::Status _r2_status = (expr); !_r2_status.ok()) return _r2_status; \
  } while (0)

namespace r2::model {

// The step plan's index arrays as the backend sees them: views of the StepPlan's vectors on a
// host-memory backend, else of one per-step upload (DeepseekModel::UploadPlan).
struct PlanArrays {
  const int32_t* token_ids = nullptr;
  const int32_t* positions = nullptr;
  const int64_t* slots = nullptr;
  const int32_t* batch_row = nullptr;
  const int32_t* internal_row = nullptr;
  const int32_t* prefill_cu_seqlens = nullptr;
  const int32_t* decode_cu_seqlens = nullptr;
  const int32_t* decode_kv_lens = nullptr;
  const int32_t* decode_block_tables = nullptr;
  const int32_t* logit_rows = nullptr;
};

struct DeepseekModel::Scratch {
  int64_t rows = 0;
  int64_t experts_run = 0;      // routed experts run this step (summed over MoE layers)
  BackendArray<float> h;        // [rows, hidden] residual stream
  BackendArray<float> x;        // [rows, hidden] normed block input
  BackendArray<float> cq;       // [rows, q_lora_rank]
  BackendArray<float> q;        // [rows, heads * qk_head_dim]
  BackendArray<float> kv;       // [rows, kv_lora_rank + rope_dim]: exactly the cache rows
  BackendArray<float> kv_up;    // [prefill rows, heads * (nope + v)] = kv_b_proj(latent)
  BackendArray<float> q_abs;    // [decode rows, heads, kv_lora_rank + rope_dim]
  BackendArray<float> o_lat;    // [decode rows, heads, kv_lora_rank]
  BackendArray<float> o;        // [rows, heads * v_head_dim]
  BackendArray<float> router;   // [rows, n_routed_experts]
  BackendArray<int32_t> route;  // [2, rows, experts_per_tok]: expert ids, then weights
  BackendArray<float> xe;       // [rows, hidden] tokens gathered for one expert
  BackendArray<float> gu;       // [rows, 2 * widest MLP]
  BackendArray<float> act;      // [rows, widest MLP]
  BackendArray<float> ye;       // [rows, hidden] one expert's output
  BackendArray<float> cat;      // [rows, 2 * hidden] MTP [enorm(e); hnorm(h)]
  BackendArray<float> head_in;  // [logit rows, hidden]
  // Device backends only: outputs staged before the copy to the host, MTP's input hidden states.
  BackendArray<float> hidden_out;  // [rows, hidden]
  BackendArray<float> logits;      // [logit rows, vocab]
  BackendArray<float> mtp_hidden;  // [rows, hidden]
  // The per-step plan upload and the MoE grouping upload, with their host staging.
  PlanArrays plan;
  BackendBuffer plan_buffer;
  std::vector<uint8_t> plan_staging;
  BackendArray<int32_t> moe_groups;  // [rows * experts_per_tok] token rows, then their scales
  std::vector<int32_t> moe_staging;
  std::vector<int32_t> route_host;  // the router's ids and weights read back

  int32_t* expert_ids() const { return route.data(); }
  float* expert_weights(const ModelConfig& c) const {
    return reinterpret_cast<float*>(route.data() + rows * c.num_experts_per_tok);
  }

  absl::Status Resize(Backend* b, const ModelConfig& c, int64_t n) {
    rows = n;
    const int64_t d = c.hidden_size, heads = c.num_attention_heads, k = c.num_experts_per_tok;
    const int64_t widest = std::max({c.intermediate_size, c.moe_intermediate_size,
                                     c.moe_intermediate_size * c.n_shared_experts});
    for (auto [array, size] : std::initializer_list<std::pair<BackendArray<float>*, int64_t>>{
             {&h, n * d},
             {&x, n * d},
             {&cq, n * std::max<int64_t>(c.q_lora_rank, 1)},
             {&q, n * heads * c.qk_head_dim()},
             {&kv, n * c.kv_cache_width()},
             {&kv_up, n * heads * (c.qk_nope_head_dim + c.v_head_dim)},
             {&q_abs, n * heads * c.kv_cache_width()},
             {&o_lat, n * heads * c.kv_lora_rank},
             {&o, n * heads * c.v_head_dim},
             {&router, n * std::max<int64_t>(c.n_routed_experts, 1)},
             {&xe, n * d},
             {&gu, n * 2 * widest},
             {&act, n * widest},
             {&ye, n * d},
             {&cat, n * 2 * d},
             {&head_in, n * d}}) {
      if (absl::Status s = array->Grow(b, size); !s.ok()) return s;
    }
    if (absl::Status s = route.Grow(b, 2 * n * std::max<int64_t>(k, 1)); !s.ok()) return s;
    if (!b->host_memory()) {
      if (absl::Status s = hidden_out.Grow(b, n * d); !s.ok()) return s;
      if (absl::Status s = mtp_hidden.Grow(b, n * d); !s.ok()) return s;
      if (absl::Status s = moe_groups.Grow(b, 2 * n * std::max<int64_t>(k, 1)); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
};

}  // namespace r2::model

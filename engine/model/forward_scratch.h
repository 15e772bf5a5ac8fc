#pragma once
// DeepseekModel::Scratch: the activation buffers of one forward pass, sized once per call for its
// row count (vectors only grow, so steady-state decode allocates nothing). Internal to
// engine/model.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/deepseek_model.h"

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define R2_RETURN_IF_ERROR(expr)                                               \
  do {                                                                         \
    if (absl::Status _r2_status = (expr); !_r2_status.ok()) return _r2_status; \
  } while (0)

namespace r2::model {

struct DeepseekModel::Scratch {
  int64_t rows = 0;
  std::vector<float> h;               // [rows, hidden] residual stream
  std::vector<float> x;               // [rows, hidden] normed block input
  std::vector<float> cq;              // [rows, q_lora_rank]
  std::vector<float> q;               // [rows, heads * qk_head_dim]
  std::vector<float> kv;              // [rows, kv_lora_rank + rope_dim]: exactly the cache rows
  std::vector<float> kv_up;           // [prefill rows, heads * (nope + v)] = kv_b_proj(latent)
  std::vector<float> q_abs;           // [decode rows, heads, kv_lora_rank + rope_dim]
  std::vector<float> o_lat;           // [decode rows, heads, kv_lora_rank]
  std::vector<float> o;               // [rows, heads * v_head_dim]
  std::vector<float> router;          // [rows, n_routed_experts]
  std::vector<int32_t> expert_ids;    // [rows, experts_per_tok]
  std::vector<float> expert_weights;  // [rows, experts_per_tok]
  std::vector<float> xe;              // [rows, hidden] tokens gathered for one expert
  std::vector<float> gu;              // [rows, 2 * widest MLP]
  std::vector<float> act;             // [rows, widest MLP]
  std::vector<float> ye;              // [rows, hidden] one expert's output
  std::vector<float> cat;             // [rows, 2 * hidden] MTP [enorm(e); hnorm(h)]
  std::vector<float> head_in;         // [logit rows, hidden]

  void Resize(const ModelConfig& c, int64_t n) {
    rows = n;
    const int64_t d = c.hidden_size, heads = c.num_attention_heads;
    const int64_t widest = std::max({c.intermediate_size, c.moe_intermediate_size,
                                     c.moe_intermediate_size * c.n_shared_experts});
    Grow(h, n * d);
    Grow(x, n * d);
    Grow(cq, n * std::max<int64_t>(c.q_lora_rank, 1));
    Grow(q, n * heads * c.qk_head_dim());
    Grow(kv, n * c.kv_cache_width());
    Grow(kv_up, n * heads * (c.qk_nope_head_dim + c.v_head_dim));
    Grow(q_abs, n * heads * c.kv_cache_width());
    Grow(o_lat, n * heads * c.kv_lora_rank);
    Grow(o, n * heads * c.v_head_dim);
    Grow(router, n * c.n_routed_experts);
    Grow(expert_ids, n * c.num_experts_per_tok);
    Grow(expert_weights, n * c.num_experts_per_tok);
    Grow(xe, n * d);
    Grow(gu, n * 2 * widest);
    Grow(act, n * widest);
    Grow(ye, n * d);
    Grow(cat, n * 2 * d);
    Grow(head_in, n * d);
  }

 private:
  template <typename T>
  static void Grow(std::vector<T>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  }
};

}  // namespace r2::model

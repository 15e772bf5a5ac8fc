// MLA attention: the plain prefill kernel against a naive computation, the paged cache write, and
// the absorbed decode kernel (reading a scrambled paged cache) against the plain formulation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::RelativeError;

struct Dims {
  int64_t heads, nope, rope, v, lora;
};

// Naive causal attention for one sequence: q rows [q_len][H][nope+rope], keys [k_len], packed.
std::vector<double> NaiveAttention(const Dims& d, int64_t q_len, int64_t k_len, const float* q,
                                   const float* k_nope, const float* k_pe, const float* v,
                                   double scale) {
  const int64_t dq = d.nope + d.rope;
  std::vector<double> out(q_len * d.heads * d.v, 0.0);
  for (int64_t t = 0; t < q_len; ++t) {
    for (int64_t h = 0; h < d.heads; ++h) {
      const int64_t visible = k_len - q_len + t + 1;
      std::vector<double> w(visible);
      double max = -1e300, sum = 0;
      for (int64_t s = 0; s < visible; ++s) {
        double acc = 0;
        for (int64_t i = 0; i < d.nope; ++i) {
          acc += double(q[(t * d.heads + h) * dq + i]) * k_nope[(s * d.heads + h) * d.nope + i];
        }
        for (int64_t i = 0; i < d.rope; ++i) {
          acc += double(q[(t * d.heads + h) * dq + d.nope + i]) * k_pe[s * d.rope + i];
        }
        w[s] = scale * acc;
        max = std::max(max, w[s]);
      }
      for (double& x : w) sum += x = std::exp(x - max);
      for (int64_t s = 0; s < visible; ++s) {
        for (int64_t i = 0; i < d.v; ++i) {
          out[(t * d.heads + h) * d.v + i] += w[s] / sum * v[(s * d.heads + h) * d.v + i];
        }
      }
    }
  }
  return out;
}

TEST(MlaAttentionTest, PrefillMatchesNaiveOnVariableLengthBatchWithContext) {
  std::mt19937 rng(3);
  const Dims d{3, 7, 6, 5, 0};
  const std::vector<int32_t> q_lens = {1, 9, 4, 17}, k_lens = {1, 9, 11, 20};
  std::vector<int32_t> cu_q = {0}, cu_k = {0};
  for (size_t b = 0; b < q_lens.size(); ++b) {
    cu_q.push_back(cu_q.back() + q_lens[b]);
    cu_k.push_back(cu_k.back() + k_lens[b]);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back(), dq = d.nope + d.rope;
  std::vector<float> q = RandomFloats(rng, tq * d.heads * dq);
  // k_nope and v interleaved per head in one buffer, as the kv_b_proj output is laid out.
  const int64_t kv_head = d.nope + d.v;
  std::vector<float> kv = RandomFloats(rng, tk * d.heads * kv_head);
  std::vector<float> k_pe = RandomFloats(rng, tk * d.rope);
  std::vector<float> out(tq * d.heads * d.v);
  const float scale = 0.37f;
  MlaPrefillParams p{.q = q.data(),
                     .q_token_stride = d.heads * dq,
                     .q_head_stride = dq,
                     .k_nope = kv.data(),
                     .k_nope_token_stride = d.heads * kv_head,
                     .k_nope_head_stride = kv_head,
                     .k_pe = k_pe.data(),
                     .k_pe_token_stride = d.rope,
                     .v = kv.data() + d.nope,
                     .v_token_stride = d.heads * kv_head,
                     .v_head_stride = kv_head,
                     .out = out.data(),
                     .out_token_stride = d.heads * d.v,
                     .out_head_stride = d.v,
                     .cu_seqlens_q = cu_q.data(),
                     .cu_seqlens_k = cu_k.data(),
                     .num_seqs = 4,
                     .heads = d.heads,
                     .nope_dim = d.nope,
                     .rope_dim = d.rope,
                     .v_dim = d.v,
                     .softmax_scale = scale};
  ASSERT_TRUE(MakeCpuReferenceBackend()->MlaPrefillAttention(p).ok());
  for (size_t b = 0; b < q_lens.size(); ++b) {
    std::vector<float> kn, vv;
    for (int64_t s = cu_k[b]; s < cu_k[b + 1]; ++s) {
      for (int64_t h = 0; h < d.heads; ++h) {
        const float* row = kv.data() + (s * d.heads + h) * kv_head;
        kn.insert(kn.end(), row, row + d.nope);
        vv.insert(vv.end(), row + d.nope, row + kv_head);
      }
    }
    std::vector<double> want =
        NaiveAttention(d, q_lens[b], k_lens[b], q.data() + cu_q[b] * d.heads * dq, kn.data(),
                       k_pe.data() + cu_k[b] * d.rope, vv.data(), scale);
    std::vector<float> got(out.begin() + cu_q[b] * d.heads * d.v,
                           out.begin() + cu_q[b + 1] * d.heads * d.v);
    EXPECT_LT(RelativeError(got, want), 1e-5) << "sequence " << b;
  }
}

// Scatters `rows` tokens of a sequence into a shuffled block table; returns the slot mapping.
std::vector<int64_t> Slots(const std::vector<int32_t>& table, int64_t block_size, int64_t rows) {
  std::vector<int64_t> slots(rows);
  for (int64_t p = 0; p < rows; ++p) {
    slots[p] = int64_t{table[p / block_size]} * block_size + p % block_size;
  }
  return slots;
}

struct DecodeCase {
  int64_t block_size;
  std::vector<int32_t> kv_lens, q_lens;
};

// Absorbed decode over the paged cache equals the plain formulation with k_nope = W_UK c_kv and
// v = W_UV c_kv, for multi-token queries and several sequences.
void CheckAbsorbedEqualsPlain(const Dims& d, const DecodeCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  auto backend = MakeCpuReferenceBackend();
  const int64_t num_seqs = static_cast<int64_t>(c.kv_lens.size()), width = d.lora + d.rope;
  const int64_t max_blocks =
      1 + *std::max_element(c.kv_lens.begin(), c.kv_lens.end()) / c.block_size;
  const int64_t num_blocks = num_seqs * max_blocks + 3, layers = 2, layer = 1;
  // Cache layout [block][layer][slot][width]; this test uses layer 1.
  std::vector<float> pool(num_blocks * layers * c.block_size * width, 0.0f);
  PagedLatentCache cache{.data = pool.data() + layer * c.block_size * width,
                         .num_blocks = num_blocks,
                         .block_size = c.block_size,
                         .block_stride = layers * c.block_size * width,
                         .kv_lora_rank = d.lora,
                         .rope_dim = d.rope};
  std::vector<int32_t> all_blocks(num_blocks);
  std::iota(all_blocks.begin(), all_blocks.end(), 0);
  std::shuffle(all_blocks.begin(), all_blocks.end(), rng);
  std::vector<int32_t> tables(num_seqs * max_blocks);
  std::copy(all_blocks.begin(), all_blocks.begin() + tables.size(), tables.begin());

  std::vector<float> w_uk = RandomFloats(rng, d.heads * d.nope * d.lora, 0.2f);  // [H][nope][L]
  std::vector<float> w_uv = RandomFloats(rng, d.heads * d.v * d.lora, 0.2f);     // [H][v][L]
  const float scale = 0.21f;
  std::vector<int32_t> cu_q = {0};
  for (int32_t n : c.q_lens) cu_q.push_back(cu_q.back() + n);
  const int64_t tq = cu_q.back();
  std::vector<float> q_absorbed(tq * d.heads * width), o_lat(tq * d.heads * d.lora);
  std::vector<std::vector<double>> want(num_seqs);
  std::vector<std::vector<float>> q_plain(num_seqs);
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t kv_len = c.kv_lens[b], q_len = c.q_lens[b];
    std::vector<float> latent = RandomFloats(rng, kv_len * d.lora);
    std::vector<float> k_pe = RandomFloats(rng, kv_len * d.rope);
    std::vector<int32_t> table(tables.begin() + b * max_blocks,
                               tables.begin() + (b + 1) * max_blocks);
    std::vector<int64_t> slots = Slots(table, c.block_size, kv_len);
    ASSERT_TRUE(backend
                    ->KvCacheWrite({.latent = latent.data(),
                                    .k_pe = k_pe.data(),
                                    .slot_mapping = slots.data(),
                                    .rows = kv_len,
                                    .cache = cache})
                    .ok());
    // Plain keys and values.
    std::vector<float> k_nope(kv_len * d.heads * d.nope), v(kv_len * d.heads * d.v);
    for (int64_t s = 0; s < kv_len; ++s) {
      for (int64_t h = 0; h < d.heads; ++h) {
        for (int64_t i = 0; i < d.nope; ++i) {
          double acc = 0;
          for (int64_t l = 0; l < d.lora; ++l) {
            acc += double(w_uk[(h * d.nope + i) * d.lora + l]) * latent[s * d.lora + l];
          }
          k_nope[(s * d.heads + h) * d.nope + i] = static_cast<float>(acc);
        }
        for (int64_t i = 0; i < d.v; ++i) {
          double acc = 0;
          for (int64_t l = 0; l < d.lora; ++l) {
            acc += double(w_uv[(h * d.v + i) * d.lora + l]) * latent[s * d.lora + l];
          }
          v[(s * d.heads + h) * d.v + i] = static_cast<float>(acc);
        }
      }
    }
    const int64_t dq = d.nope + d.rope;
    q_plain[b] = RandomFloats(rng, q_len * d.heads * dq);
    want[b] = NaiveAttention(d, q_len, kv_len, q_plain[b].data(), k_nope.data(), k_pe.data(),
                             v.data(), scale);
    // Absorbed queries: q_lat = W_UK^T q_nope, then q_pe.
    for (int64_t t = 0; t < q_len; ++t) {
      for (int64_t h = 0; h < d.heads; ++h) {
        const float* qp = q_plain[b].data() + (t * d.heads + h) * dq;
        float* qa = q_absorbed.data() + ((cu_q[b] + t) * d.heads + h) * width;
        for (int64_t l = 0; l < d.lora; ++l) {
          double acc = 0;
          for (int64_t i = 0; i < d.nope; ++i) {
            acc += double(w_uk[(h * d.nope + i) * d.lora + l]) * qp[i];
          }
          qa[l] = static_cast<float>(acc);
        }
        std::copy(qp + d.nope, qp + dq, qa + d.lora);
      }
    }
  }
  MlaDecodeParams p{.q = q_absorbed.data(),
                    .q_token_stride = d.heads * width,
                    .q_head_stride = width,
                    .cache = cache,
                    .block_tables = tables.data(),
                    .block_table_stride = max_blocks,
                    .kv_lens = c.kv_lens.data(),
                    .cu_seqlens_q = cu_q.data(),
                    .num_seqs = num_seqs,
                    .heads = d.heads,
                    .softmax_scale = scale,
                    .out = o_lat.data(),
                    .out_token_stride = d.heads * d.lora,
                    .out_head_stride = d.lora};
  ASSERT_TRUE(backend->MlaDecodeAttention(p).ok());
  for (int64_t b = 0; b < num_seqs; ++b) {
    std::vector<float> got(c.q_lens[b] * d.heads * d.v);
    for (int64_t t = 0; t < c.q_lens[b]; ++t) {
      for (int64_t h = 0; h < d.heads; ++h) {
        const float* ol = o_lat.data() + ((cu_q[b] + t) * d.heads + h) * d.lora;
        for (int64_t i = 0; i < d.v; ++i) {
          double acc = 0;
          for (int64_t l = 0; l < d.lora; ++l) {
            acc += double(w_uv[(h * d.v + i) * d.lora + l]) * ol[l];
          }
          got[(t * d.heads + h) * d.v + i] = static_cast<float>(acc);
        }
      }
    }
    EXPECT_LT(RelativeError(got, want[b]), 1e-4) << "sequence " << b;
  }
}

TEST(MlaAttentionTest, AbsorbedDecodeEqualsPlainSmallBlocks) {
  CheckAbsorbedEqualsPlain({4, 12, 6, 10, 20}, {4, {1, 7, 13, 30}, {1, 1, 5, 30}}, 11);
}

TEST(MlaAttentionTest, AbsorbedDecodeEqualsPlainDefaultBlockSize) {
  CheckAbsorbedEqualsPlain({2, 16, 8, 12, 33}, {64, {63, 64, 65, 150}, {2, 1, 3, 17}}, 12);
}

TEST(MlaAttentionTest, CacheWriteSkipsPaddingAndRejectsSlotsPastTheEnd) {
  const int64_t width = 5;
  std::vector<float> pool(3 * 2 * width, 0.0f);
  PagedLatentCache cache{.data = pool.data(),
                         .num_blocks = 3,
                         .block_size = 2,
                         .block_stride = 2 * width,
                         .kv_lora_rank = 3,
                         .rope_dim = 2};
  const std::vector<float> latent = {1, 2, 3, 4, 5, 6}, k_pe = {7, 8, 9, 10};
  std::vector<int64_t> slots = {5, -1};
  auto backend = MakeCpuReferenceBackend();
  ASSERT_TRUE(backend
                  ->KvCacheWrite({.latent = latent.data(),
                                  .k_pe = k_pe.data(),
                                  .slot_mapping = slots.data(),
                                  .rows = 2,
                                  .cache = cache})
                  .ok());
  const std::vector<float> row(pool.begin() + 5 * width, pool.begin() + 6 * width);
  EXPECT_EQ(row, (std::vector<float>{1, 2, 3, 7, 8}));
  EXPECT_EQ(std::count(pool.begin(), pool.end(), 0.0f), 5 * width);
  slots = {6, 0};
  EXPECT_EQ(backend
                ->KvCacheWrite({.latent = latent.data(),
                                .k_pe = k_pe.data(),
                                .slot_mapping = slots.data(),
                                .rows = 2,
                                .cache = cache})
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MlaAttentionTest, DecodeRejectsBlocksOutsideTheCache) {
  std::vector<float> pool(2 * 4 * 3, 0.0f), q(3), out(2);
  PagedLatentCache cache{.data = pool.data(),
                         .num_blocks = 2,
                         .block_size = 4,
                         .block_stride = 12,
                         .kv_lora_rank = 2,
                         .rope_dim = 1};
  const std::vector<int32_t> table = {1, 2}, kv_lens = {5}, cu_q = {0, 1};
  MlaDecodeParams p{.q = q.data(),
                    .q_token_stride = 3,
                    .q_head_stride = 3,
                    .cache = cache,
                    .block_tables = table.data(),
                    .block_table_stride = 2,
                    .kv_lens = kv_lens.data(),
                    .cu_seqlens_q = cu_q.data(),
                    .num_seqs = 1,
                    .heads = 1,
                    .out = out.data(),
                    .out_token_stride = 2,
                    .out_head_stride = 2};
  EXPECT_EQ(MakeCpuReferenceBackend()->MlaDecodeAttention(p).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace r2

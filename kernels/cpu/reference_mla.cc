// Reference multi-head latent attention: plain prefill form, paged latent cache write, and the
// absorbed form reading the paged cache.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

// Checks cu_seqlens (starts at 0, non-decreasing) and returns the sequence owning each row.
absl::Status RowsToSequences(const std::string& op, const int32_t* cu, int64_t num_seqs,
                             std::vector<int32_t>* seq_of_row) {
  if (num_seqs < 0 || (num_seqs > 0 && cu == nullptr)) return Invalid(op, "null cu_seqlens");
  seq_of_row->clear();
  if (num_seqs == 0) return absl::OkStatus();
  if (cu[0] != 0) return Invalid(op, "cu_seqlens must start at 0");
  for (int64_t b = 0; b < num_seqs; ++b) {
    if (cu[b + 1] < cu[b]) return Invalid(op, "cu_seqlens must be non-decreasing");
    seq_of_row->insert(seq_of_row->end(), cu[b + 1] - cu[b], static_cast<int32_t>(b));
  }
  return absl::OkStatus();
}

// In place: scores[0..n) -> softmax probabilities (max-subtracted, float32).
void Softmax(float* scores, int64_t n) {
  const float max = *std::max_element(scores, scores + n);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += scores[i] = std::exp(scores[i] - max);
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) scores[i] *= inv;
}

float Dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

absl::Status CheckCache(const std::string& op, const PagedLatentCache& c) {
  if (c.data == nullptr || c.num_blocks <= 0 || c.block_size <= 0 || c.kv_lora_rank <= 0 ||
      c.rope_dim < 0) {
    return Invalid(op, "empty or malformed cache");
  }
  if (c.dtype != KvCacheDType::kFloat32 && c.dtype != KvCacheDType::kBF16 &&
      c.dtype != KvCacheDType::kFp8E4M3) {
    return Invalid(op, "unknown cache dtype");
  }
  if (c.block_stride < c.block_size * c.row_words()) {
    return Invalid(op, "cache block_stride smaller than one block");
  }
  return absl::OkStatus();
}

// The stored row of `slot`, in the cache's format.
float* StoredRow(const PagedLatentCache& c, int64_t slot) {
  return c.data + (slot / c.block_size) * c.block_stride + (slot % c.block_size) * c.row_words();
}

// Position `pos` of a sequence, decoded to float32 into `buf` (row_width() values).
const float* CacheRow(const PagedLatentCache& c, const int32_t* block_table, int64_t pos,
                      float* buf) {
  const int64_t slot = block_table[pos / c.block_size] * c.block_size + pos % c.block_size;
  DecodeKvCacheRow(c.dtype, c.kv_lora_rank, c.rope_dim, StoredRow(c, slot), buf);
  return buf;
}

}  // namespace

absl::Status MlaPrefillAttention(const MlaPrefillParams& p) {
  constexpr char kOp[] = "MlaPrefillAttention";
  if (p.heads <= 0 || p.nope_dim < 0 || p.rope_dim < 0 || p.v_dim <= 0) {
    return Invalid(kOp, "bad head dimensions");
  }
  std::vector<int32_t> seq_of_row;
  if (absl::Status s = RowsToSequences(kOp, p.cu_seqlens_q, p.num_seqs, &seq_of_row); !s.ok()) {
    return s;
  }
  std::vector<int32_t> unused;
  if (absl::Status s = RowsToSequences(kOp, p.cu_seqlens_k, p.num_seqs, &unused); !s.ok()) {
    return s;
  }
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    if (p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] > p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b]) {
      return Invalid(kOp, "a sequence has more queries than keys");
    }
  }
  const int64_t rows = static_cast<int64_t>(seq_of_row.size());
  if (rows == 0) return absl::OkStatus();
  if (!p.q || !p.k_nope || !p.k_pe || !p.v || !p.out) return Invalid(kOp, "null tensor");
  const int64_t work = rows * p.heads *
                       (p.cu_seqlens_k[p.num_seqs] / std::max<int64_t>(p.num_seqs, 1)) *
                       (p.nope_dim + p.rope_dim + p.v_dim);
#pragma omp parallel if (work >= kParallelWork)
  {
    std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t h = 0; h < p.heads; ++h) {
        const int32_t b = seq_of_row[t];
        const int64_t q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
        const int64_t k0 = p.cu_seqlens_k[b], k_len = p.cu_seqlens_k[b + 1] - k0;
        const int64_t visible = k_len - q_len + (t - p.cu_seqlens_q[b]) + 1;
        const float* q = p.q + t * p.q_token_stride + h * p.q_head_stride;
        scores.resize(visible);
        for (int64_t s = 0; s < visible; ++s) {
          const int64_t k = k0 + s;
          const float* kn = p.k_nope + k * p.k_nope_token_stride + h * p.k_nope_head_stride;
          const float* kp = p.k_pe + k * p.k_pe_token_stride;
          scores[s] =
              p.softmax_scale * (Dot(q, kn, p.nope_dim) + Dot(q + p.nope_dim, kp, p.rope_dim));
        }
        Softmax(scores.data(), visible);
        float* out = p.out + t * p.out_token_stride + h * p.out_head_stride;
        std::fill(out, out + p.v_dim, 0.0f);
        for (int64_t s = 0; s < visible; ++s) {
          const float* v = p.v + (k0 + s) * p.v_token_stride + h * p.v_head_stride;
          for (int64_t d = 0; d < p.v_dim; ++d) out[d] += scores[s] * v[d];
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status KvCacheWrite(const KvCacheWriteParams& p) {
  constexpr char kOp[] = "KvCacheWrite";
  if (absl::Status s = CheckCache(kOp, p.cache); !s.ok()) return s;
  if (p.rows < 0) return Invalid(kOp, "rows must be >= 0");
  if (p.rows == 0) return absl::OkStatus();
  if (!p.latent || !p.k_pe || !p.slot_mapping) return Invalid(kOp, "null tensor");
  const PagedLatentCache& c = p.cache;
  const int64_t num_slots = c.num_blocks * c.block_size;
  for (int64_t i = 0; i < p.rows; ++i) {
    if (p.slot_mapping[i] >= num_slots) {
      return Invalid(
          kOp, absl::StrCat("slot ", p.slot_mapping[i], " past the cache (", num_slots, " slots)"));
    }
  }
  const int64_t ls = Stride(p.latent_stride, c.kv_lora_rank);
  const int64_t ps = Stride(p.k_pe_stride, c.rope_dim);
  for (int64_t i = 0; i < p.rows; ++i) {
    const int64_t slot = p.slot_mapping[i];
    if (slot < 0) continue;
    EncodeKvCacheRow(c.dtype, c.kv_lora_rank, c.rope_dim, p.latent + i * ls, p.k_pe + i * ps,
                     StoredRow(c, slot));
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckDecode(const MlaDecodeParams& p, const std::vector<int32_t>& seq_of_row) {
  constexpr char kOp[] = "MlaDecodeAttention";
  const PagedLatentCache& c = p.cache;
  if (p.heads <= 0) return Invalid(kOp, "heads must be > 0");
  if (p.num_seqs > 0 && (!p.kv_lens || !p.block_tables)) return Invalid(kOp, "null metadata");
  if (!seq_of_row.empty() && (!p.q || !p.out)) return Invalid(kOp, "null q or out");
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    const int64_t q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b], kv_len = p.kv_lens[b];
    if (kv_len < q_len) return Invalid(kOp, "kv_len shorter than the queries");
    if (kv_len > p.block_table_stride * c.block_size) {
      return Invalid(kOp, absl::StrCat("kv_len ", kv_len, " exceeds the block table"));
    }
    const int64_t blocks = (kv_len + c.block_size - 1) / c.block_size;
    for (int64_t i = 0; i < blocks; ++i) {
      const int32_t block = p.block_tables[b * p.block_table_stride + i];
      if (block < 0 || block >= c.num_blocks) {
        return Invalid(kOp, absl::StrCat("block ", block, " not in [0, ", c.num_blocks, ")"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MlaDecodeAttention(const MlaDecodeParams& p) {
  constexpr char kOp[] = "MlaDecodeAttention";
  if (absl::Status s = CheckCache(kOp, p.cache); !s.ok()) return s;
  std::vector<int32_t> seq_of_row;
  if (absl::Status s = RowsToSequences(kOp, p.cu_seqlens_q, p.num_seqs, &seq_of_row); !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDecode(p, seq_of_row); !s.ok()) return s;
  const PagedLatentCache& c = p.cache;
  const int64_t rows = static_cast<int64_t>(seq_of_row.size()), width = c.row_width();
  int64_t kv_total = 0;
  for (int64_t b = 0; b < p.num_seqs; ++b) kv_total += p.kv_lens[b];
  const int64_t work = rows * p.heads * (kv_total / std::max<int64_t>(p.num_seqs, 1)) * 2 * width;
#pragma omp parallel if (work >= kParallelWork)
  {
    std::vector<float> scores, row(width);
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t h = 0; h < p.heads; ++h) {
        const int32_t b = seq_of_row[t];
        const int64_t q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
        const int64_t visible = p.kv_lens[b] - q_len + (t - p.cu_seqlens_q[b]) + 1;
        const int32_t* table = p.block_tables + b * p.block_table_stride;
        const float* q = p.q + t * p.q_token_stride + h * p.q_head_stride;
        scores.resize(visible);
        for (int64_t s = 0; s < visible; ++s) {
          scores[s] = p.softmax_scale * Dot(q, CacheRow(c, table, s, row.data()), width);
        }
        Softmax(scores.data(), visible);
        float* out = p.out + t * p.out_token_stride + h * p.out_head_stride;
        std::fill(out, out + c.kv_lora_rank, 0.0f);
        for (int64_t s = 0; s < visible; ++s) {
          const float* latent = CacheRow(c, table, s, row.data());
          for (int64_t d = 0; d < c.kv_lora_rank; ++d) out[d] += scores[s] * latent[d];
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace r2::cpu

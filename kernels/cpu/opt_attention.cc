// Multi-head latent attention for the optimized CPU backend.
//  - Decode (absorbed, paged): every head of a token shares one key per position, so a group of
//    heads reads each cache row once (straight from its block) for all of the group's scores and
//    again for the weighted sum of latents. A bf16 or fp8 row is decoded to float32 once per
//    read into a thread-local row, shared by as many heads as still leave work for every thread
//    (at least kDecodedHeadGroup), so the decode is amortized over the heads.
// Work items (token, head group) are spread over the backend's thread pool. Prefill attention is
// opt_prefill_attention.cc (on the packed GEMM).
#include <algorithm>
#include <limits>

#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

constexpr int64_t kHeadGroup = 4;  // decode heads sharing each cache row load
// Fewest decode heads sharing each decoded row of a bf16 / fp8 cache.
constexpr int64_t kDecodedHeadGroup = 16;
constexpr int64_t kRowChunk = 32;  // cache rows loaded (decoded) at a time

// cu starts at 0 and never decreases.
bool CuSeqlensOk(const int32_t* cu, int64_t num_seqs) {
  if (num_seqs < 0 || (num_seqs > 0 && cu == nullptr)) return false;
  if (num_seqs == 0) return true;
  if (cu[0] != 0) return false;
  for (int64_t b = 0; b < num_seqs; ++b) {
    if (cu[b + 1] < cu[b]) return false;
  }
  return true;
}

// The sequence of each query row, in a thread-local buffer.
const int32_t* SequenceOfRow(const int32_t* cu, int64_t num_seqs) {
  thread_local std::vector<int32_t> seq_of_row;
  const int64_t rows = num_seqs > 0 ? cu[num_seqs] : 0;
  if (static_cast<int64_t>(seq_of_row.size()) < rows) seq_of_row.resize(rows);
  for (int64_t b = 0; b < num_seqs; ++b) {
    for (int32_t t = cu[b]; t < cu[b + 1]; ++t) seq_of_row[t] = static_cast<int32_t>(b);
  }
  return seq_of_row.data();
}

// scores[0, n) -> softmax probabilities.
void Softmax(const SimdKernels& k, float* scores, int64_t n) {
  float max = scores[0];
  for (int64_t i = 1; i < n; ++i) max = scores[i] > max ? scores[i] : max;
  const float inv = 1.0f / k.exp_sub_sum(scores, max, n);
  for (int64_t i = 0; i < n; ++i) scores[i] *= inv;
}

bool DecodeArgsOk(const MlaDecodeParams& p) {
  const PagedLatentCache& c = p.cache;
  if (c.data == nullptr || c.num_blocks <= 0 || c.block_size <= 0 || c.kv_lora_rank <= 0 ||
      c.rope_dim < 0 || c.block_stride < c.block_size * c.row_words()) {
    return false;
  }
  if (c.dtype != KvCacheDType::kFloat32 && c.dtype != KvCacheDType::kBF16 &&
      c.dtype != KvCacheDType::kFp8E4M3) {
    return false;
  }
  if (!CuSeqlensOk(p.cu_seqlens_q, p.num_seqs) || p.heads <= 0) return false;
  if (p.num_seqs > 0 && (!p.kv_lens || !p.block_tables)) return false;
  if (p.num_seqs > 0 && p.cu_seqlens_q[p.num_seqs] > 0 && (!p.q || !p.out)) return false;
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    const int64_t q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b], kv_len = p.kv_lens[b];
    if (kv_len < q_len || kv_len > p.block_table_stride * c.block_size) return false;
    const int64_t blocks = (kv_len + c.block_size - 1) / c.block_size;
    for (int64_t i = 0; i < blocks; ++i) {
      const int32_t block = p.block_tables[b * p.block_table_stride + i];
      if (block < 0 || block >= c.num_blocks) return false;
    }
  }
  return true;
}

// Heads per work item over `rows` query rows: as many as still give every thread two items, so
// that a sequence's rows are read from memory by fewer items (a decode batch of 8: one item per
// token for all 16 heads, its kHeadGroup subgroups reusing each chunk of rows from cache).
// Float32 rows are read in place, at least kHeadGroup heads an item; a decoded format shares each
// decoded row among at least kDecodedHeadGroup (each item decodes every row of its sequence
// twice).
int64_t DecodeHeadGroup(const MlaDecodeParams& p, int64_t rows) {
  const int64_t items_per_row = (2 * CpuThreadPool::Get().threads() + rows - 1) / rows;
  const int64_t group = (p.heads + items_per_row - 1) / items_per_row;
  return std::max(group, p.cache.dtype == KvCacheDType::kFloat32 ? kHeadGroup : kDecodedHeadGroup);
}

// Heads [h0, h0 + group) of query row t. The sequence's rows are taken kRowChunk at a time (in
// place for float32, else decoded into a thread-local chunk), and each chunk serves every
// kHeadGroup-head subgroup while it is in cache.
void DecodeItem(const SimdKernels& k, const MlaDecodeParams& p, const int32_t* seq_of_row,
                int64_t t, int64_t h0, int64_t group) {
  const PagedLatentCache& c = p.cache;
  const int64_t width = c.row_width(), lora = c.kv_lora_rank, words = c.row_words();
  const int64_t heads = std::min(group, p.heads - h0);
  const int32_t b = seq_of_row[t];
  const int64_t q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
  const int64_t visible = p.kv_lens[b] - q_len + (t - p.cu_seqlens_q[b]) + 1;
  const int32_t* table = p.block_tables + b * p.block_table_stride;
  const float* q = p.q + t * p.q_token_stride + h0 * p.q_head_stride;
  const bool stored_f32 = c.dtype == KvCacheDType::kFloat32;
  float* scores = ThreadScratch(0, heads * visible);
  float* decoded = stored_f32 ? nullptr : ThreadScratch(1, kRowChunk * width);
  const float* rows[kRowChunk];
  // rows[i] = position s0 + i's row as float32, for i < n.
  auto load = [&](int64_t s0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = s0 + i;
      const float* stored =
          c.data + table[s / c.block_size] * c.block_stride + (s % c.block_size) * words;
      if (stored_f32) {
        rows[i] = stored;
      } else {
        DecodeKvCacheRow(c.dtype, lora, c.rope_dim, stored, decoded + i * width);
        rows[i] = decoded + i * width;
      }
    }
  };
  // The stored rows of positions [s0, s0 + n), requested into cache while the chunk before them
  // is scored (they come from memory: a decode step streams far more weights than caches hold).
  const int64_t row_bytes = words * 4;
  auto prefetch = [&](int64_t s0, int64_t n) {
    for (int64_t s = s0; s < s0 + n; ++s) {
      const char* stored = reinterpret_cast<const char*>(
          c.data + table[s / c.block_size] * c.block_stride + (s % c.block_size) * words);
      for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(stored + b, 0, 3);
    }
  };
  for (int64_t s0 = 0; s0 < visible; s0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, visible - s0);
    load(s0, n);
    prefetch(s0 + n, std::min(kRowChunk, visible - s0 - n));
    for (int64_t g = 0; g < heads; g += kHeadGroup) {
      const int64_t gh = std::min(kHeadGroup, heads - g);
      k.dot_rows(rows, n, q + g * p.q_head_stride, p.q_head_stride, gh, width, p.softmax_scale,
                 scores + g * visible + s0, visible);
    }
  }
  for (int64_t h = 0; h < heads; ++h) Softmax(k, scores + h * visible, visible);
  float* out = p.out + t * p.out_token_stride + h0 * p.out_head_stride;
  for (int64_t h = 0; h < heads; ++h) std::fill_n(out + h * p.out_head_stride, lora, 0.0f);
  for (int64_t s0 = 0; s0 < visible; s0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, visible - s0);
    load(s0, n);
    for (int64_t g = 0; g < heads; g += kHeadGroup) {
      const int64_t gh = std::min(kHeadGroup, heads - g);
      k.axpy_rows(rows, n, scores + g * visible + s0, visible, gh, lora,
                  out + g * p.out_head_stride, p.out_head_stride);
    }
  }
}

}  // namespace

absl::Status OptMlaDecodeAttention(const SimdKernels& k, const MlaDecodeParams& p) {
  if (!DecodeArgsOk(p)) return MlaDecodeAttention(p);
  const int64_t rows = p.num_seqs > 0 ? p.cu_seqlens_q[p.num_seqs] : 0;
  if (rows == 0) return absl::OkStatus();
  const int32_t* seq_of_row = SequenceOfRow(p.cu_seqlens_q, p.num_seqs);
  int64_t kv_total = 0;
  for (int64_t b = 0; b < p.num_seqs; ++b) kv_total += p.kv_lens[b];
  const int64_t group = DecodeHeadGroup(p, rows);
  const int64_t groups = (p.heads + group - 1) / group;
  const int64_t work =
      rows * p.heads * (kv_total / std::max<int64_t>(p.num_seqs, 1)) * 2 * p.cache.row_width();
  CpuThreadPool::Get().ParallelFor(
      rows * groups,
      [&](int64_t item) {
        DecodeItem(k, p, seq_of_row, item / groups, (item % groups) * group, group);
      },
      work >= kOptParallelWork);
  return absl::OkStatus();
}

}  // namespace r2::cpu

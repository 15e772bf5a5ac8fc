// Multi-head latent attention for the optimized CPU backend.
//  - Decode (absorbed, paged): every head of a token shares one key per position, so a group of
//    heads reads each cache row once (straight from its block) for all of the group's scores and
//    again for the weighted sum of latents. A bf16 or fp8 row is decoded to float32 once per
//    read into a thread-local row, shared by as many heads as still leave work for every thread
//    (at least kDecodedHeadGroup), so the decode is amortized over the heads.
//  - Prefill (plain): tiles of consecutive queries of one sequence and head share each loaded key
//    and value row.
// Work items ((token, head group) or (head, query tile)) are spread over OpenMP threads.
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
constexpr int64_t kQueryTile = 4;  // prefill queries sharing each key/value row load

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

// Heads per work item over `rows` query rows. Float32 rows are read in place by groups of
// kHeadGroup; a decoded format shares each decoded row among as many heads as still give every
// thread two items (each item decodes every row of its sequence twice).
int64_t DecodeHeadGroup(const MlaDecodeParams& p, int64_t rows) {
  if (p.cache.dtype == KvCacheDType::kFloat32) return kHeadGroup;
  const int64_t items_per_row = (2 * CpuThreadPool::Get().threads() + rows - 1) / rows;
  const int64_t group = (p.heads + items_per_row - 1) / items_per_row;
  return std::max(group, kDecodedHeadGroup);
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
  for (int64_t s0 = 0; s0 < visible; s0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, visible - s0);
    load(s0, n);
    for (int64_t g = 0; g < heads; g += kHeadGroup) {
      const int64_t gh = std::min(kHeadGroup, heads - g);
      for (int64_t i = 0; i < n; ++i) {
        k.dot_many(rows[i], q + g * p.q_head_stride, p.q_head_stride, gh, width, p.softmax_scale,
                   scores + g * visible + s0 + i, visible);
      }
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
      for (int64_t i = 0; i < n; ++i) {
        k.axpy_many(rows[i], scores + g * visible + s0 + i, visible, gh, lora,
                    out + g * p.out_head_stride, p.out_head_stride);
      }
    }
  }
}

bool PrefillArgsOk(const MlaPrefillParams& p) {
  if (p.heads <= 0 || p.nope_dim < 0 || p.rope_dim < 0 || p.v_dim <= 0) return false;
  if (!CuSeqlensOk(p.cu_seqlens_q, p.num_seqs) || !CuSeqlensOk(p.cu_seqlens_k, p.num_seqs)) {
    return false;
  }
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    if (p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] > p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b]) {
      return false;
    }
  }
  const int64_t rows = p.num_seqs > 0 ? p.cu_seqlens_q[p.num_seqs] : 0;
  return rows == 0 || (p.q && p.k_nope && p.k_pe && p.v && p.out);
}

// Queries [t0, t0 + n) of sequence b, head h.
void PrefillTile(const SimdKernels& k, const MlaPrefillParams& p, int64_t b, int64_t h, int64_t t0,
                 int64_t n) {
  const int64_t q0 = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q0;
  const int64_t k0 = p.cu_seqlens_k[b], k_len = p.cu_seqlens_k[b + 1] - k0;
  // Query t sees keys [0, k_len - q_len + (t - q0) + 1).
  const int64_t first_visible = k_len - q_len + (t0 - q0) + 1;
  const int64_t last_visible = first_visible + n - 1;
  float* scores = ThreadScratch(0, n * last_visible);
  for (int64_t s = 0; s < last_visible; ++s) {
    const float* kn = p.k_nope + (k0 + s) * p.k_nope_token_stride + h * p.k_nope_head_stride;
    const float* kp = p.k_pe + (k0 + s) * p.k_pe_token_stride;
    const int64_t c0 = std::max<int64_t>(0, s - first_visible + 1);  // first query seeing s
    const float* q = p.q + (t0 + c0) * p.q_token_stride + h * p.q_head_stride;
    float pe[kQueryTile];
    k.dot_many(kn, q, p.q_token_stride, n - c0, p.nope_dim, p.softmax_scale,
               scores + c0 * last_visible + s, last_visible);
    k.dot_many(kp, q + p.nope_dim, p.q_token_stride, n - c0, p.rope_dim, p.softmax_scale, pe, 1);
    for (int64_t c = c0; c < n; ++c) scores[c * last_visible + s] += pe[c - c0];
  }
  for (int64_t c = 0; c < n; ++c) Softmax(k, scores + c * last_visible, first_visible + c);
  float* out = p.out + t0 * p.out_token_stride + h * p.out_head_stride;
  for (int64_t c = 0; c < n; ++c) std::fill_n(out + c * p.out_token_stride, p.v_dim, 0.0f);
  for (int64_t s = 0; s < last_visible; ++s) {
    const float* v = p.v + (k0 + s) * p.v_token_stride + h * p.v_head_stride;
    const int64_t c0 = std::max<int64_t>(0, s - first_visible + 1);
    k.axpy_many(v, scores + c0 * last_visible + s, last_visible, n - c0, p.v_dim,
                out + c0 * p.out_token_stride, p.out_token_stride);
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

absl::Status OptMlaPrefillAttention(const SimdKernels& k, const MlaPrefillParams& p) {
  if (!PrefillArgsOk(p)) return MlaPrefillAttention(p);
  const int64_t rows = p.num_seqs > 0 ? p.cu_seqlens_q[p.num_seqs] : 0;
  if (rows == 0) return absl::OkStatus();
  // Items: (sequence, query tile) pairs times heads, tiles never crossing a sequence.
  thread_local std::vector<int64_t> tiles;  // (sequence, first query) pairs
  tiles.clear();
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    for (int64_t t = p.cu_seqlens_q[b]; t < p.cu_seqlens_q[b + 1]; t += kQueryTile) {
      tiles.push_back(b);
      tiles.push_back(t);
    }
  }
  const int64_t num_tiles = static_cast<int64_t>(tiles.size()) / 2;
  const int64_t* tile_data = tiles.data();
  const int64_t work = rows * p.heads *
                       (p.cu_seqlens_k[p.num_seqs] / std::max<int64_t>(p.num_seqs, 1)) *
                       (p.nope_dim + p.rope_dim + p.v_dim);
  CpuThreadPool::Get().ParallelFor(
      num_tiles * p.heads,
      [&](int64_t item) {
        const int64_t tile = item / p.heads, h = item % p.heads;
        const int64_t b = tile_data[2 * tile], t0 = tile_data[2 * tile + 1];
        const int64_t n = std::min<int64_t>(kQueryTile, p.cu_seqlens_q[b + 1] - t0);
        PrefillTile(k, p, b, h, t0, n);
      },
      work >= kOptParallelWork);
  return absl::OkStatus();
}

}  // namespace r2::cpu

// Multi-head latent attention for the optimized CPU backend.
//  - Decode (absorbed, paged): every head of a token shares one key per position, so a work item
//    takes a token's heads together with the heads in the vector lanes: each cache row value is
//    broadcast once against all the heads' queries (transposed into lanes), the softmax runs on
//    whole head vectors, and the weighted sum of latents reads each row once per four heads. A
//    bf16 or fp8 row is decoded to float32 once per pass into a thread-local chunk.
//  - Few query rows (a batch of one): a token's positions are split over several items, each
//    keeping its softmax maximum and sum, merged after (the log-sum-exp combination), so every
//    thread has work without splitting the heads (which would leave lanes empty).
// Prefill attention is opt_prefill_attention.cc (on the packed GEMM).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

// Most heads a decode item takes (its query vectors and scores stay in L1/L2 beside a chunk).
constexpr int64_t kMaxHeadGroup = 64;
constexpr int64_t kRowChunk = 32;      // cache rows loaded (decoded) at a time
constexpr int64_t kMinSplitRows = 32;  // fewest positions a split of a token's positions takes
constexpr int64_t kAxpyHeads = 4;      // heads per weighted-sum pass over a chunk
constexpr int64_t kMaxSplits = 16;     // most parts a token's positions are split into

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

// One decode work item: heads [h0, h0 + group) of query row t over its positions in split
// `split` of `splits`. With one split, writes the output; otherwise the split's own attention
// output to `partial` ([heads, lora]) and each head's score maximum and exp-sum to partial_m /
// partial_l (a split with no positions: sum 0). `qt`: the heads' queries transposed, shared by
// the splits of a token (null: the item makes them).
struct DecodeTask {
  int64_t t = 0, h0 = 0, split = 0;
  const float* qt = nullptr;
  float* partial = nullptr;
  float* partial_m = nullptr;
  float* partial_l = nullptr;
};

// The heads' queries with the heads in the lanes (see transpose_heads).
void TransposeQueries(const SimdKernels& k, const MlaDecodeParams& p, int64_t t, int64_t h0,
                      int64_t heads, int64_t cols, float* qt) {
  k.transpose_heads(p.q + t * p.q_token_stride + h0 * p.q_head_stride, p.q_head_stride, heads,
                    p.cache.row_width(), qt, cols);
}

void DecodeItem(const SimdKernels& k, const MlaDecodeParams& p, const int32_t* seq_of_row,
                int64_t group, int64_t splits, const DecodeTask& task) {
  const PagedLatentCache& c = p.cache;
  const int64_t width = c.row_width(), lora = c.kv_lora_rank, words = c.row_words();
  const int64_t t = task.t, h0 = task.h0;
  const int64_t heads = std::min(group, p.heads - h0);
  const int64_t cols = (heads + k.lanes - 1) / k.lanes * k.lanes;
  const int32_t b = seq_of_row[t];
  const int64_t q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
  const int64_t visible = p.kv_lens[b] - q_len + (t - p.cu_seqlens_q[b]) + 1;
  // Whole register tiles of rows per split where the split leaves them.
  const int64_t per_split = ((visible + splits - 1) / splits + 7) / 8 * 8;
  const int64_t first = std::min(visible, task.split * per_split);
  const int64_t count = std::min(visible, first + per_split) - first;
  if (count == 0) {  // only when split: this part adds nothing
    std::fill_n(task.partial_l, heads, 0.0f);
    std::fill_n(task.partial_m, heads, 0.0f);
    return;
  }
  const int32_t* table = p.block_tables + b * p.block_table_stride;
  const bool stored_f32 = c.dtype == KvCacheDType::kFloat32;
  const float* qt = task.qt;
  if (qt == nullptr) {
    float* made = ThreadScratch(2, width * cols);
    TransposeQueries(k, p, t, h0, heads, cols, made);
    qt = made;
  }
  float* scores = ThreadScratch(0, count * cols);  // [count, cols]
  float* stats = ThreadScratch(3, 2 * cols);       // maxima, then sums
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
      for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(stored + off, 0, 3);
    }
  };
  const int64_t end = first + count;
  for (int64_t s0 = first; s0 < end; s0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, end - s0);
    load(s0, n);
    prefetch(s0 + n, std::min(kRowChunk, end - s0 - n));
    k.head_scores(rows, n, qt, cols, width, p.softmax_scale, scores + (s0 - first) * cols, cols);
  }
  float* max = stats;
  float* sum = stats + cols;
  k.softmax_columns(scores, count, cols, cols, max, sum);
  const bool split = splits > 1;
  float* out = split ? task.partial : p.out + t * p.out_token_stride + h0 * p.out_head_stride;
  const int64_t out_stride = split ? lora : p.out_head_stride;
  for (int64_t s0 = first; s0 < end; s0 += kRowChunk) {
    const int64_t n = std::min(kRowChunk, end - s0);
    load(s0, n);
    for (int64_t g = 0; g < heads; g += kAxpyHeads) {
      k.axpy_rows(rows, n, scores + (s0 - first) * cols + g, cols, std::min(kAxpyHeads, heads - g),
                  lora, out + g * out_stride, out_stride, /*accumulate=*/s0 != first);
    }
  }
  if (split) {
    std::copy_n(max, heads, task.partial_m);
    std::copy_n(sum, heads, task.partial_l);
  }
}

// Query row t's heads [h0, h0 + heads) from its splits' outputs, split s weighed by
// exp(m_s - max) * l_s / the sum of those (m_s, l_s: its score maximum and exp-sum).
void MergeSplits(const SimdKernels& k, const MlaDecodeParams& p, int64_t t, int64_t h0,
                 int64_t heads, int64_t splits, const DecodeTask* tasks) {
  const int64_t lora = p.cache.kv_lora_rank;
  const float* parts[kMaxSplits];
  float weight[kMaxSplits];
  for (int64_t h = 0; h < heads; ++h) {
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < splits; ++s) {
      if (tasks[s].partial_l[h] > 0.0f) top = std::max(top, tasks[s].partial_m[h]);
    }
    int64_t n = 0;
    float total = 0.0f;
    for (int64_t s = 0; s < splits; ++s) {
      if (!(tasks[s].partial_l[h] > 0.0f)) continue;
      weight[n] = std::exp(tasks[s].partial_m[h] - top) * tasks[s].partial_l[h];
      total += weight[n];
      parts[n++] = tasks[s].partial + h * lora;
    }
    for (int64_t i = 0; i < n; ++i) weight[i] /= total;
    k.axpy_rows(parts, n, weight, 1, 1, lora,
                p.out + t * p.out_token_stride + (h0 + h) * p.out_head_stride, 0,
                /*accumulate=*/false);
  }
}

}  // namespace

absl::Status OptKvCacheWrite(const KvCacheWriteParams& p) {
  const PagedLatentCache& c = p.cache;
  if (c.data != nullptr && c.block_size > 0 && c.num_blocks > 0 && p.slot_mapping != nullptr) {
    const int64_t num_slots = c.num_blocks * c.block_size, row_bytes = c.row_bytes();
    for (int64_t i = 0; i < p.rows; ++i) {
      const int64_t slot = p.slot_mapping[i];
      if (slot < 0 || slot >= num_slots) continue;
      const char* row = reinterpret_cast<const char*>(
          c.data + (slot / c.block_size) * c.block_stride + (slot % c.block_size) * c.row_words());
      for (int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(row + off, 1, 3);
    }
  }
  return KvCacheWrite(p);
}

absl::Status OptMlaDecodeAttention(const SimdKernels& k, const MlaDecodeParams& p) {
  if (!DecodeArgsOk(p)) return MlaDecodeAttention(p);
  const int64_t rows = p.num_seqs > 0 ? p.cu_seqlens_q[p.num_seqs] : 0;
  if (rows == 0) return absl::OkStatus();
  const int32_t* seq_of_row = SequenceOfRow(p.cu_seqlens_q, p.num_seqs);
  int64_t kv_total = 0;
  for (int64_t b = 0; b < p.num_seqs; ++b) kv_total += p.kv_lens[b];
  const int64_t kv_mean = kv_total / std::max<int64_t>(p.num_seqs, 1);
  const int64_t lora = p.cache.kv_lora_rank;
  // All of a token's heads in one item (up to kMaxHeadGroup), so the lanes are full. Where that
  // leaves fewer than two items per thread, each token's positions are split too.
  CpuThreadPool& pool = CpuThreadPool::Get();
  const int64_t group = std::min(p.heads, kMaxHeadGroup);
  const int64_t groups = (p.heads + group - 1) / group;
  const int64_t base = rows * groups, wanted = 2 * pool.threads();
  const int64_t splits =
      base >= wanted
          ? 1
          : std::clamp<int64_t>(std::min((wanted + base - 1) / base, kv_mean / kMinSplitRows), 1,
                                kMaxSplits);
  const int64_t items = base * splits;
  // Lanes of the largest item's heads (a last group of fewer heads uses fewer).
  const int64_t cols = (group + k.lanes - 1) / k.lanes * k.lanes, width = p.cache.row_width();
  thread_local std::vector<DecodeTask> tasks;
  thread_local std::vector<float> partial, queries;
  tasks.resize(items);
  const int64_t per_item = group * lora + 2 * group;
  if (splits > 1) {
    // Split: every item's output and statistics, and each (row, head group)'s transposed queries.
    if (static_cast<int64_t>(partial.size()) < items * per_item) partial.resize(items * per_item);
    if (static_cast<int64_t>(queries.size()) < base * width * cols) {
      queries.resize(base * width * cols);
    }
  }
  for (int64_t i = 0; i < items; ++i) {
    DecodeTask& task = tasks[i];
    const int64_t row_group = i / splits;
    task = {.t = row_group / groups, .h0 = (row_group % groups) * group, .split = i % splits};
    if (splits > 1) {
      float* own = partial.data() + i * per_item;
      task.partial = own;
      task.partial_m = own + group * lora;
      task.partial_l = task.partial_m + group;
      float* qt = queries.data() + row_group * width * cols;
      if (task.split == 0) {  // in the layout the items read: cols of this item's heads
        const int64_t heads = std::min(group, p.heads - task.h0);
        TransposeQueries(k, p, task.t, task.h0, heads, (heads + k.lanes - 1) / k.lanes * k.lanes,
                         qt);
      }
      task.qt = qt;
    }
  }
  const int64_t work = rows * p.heads * kv_mean * 2 * p.cache.row_width();
  const bool parallel = work >= kOptParallelWork;
  // The workers see their own thread_local vectors: they are handed the caller's tasks.
  const DecodeTask* task_list = tasks.data();
  pool.ParallelFor(
      items, [&](int64_t i) { DecodeItem(k, p, seq_of_row, group, splits, task_list[i]); },
      parallel);
  if (splits > 1) {
    for (int64_t g = 0; g < base; ++g) {
      const DecodeTask* first = &tasks[g * splits];
      MergeSplits(k, p, first->t, first->h0, std::min(group, p.heads - first->h0), splits, first);
    }
  }
  return absl::OkStatus();
}

}  // namespace r2::cpu

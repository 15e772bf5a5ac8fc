// Prefill attention (plain MLA form, causal within each sequence) on the packed-GEMM kernels of
// opt_gemm.h: per work item (sequence, head, block of up to 48 queries), the scores of the block
// against every key its last query sees are one GEMM (query rows broadcast against panels of the
// keys' nope+rope dims, transposed 2 vectors of keys at a time), then a row-wise causal softmax,
// then the softmax rows times V as a second GEMM (panels of V rows, 256 keys per block). Keys are
// read once per query block instead of once per 4 queries, and no score needs a horizontal sum.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

constexpr int64_t kQueryBlock = 48;  // queries per work item (four AVX-512 row tiles)
constexpr int64_t kKeyBlock = 256;   // keys per V panel

float* Grow(std::vector<float>& b, int64_t n) {
  if (static_cast<int64_t>(b.size()) < n) b.resize(n);
  return b.data();
}

bool CuSeqlensOk(const int32_t* cu, int64_t num_seqs) {
  if (num_seqs < 0 || (num_seqs > 0 && cu == nullptr)) return false;
  if (num_seqs == 0) return true;
  if (cu[0] != 0) return false;
  for (int64_t b = 0; b < num_seqs; ++b) {
    if (cu[b + 1] < cu[b]) return false;
  }
  return true;
}

bool ArgsOk(const MlaPrefillParams& p) {
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
void QueryBlock(const SimdKernels& k, const GemmKernels& g, const MlaPrefillParams& p, int64_t b,
                int64_t h, int64_t t0, int64_t n) {
  const int64_t q0 = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q0;
  const int64_t k0 = p.cu_seqlens_k[b], k_len = p.cu_seqlens_k[b + 1] - k0;
  // Query t0 + c sees keys [0, first_visible + c).
  const int64_t first_visible = k_len - q_len + (t0 - q0) + 1;
  const int64_t keys = first_visible + n - 1;
  const int64_t nr = g.panel, dq = p.nope_dim + p.rope_dim;
  const int64_t ss = (keys + nr - 1) / nr * nr;  // score row stride
  thread_local std::vector<float> score_buffer, panel_buffer;
  float* scores = Grow(score_buffer, n * ss);
  float* panel = Grow(panel_buffer, std::max(dq, kKeyBlock) * nr);
  const float* q = p.q + t0 * p.q_token_stride + h * p.q_head_stride;
  // Scores: panels of nr keys, [nope dims; rope dims] x keys; rows that see none of a panel's
  // keys skip it (their entries there are masked below).
  for (int64_t s0 = 0; s0 < keys; s0 += nr) {
    const int64_t m = std::min(nr, keys - s0);
    g.pack_f32(p.k_nope + (k0 + s0) * p.k_nope_token_stride + h * p.k_nope_head_stride,
               p.k_nope_token_stride, m, p.nope_dim, panel);
    g.pack_f32(p.k_pe + (k0 + s0) * p.k_pe_token_stride, p.k_pe_token_stride, m, p.rope_dim,
               panel + p.nope_dim * nr);
    const int64_t c0 = std::max<int64_t>(0, s0 - first_visible + 1);
    if (c0 >= n) break;
    g.panel_rows(q + c0 * p.q_token_stride, p.q_token_stride, n - c0, panel, dq, m,
                 scores + c0 * ss + s0, ss, false);
  }
  // Softmax of each query's visible scores; the rest of the row (up to `keys`) is zero.
  for (int64_t c = 0; c < n; ++c) {
    float* row = scores + c * ss;
    const int64_t visible = first_visible + c;
    for (int64_t s = 0; s < visible; ++s) row[s] *= p.softmax_scale;
    float max = row[0];
    for (int64_t s = 1; s < visible; ++s) max = row[s] > max ? row[s] : max;
    const float inv = 1.0f / k.exp_sub_sum(row, max, visible);
    for (int64_t s = 0; s < visible; ++s) row[s] *= inv;
    std::fill(row + visible, row + keys, 0.0f);
  }
  // out = P V over blocks of keys; the first block writes, later ones add.
  float* out = p.out + t0 * p.out_token_stride + h * p.out_head_stride;
  for (int64_t s0 = 0; s0 < keys; s0 += kKeyBlock) {
    const int64_t kc = std::min(kKeyBlock, keys - s0);
    const int64_t c0 = std::max<int64_t>(0, s0 - first_visible + 1);  // rows seeing key s0
    for (int64_t v0 = 0; v0 < p.v_dim; v0 += nr) {
      const int64_t m = std::min(nr, p.v_dim - v0);
      for (int64_t s = 0; s < kc; ++s) {
        const float* v = p.v + (k0 + s0 + s) * p.v_token_stride + h * p.v_head_stride + v0;
        float* d = panel + s * nr;
        std::memcpy(d, v, m * sizeof(float));
        std::fill(d + m, d + nr, 0.0f);
      }
      g.panel_rows(scores + c0 * ss + s0, ss, n - c0, panel, kc, m,
                   out + c0 * p.out_token_stride + v0, p.out_token_stride, s0 > 0);
    }
  }
}

}  // namespace

absl::Status GemmMlaPrefillAttention(const SimdKernels& k, const MlaPrefillParams& p) {
  if (!ArgsOk(p)) return MlaPrefillAttention(p);  // the reference's error
  const int64_t rows = p.num_seqs > 0 ? p.cu_seqlens_q[p.num_seqs] : 0;
  if (rows == 0) return absl::OkStatus();
  const GemmKernels& g = GemmKernelsFor(k.isa);
  // Items: (sequence, query block) pairs times heads, blocks never crossing a sequence.
  thread_local std::vector<int64_t> blocks;  // (sequence, first query) pairs
  blocks.clear();
  for (int64_t b = 0; b < p.num_seqs; ++b) {
    for (int64_t t = p.cu_seqlens_q[b]; t < p.cu_seqlens_q[b + 1]; t += kQueryBlock) {
      blocks.push_back(b);
      blocks.push_back(t);
    }
  }
  const int64_t num_blocks = static_cast<int64_t>(blocks.size()) / 2;
  const int64_t* block_data = blocks.data();
  const int64_t work = rows * p.heads *
                       (p.cu_seqlens_k[p.num_seqs] / std::max<int64_t>(p.num_seqs, 1)) *
                       (p.nope_dim + p.rope_dim + p.v_dim);
  CpuThreadPool::Get().ParallelFor(
      num_blocks * p.heads,
      [&](int64_t item) {
        // Heads outermost within a block: consecutive items share the block's queries.
        const int64_t i = item / p.heads, h = item % p.heads;
        const int64_t b = block_data[2 * i], t0 = block_data[2 * i + 1];
        const int64_t n = std::min<int64_t>(kQueryBlock, p.cu_seqlens_q[b + 1] - t0);
        QueryBlock(k, g, p, b, h, t0, n);
      },
      work >= kOptParallelWork);
  return absl::OkStatus();
}

}  // namespace r2::cpu

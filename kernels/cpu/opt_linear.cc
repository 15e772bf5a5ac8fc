// Linear for the optimized CPU backend: bf16/f32 weights are read straight into the register tiles
// of the per-instruction-set kernel; f16 and block-scaled fp8 rows are decoded (with their scales)
// a few at a time into a thread-local buffer first. Each thread owns a contiguous range of output
// features and reads its weights once per chunk of rows (all rows for decode-sized batches), so a
// step reads every weight once while a tile of rows reuses each load from registers.
#include <algorithm>
#include <array>

#include "kernels/cpu/opt_amx.h"
#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether the fast path takes p; if not, the reference op answers (with its error).
bool FastLinear(const LinearParams& p) {
  const WeightView& w = p.weight;
  if (w.integer_quantized()) return false;  // I8 / U4: the reference quantized Linear
  if (w.weight.data == nullptr || w.weight.shape.size() != 2 || p.rows < 0) return false;
  if (p.batch < 1 || (p.batch > 1 && w.weight.dtype == DType::kF8E4M3)) return false;
  if (p.rows > 0 && (p.x == nullptr || p.y == nullptr)) return false;
  if (w.out_features() < 0 || w.in_features() < 0) return false;
  if (w.weight.dtype == DType::kF8E4M3) {
    const TensorView& s = w.scale_inv;
    return w.block_out > 0 && w.block_in > 0 && s.data != nullptr && s.dtype == DType::kF32 &&
           s.shape == std::vector<int64_t>{CeilDiv(w.out_features(), w.block_out),
                                           CeilDiv(w.in_features(), w.block_in)};
  }
  return IsFloatStorage(w.weight.dtype) && !w.block_scaled();
}

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

// Rows [o0, o0 + n) of a block-scaled fp8 weight as float32 (scales applied).
void DecodeFp8Rows(const WeightView& w, int64_t o0, int64_t n, float* dst) {
  const std::array<float, 256>& table = Fp8Table();
  const int64_t in = w.in_features(), cols = w.scale_inv.shape[1];
  const auto* scales = static_cast<const float*>(w.scale_inv.data);
  for (int64_t o = o0; o < o0 + n; ++o) {
    const auto* q = static_cast<const uint8_t*>(w.weight.data) + o * in;
    const float* srow = scales + (o / w.block_out) * cols;
    float* d = dst + (o - o0) * in;
    for (int64_t j0 = 0, c = 0; j0 < in; j0 += w.block_in, ++c) {
      float scale;
      std::memcpy(&scale, srow + c, 4);  // scale_inv may be unaligned in a mapped file
      const int64_t j1 = std::min(in, j0 + w.block_in);
      for (int64_t j = j0; j < j1; ++j) d[j] = table[q[j]] * scale;
    }
  }
}

constexpr int64_t kDecodeRows = 8;  // f16/fp8 weight rows decoded at a time

// Linear over a transposed bf16/f32 weight (LinearParams::weight_transposed). A batch of at least
// one product per thread: each thread runs a contiguous range of whole products back to back,
// prefetching the next product's weights while it runs the current one (per-head products are
// only 16-64 KiB each; started cold, they streamed at about a third of the copy bandwidth).
// Otherwise each unit is a range of output features of one product.
void TransposedLinear(const SimdKernels& k, const LinearParams& p) {
  const WeightView& w = p.weight;
  const DType dtype = w.weight.dtype;
  const int64_t in = w.in_features(), out = w.out_features();
  const int64_t xs = Stride(p.x_stride, in), ys = Stride(p.y_stride, out);
  const int64_t elem = static_cast<int64_t>(DTypeSize(dtype));
  CpuThreadPool& pool = CpuThreadPool::Get();
  const int64_t threads = pool.threads();
  const bool parallel = threads > 1 && p.batch * p.rows * in * out >= kOptParallelWork;
  const auto* weights = static_cast<const uint8_t*>(w.weight.data);
  auto block = [&](int64_t b, int64_t o_begin, int64_t o_end) {
    return TransposedBlock{.x = p.x + b * p.x_batch_stride,
                           .x_stride = xs,
                           .rows = p.rows,
                           .w = weights + (b * p.weight_batch_stride + o_begin) * elem,
                           .w_stride = out,
                           .w_bf16 = dtype == DType::kBF16,
                           .in = in,
                           .outs = o_end - o_begin,
                           .y = p.y + b * p.y_batch_stride + o_begin,
                           .y_stride = ys,
                           .accumulate = p.accumulate};
  };
  if (p.batch >= threads) {
    const int64_t per_unit = CeilDiv(p.batch, threads);
    pool.ParallelFor(
        CeilDiv(p.batch, per_unit),
        [&](int64_t u) {
          const int64_t b1 = std::min(p.batch, (u + 1) * per_unit);
          for (int64_t b = u * per_unit; b < b1; ++b) {
            TransposedBlock tb = block(b, 0, out);
            if (b + 1 < b1) {
              tb.next = weights + (b + 1) * p.weight_batch_stride * elem;
              tb.next_bytes = in * out * elem;
            }
            k.transposed_block(tb);
          }
        },
        parallel);
    return;
  }
  // About four units per thread, each a multiple of 16 outputs.
  const int64_t per_product = CeilDiv(4 * threads, p.batch);
  const int64_t unit = std::max<int64_t>(16, CeilDiv(CeilDiv(out, per_product), 16) * 16);
  const int64_t units = CeilDiv(out, unit);
  pool.ParallelFor(
      p.batch * units,
      [&](int64_t u) {
        const int64_t b = u / units, o_begin = (u % units) * unit;
        k.transposed_block(block(b, o_begin, std::min(out, o_begin + unit)));
      },
      parallel);
}

}  // namespace

float* ThreadScratch(int slot, int64_t n) {
  thread_local std::array<std::vector<float>, 4> buffers;
  std::vector<float>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(n);
  return b.data();
}

absl::Status OptLinear(const SimdKernels& k, const LinearParams& p) {
  if (!FastLinear(p)) return Linear(p);
  const WeightView& w = p.weight;
  const DType dtype = w.weight.dtype;
  // Transposed: bf16 and f32 here; f16 (and the refusal of fp8) from the reference.
  if (p.weight_transposed && dtype != DType::kBF16 && dtype != DType::kF32) return Linear(p);
  if (p.rows == 0) return absl::OkStatus();
  const int64_t in = w.in_features(), out = w.out_features();
  if (out == 0) return absl::OkStatus();
  if (p.weight_transposed) {
    TransposedLinear(k, p);
    return absl::OkStatus();
  }
  if (p.rows >= kGemmMinRows) {
    GemmLinear(k, p);
    return absl::OkStatus();
  }
  const int64_t xs = Stride(p.x_stride, in), ys = Stride(p.y_stride, out);
  const int64_t elem = static_cast<int64_t>(DTypeSize(dtype));
  const bool direct = dtype == DType::kBF16 || dtype == DType::kF32;
  CpuThreadPool& pool = CpuThreadPool::Get();
  const int64_t threads = pool.threads();
  const bool parallel = threads > 1 && p.batch * p.rows * in * out >= kOptParallelWork;
  // Output features per work unit: a multiple of 16, about four units per thread over the whole
  // batch (a strided batch of 16 small per-head products is 16 units, not 16 x 8 of a few
  // microseconds each, whose claiming cost the two threads more than the products).
  const int64_t per_product = CeilDiv(4 * threads, p.batch);
  const int64_t unit = std::max<int64_t>(16, CeilDiv(CeilDiv(out, per_product), 16) * 16);
  const int64_t units = CeilDiv(out, unit), total = p.batch * units;
  // Rows per pass: the pass's x stays in L2 (about 256 KiB) while the weights stream by.
  const int64_t row_chunk = std::max<int64_t>(16, (int64_t{64} << 10) / std::max<int64_t>(in, 1));
  const auto* weights = static_cast<const uint8_t*>(w.weight.data);
  // bf16 on 5-15 rows where the machine has AMX: every product's x rows prepared for the tiles
  // once, shared by the threads; each unit's whole groups of 16 outputs run on the tiles. Every
  // product's weight rows must sit at the same offset from a 64-byte boundary (AmxLead).
  const int64_t lead = AmxLead(weights);
  const bool amx = dtype == DType::kBF16 && k.isa == CpuIsa::kAvx512 && AmxTakes(p.rows, in, out) &&
                   reinterpret_cast<uintptr_t>(weights) % 2 == 0 &&
                   (p.batch == 1 || p.weight_batch_stride * elem % 64 == 0) && AmxBf16Usable();
  const int64_t amx_elems = AmxPreparedElems(p.rows, in);
  uint16_t* xa = nullptr;
  if (amx) {
    // Split over the threads by ranges of chunks (disjoint bytes of xa): on one thread, the
    // preparation of 8 rows of 1024 took ~11 us of every such Linear while the others waited.
    xa = reinterpret_cast<uint16_t*>(ThreadScratch(2, CeilDiv(p.batch * amx_elems, 2)));
    const int64_t chunks = in / kAmxChunk;
    const int64_t per_item = std::max<int64_t>(4, CeilDiv(chunks, threads));
    const int64_t items = CeilDiv(chunks, per_item);
    pool.ParallelFor(
        p.batch * items,
        [&](int64_t i) {
          const int64_t b = i / items, c0 = (i % items) * per_item;
          AmxPrepareRows(p.x + b * p.x_batch_stride, xs, p.rows, in, lead, xa + b * amx_elems, c0,
                         std::min(chunks, c0 + per_item));
        },
        parallel);
  }
  // bf16: every product's x rows split into even/odd groups once, shared by the threads (with
  // AMX, only for the outputs after the last whole group of 16).
  const int64_t in_main = in / k.bf16_group * k.bf16_group;
  float* xp = nullptr;
  if (dtype == DType::kBF16 && in_main > 0 && (!amx || out % 16 != 0)) {
    xp = ThreadScratch(3, p.batch * p.rows * in_main);
    for (int64_t b = 0; b < p.batch; ++b) {
      k.pair_split(p.x + b * p.x_batch_stride, xs, p.rows, in, xp + b * p.rows * in_main);
    }
  }
  pool.ParallelFor(
      total,
      [&](int64_t u) {
        const int64_t b = u / units, o_begin = (u % units) * unit;
        const int64_t o_end = std::min(out, o_begin + unit);
        const float* x = p.x + b * p.x_batch_stride;
        float* y = p.y + b * p.y_batch_stride;
        const uint8_t* wb = weights + b * p.weight_batch_stride * elem;
        LinearBlock block{.x_stride = xs,
                          .xp_stride = in_main,
                          .w_row_bytes = in * elem,
                          .w_bf16 = dtype == DType::kBF16,
                          .in = in,
                          .y_stride = ys,
                          .accumulate = p.accumulate};
        if (amx) {
          const int64_t tiled = (o_end - o_begin) / 16 * 16;
          AmxLinearBlock(xa + b * amx_elems, p.rows, in, lead, wb + o_begin * in * elem, in * elem,
                         tiled, y + o_begin, ys, p.accumulate);
          if (o_begin + tiled == o_end) return;
          block.x = x;
          block.xp = xp + b * p.rows * in_main;
          block.rows = p.rows;
          block.w = wb + (o_begin + tiled) * in * elem;
          block.outs = o_end - o_begin - tiled;
          block.y = y + o_begin + tiled;
          k.linear_block(block);
          return;
        }
        if (direct) {
          for (int64_t r0 = 0; r0 < p.rows; r0 += row_chunk) {
            block.x = x + r0 * xs;
            if (xp != nullptr) block.xp = xp + (b * p.rows + r0) * in_main;
            block.rows = std::min(row_chunk, p.rows - r0);
            block.w = wb + o_begin * in * elem;
            block.outs = o_end - o_begin;
            block.y = y + r0 * ys + o_begin;
            k.linear_block(block);
          }
          return;
        }
        float* decoded = ThreadScratch(0, kDecodeRows * in);
        block.w_bf16 = false;
        block.w_row_bytes = in * 4;
        for (int64_t o0 = o_begin; o0 < o_end; o0 += kDecodeRows) {
          const int64_t n = std::min(kDecodeRows, o_end - o0);
          if (dtype == DType::kF8E4M3) {
            DecodeFp8Rows(w, o0, n, decoded);
          } else {
            k.decode_f16(wb + o0 * in * elem, decoded, n * in);
          }
          for (int64_t r0 = 0; r0 < p.rows; r0 += row_chunk) {
            block.x = x + r0 * xs;
            block.rows = std::min(row_chunk, p.rows - r0);
            block.w = reinterpret_cast<const uint8_t*>(decoded);
            block.outs = n;
            block.y = y + r0 * ys + o0;
            k.linear_block(block);
          }
        }
      },
      parallel);
  return absl::OkStatus();
}

}  // namespace r2::cpu

// Linear for the optimized CPU backend: bf16/f32 weights are read straight into the register tiles
// of the per-instruction-set kernel; f16 and block-scaled fp8 rows are decoded (with their scales)
// a few at a time into a thread-local buffer first. Each thread owns a contiguous range of output
// features and reads its weights once per chunk of rows (all rows for decode-sized batches), so a
// step reads every weight once while a tile of rows reuses each load from registers. A group of
// Linears on the same x (LinearGroup) prepares x once and cuts all its products' outputs into the
// units of one parallel loop, through the same unit runner as a single Linear.
#include <algorithm>
#include <array>
#include <span>

#include "absl/container/inlined_vector.h"
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

// One product of a Linear on the register or AMX tiles (not transposed, fewer than kGemmMinRows
// rows): its shapes and the path its outputs take.
struct LinearPlan {
  const LinearParams* p = nullptr;
  DType dtype = DType::kF32;
  int64_t in = 0, out = 0, xs = 0, ys = 0, elem = 0;
  bool amx = false;    // whole groups of 16 outputs on the AMX tiles
  bool split = false;  // some outputs on the register tiles read x split into even/odd pairs
  int64_t lead = 0;    // AmxLead of the weights (amx)
  int64_t groups = 0;  // groups of 16 outputs per product of the batch: the units' grain
};

LinearPlan PlanLinear(const SimdKernels& k, const LinearParams& p) {
  const WeightView& w = p.weight;
  LinearPlan plan{.p = &p, .dtype = w.weight.dtype, .in = w.in_features(), .out = w.out_features()};
  plan.xs = Stride(p.x_stride, plan.in);
  plan.ys = Stride(p.y_stride, plan.out);
  plan.elem = static_cast<int64_t>(DTypeSize(plan.dtype));
  plan.groups = CeilDiv(plan.out, 16);
  // bf16 on 5-15 rows where the machine has AMX. Every product's weight rows of a batch must sit
  // at the same offset from a 64-byte boundary (AmxLead).
  plan.lead = AmxLead(w.weight.data);
  plan.amx = plan.dtype == DType::kBF16 && k.isa == CpuIsa::kAvx512 &&
             AmxTakes(p.rows, plan.in, plan.out) &&
             reinterpret_cast<uintptr_t>(w.weight.data) % 2 == 0 &&
             (p.batch == 1 || p.weight_batch_stride * plan.elem % 64 == 0) && AmxBf16Usable();
  // With AMX, only the outputs after the last whole group of 16 run on the register tiles.
  plan.split =
      plan.dtype == DType::kBF16 && plan.in >= k.bf16_group && (!plan.amx || plan.out % 16 != 0);
  return plan;
}

// x prepared once for every product that reads it, per product of the batch.
struct PreparedX {
  const uint16_t* xa = nullptr;  // [batch][AmxPreparedElems(rows, in)]: the AMX B tiles
  int64_t xa_elems = 0;
  const float* xp = nullptr;  // [batch][rows][in_main]: the bf16 even/odd pair split
  int64_t in_main = 0;        // in rounded down to whole groups of k.bf16_group
};

// Prepares the x that `plans` read (all of one x, rows and in; the AMX ones of one lead).
PreparedX PrepareX(const SimdKernels& k, std::span<const LinearPlan> plans, bool parallel) {
  const LinearPlan& first = plans[0];
  const LinearParams& p = *first.p;
  const int64_t in = first.in, xs = first.xs;
  PreparedX px{.in_main = in / k.bf16_group * k.bf16_group};
  const auto amx = std::find_if(plans.begin(), plans.end(), [](const auto& q) { return q.amx; });
  const bool split = std::any_of(plans.begin(), plans.end(), [](const auto& q) { return q.split; });
  CpuThreadPool& pool = CpuThreadPool::Get();
  if (amx != plans.end()) {
    // Split over the threads by ranges of chunks (disjoint bytes of xa): on one thread, the
    // preparation of 8 rows of 1024 took ~11 us of every such Linear while the others waited.
    px.xa_elems = AmxPreparedElems(p.rows, in);
    auto* xa = reinterpret_cast<uint16_t*>(ThreadScratch(2, CeilDiv(p.batch * px.xa_elems, 2)));
    const int64_t chunks = in / kAmxChunk;
    const int64_t per_item = std::max<int64_t>(4, CeilDiv(chunks, pool.threads()));
    const int64_t items = CeilDiv(chunks, per_item);
    pool.ParallelFor(
        p.batch * items,
        [&](int64_t i) {
          const int64_t b = i / items, c0 = (i % items) * per_item;
          AmxPrepareRows(p.x + b * p.x_batch_stride, xs, p.rows, in, amx->lead,
                         xa + b * px.xa_elems, c0, std::min(chunks, c0 + per_item));
        },
        parallel);
    px.xa = xa;
  }
  if (split) {
    float* xp = ThreadScratch(3, p.batch * p.rows * px.in_main);
    for (int64_t b = 0; b < p.batch; ++b) {
      k.pair_split(p.x + b * p.x_batch_stride, xs, p.rows, in, xp + b * p.rows * px.in_main);
    }
    px.xp = xp;
  }
  return px;
}

// Outputs [o_begin, o_end) of product b of plan's batch (o_begin a multiple of 16), on the
// calling thread.
void RunOutputs(const SimdKernels& k, const LinearPlan& plan, const PreparedX& px, int64_t b,
                int64_t o_begin, int64_t o_end) {
  const LinearParams& p = *plan.p;
  const int64_t in = plan.in, elem = plan.elem;
  const float* x = p.x + b * p.x_batch_stride;
  float* y = p.y + b * p.y_batch_stride;
  const uint8_t* wb =
      static_cast<const uint8_t*>(p.weight.weight.data) + b * p.weight_batch_stride * elem;
  LinearBlock block{.x_stride = plan.xs,
                    .xp_stride = px.in_main,
                    .w_row_bytes = in * elem,
                    .w_bf16 = plan.dtype == DType::kBF16,
                    .in = in,
                    .y_stride = plan.ys,
                    .accumulate = p.accumulate};
  if (plan.amx) {
    const int64_t tiled = (o_end - o_begin) / 16 * 16;
    AmxLinearBlock(px.xa + b * px.xa_elems, p.rows, in, plan.lead, wb + o_begin * in * elem,
                   in * elem, tiled, y + o_begin, plan.ys, p.accumulate);
    if (o_begin + tiled == o_end) return;
    block.x = x;
    block.xp = px.xp + b * p.rows * px.in_main;
    block.rows = p.rows;
    block.w = wb + (o_begin + tiled) * in * elem;
    block.outs = o_end - o_begin - tiled;
    block.y = y + o_begin + tiled;
    k.linear_block(block);
    return;
  }
  // Rows per pass: the pass's x stays in L2 (about 256 KiB) while the weights stream by.
  const int64_t row_chunk = std::max<int64_t>(16, (int64_t{64} << 10) / std::max<int64_t>(in, 1));
  if (plan.dtype == DType::kBF16 || plan.dtype == DType::kF32) {
    for (int64_t r0 = 0; r0 < p.rows; r0 += row_chunk) {
      block.x = x + r0 * plan.xs;
      if (plan.split) block.xp = px.xp + (b * p.rows + r0) * px.in_main;
      block.rows = std::min(row_chunk, p.rows - r0);
      block.w = wb + o_begin * in * elem;
      block.outs = o_end - o_begin;
      block.y = y + r0 * plan.ys + o_begin;
      k.linear_block(block);
    }
    return;
  }
  float* decoded = ThreadScratch(0, kDecodeRows * in);
  block.w_bf16 = false;
  block.w_row_bytes = in * 4;
  for (int64_t o0 = o_begin; o0 < o_end; o0 += kDecodeRows) {
    const int64_t n = std::min(kDecodeRows, o_end - o0);
    if (plan.dtype == DType::kF8E4M3) {
      DecodeFp8Rows(p.weight, o0, n, decoded);
    } else {
      k.decode_f16(wb + o0 * in * elem, decoded, n * in);
    }
    for (int64_t r0 = 0; r0 < p.rows; r0 += row_chunk) {
      block.x = x + r0 * plan.xs;
      block.rows = std::min(row_chunk, p.rows - r0);
      block.w = reinterpret_cast<const uint8_t*>(decoded);
      block.outs = n;
      block.y = y + r0 * plan.ys + o0;
      k.linear_block(block);
    }
  }
}

// Work units per thread of a Linear's parallel loop.
constexpr int64_t kUnitsPerThread = 4;

// Runs every output of `plans` (products of one x: PrepareX's conditions) in one parallel loop.
// The groups of 16 outputs of every product of every plan's batch, laid end to end, are cut into
// at most kUnitsPerThread units per thread of (nearly) equal counts of groups, and at least one
// unit per product of a batch (a strided batch of 16 small per-head products is 16 units, not
// 16 x 8 of a few microseconds each, whose claiming cost the two threads more than the products);
// a unit that spans the end of one product runs the start of the next. (q_a + kv_a of the small
// model, 24 + 18 groups on two threads: 8 units of 5-6 groups, not 7 of 6 run 4 against 3.)
void RunPlans(const SimdKernels& k, std::span<const LinearPlan> plans) {
  CpuThreadPool& pool = CpuThreadPool::Get();
  const int64_t threads = pool.threads();
  absl::InlinedVector<int64_t, 5> first{0};  // plans[i]'s groups start at first[i]
  int64_t products = 0, work = 0;
  for (const LinearPlan& plan : plans) {
    first.push_back(first.back() + plan.p->batch * plan.groups);
    products += plan.p->batch;
    work += plan.p->batch * plan.p->rows * plan.in * plan.out;
  }
  const int64_t total = first.back();
  if (total == 0) return;
  const bool parallel = threads > 1 && work >= kOptParallelWork;
  const PreparedX px = PrepareX(k, plans, parallel);
  // Units of at least total / (kUnitsPerThread * threads) groups, a multiple of the threads in
  // number (every thread runs as many), then cut evenly.
  const int64_t unit_groups = CeilDiv(total, kUnitsPerThread * threads);
  const int64_t units =
      std::min(total, std::max(threads * CeilDiv(total, threads * unit_groups), products));
  pool.ParallelFor(
      units,
      [&](int64_t u) {
        const int64_t g_end = (u + 1) * total / units;
        size_t i = 0;
        for (int64_t g = u * total / units; g < g_end;) {
          while (first[i + 1] <= g) ++i;
          const LinearPlan& plan = plans[i];
          const int64_t local = g - first[i], b = local / plan.groups, g0 = local % plan.groups;
          const int64_t n = std::min(g_end - g, plan.groups - g0);
          RunOutputs(k, plan, px, b, 16 * g0, std::min(plan.out, 16 * (g0 + n)));
          g += n;
        }
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
  const DType dtype = p.weight.weight.dtype;
  // Transposed: bf16 and f32 here; f16 (and the refusal of fp8) from the reference.
  if (p.weight_transposed && dtype != DType::kBF16 && dtype != DType::kF32) return Linear(p);
  if (p.rows == 0 || p.weight.out_features() == 0) return absl::OkStatus();
  if (p.weight_transposed) {
    TransposedLinear(k, p);
    return absl::OkStatus();
  }
  if (p.rows >= kGemmMinRows) {
    GemmLinear(k, p);
    return absl::OkStatus();
  }
  const LinearPlan plan = PlanLinear(k, p);
  RunPlans(k, std::span<const LinearPlan>(&plan, 1));
  return absl::OkStatus();
}

bool OptLinearGroup(const SimdKernels& k, std::span<const LinearParams> products) {
  if (products.empty()) return true;
  const int64_t rows = products[0].rows;
  if (rows <= 0 || rows >= kGemmMinRows) return false;
  // One preparation of x serves every product: the same width, and (for those on the AMX tiles)
  // the same lead.
  absl::InlinedVector<LinearPlan, 4> plans;
  int64_t lead = -1;
  for (const LinearParams& p : products) {
    if (!FastLinear(p) || p.batch != 1 || p.weight_transposed) return false;
    plans.push_back(PlanLinear(k, p));
    const LinearPlan& plan = plans.back();
    if (plan.in != plans[0].in) return false;
    if (plan.amx) {
      if (lead >= 0 && plan.lead != lead) return false;
      lead = plan.lead;
    }
  }
  RunPlans(k, plans);
  return true;
}

}  // namespace r2::cpu

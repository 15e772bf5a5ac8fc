// MoeExperts for the optimized CPU backend: the (token, expert) pairs are grouped by expert, and
// each selected expert runs gate/up -> SiLU-mul -> down once on all of its tokens, so its weights
// are read once per call whatever the number of tokens that chose it. The work is split over the
// threads in blocks of one expert's output features (gate/up blocks, then down blocks); the
// token's k outputs are then combined in order j = 0..k-1 and added to h, as the reference does.
// Every weight format BlockLinear takes runs here (bf16/f16/f32, block-scaled fp8, I8, U4).
// A bf16 expert with kAmxMinRows-15 tokens (the shared expert of a decode batch, or a routed one
// many tokens chose) runs its gate/up and down on the AMX tiles where the machine has them
// (opt_amx.h): its rows are prepared once per matrix kind and weight lead, every whole group of 16
// outputs of a block runs on the tiles and the rest on the register tiles.
#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/opt_amx.h"
#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_quant.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Output features per work item: as many as still leave every thread two items, at least
// kMinBlock. Long blocks stream better: the routed experts of a decode batch of 8 on two threads
// went from ~24 to ~28 GB/s with whole experts per item (with 32-feature gate/up and 128-feature
// down blocks, each item's weights started cold). Multiples of 16.
constexpr int64_t kMinBlock = 32;

int64_t FeatureBlock(int64_t features, int64_t experts, int64_t threads) {
  const int64_t block = CeilDiv(CeilDiv(features * experts, 2 * threads), 16) * 16;
  return std::min(features, std::max(kMinBlock, block));
}

// Fewest input columns of an expert matrix on the AMX tiles (the small model's down, 1024 x 128,
// gained on them at 8 rows; AmxTakes' 256 is for lone Linears, whose preparation is not shared).
constexpr int64_t kMoeAmxMinIn = 128;

// Whether `rows` rows of one expert against a bf16 weight [out, in] at w run on the AMX tiles (the
// caller checked AmxBf16Usable and the AVX-512 kernels): AmxTakes' rows short of the packed GEMM's,
// whole 64-byte weight rows, and at least one group of 16 outputs.
bool MoeAmxTakes(int64_t rows, int64_t in, int64_t out, const void* w) {
  return rows >= kAmxMinRows && rows <= kAmxMaxRows && rows < kGemmMinRows && in >= kMoeAmxMinIn &&
         in % kAmxChunk == 0 && out >= 16 && reinterpret_cast<uintptr_t>(w) % 2 == 0;
}

// How one active expert runs: for gate/up (x) and down (a), whether on the AMX tiles, the leads of
// its weights and the arena offsets of the rows prepared for them (gate and up share one when
// their leads agree), and whether the register path's preparation is needed (not on AMX, or
// outputs past the last whole group of 16).
struct ExpertPlan {
  bool amx_gu = false, amx_down = false;
  bool reg_gu = true, reg_down = true;
  bool direct = false;  // gate/up rows prepared straight from x (consecutive tokens, amx_gu only)
  int64_t lead_gate = 0, lead_up = 0, lead_down = 0;
  int64_t gate_tiles = 0, up_tiles = 0, down_tiles = 0;  // float offsets into the arena
};

// A work item of the gate/up preparation: a whole expert (chunk_end < 0), or chunks
// [chunk_begin, chunk_end) of a direct expert's AMX rows for its gate (part 0) or up (part 1).
struct PrepItem {
  int32_t active = 0, part = 0;
  int64_t chunk_begin = 0, chunk_end = -1;
};

// The per-call state, grown and reused by the calling thread (no allocation once warm).
struct MoeScratch {
  std::vector<WeightView> views;  // pointer-array calls: [3][num_experts]
  std::vector<int32_t> start, next, order, where, active;
  std::vector<int64_t> x_prep, a_prep;  // per active expert: offsets into `arena`
  std::vector<ExpertPlan> plans;        // per active expert
  std::vector<PrepItem> prep_items;
  std::vector<PreparedRows> x_rows, a_rows;
  std::vector<float> arena;
  // Per active expert: gate/up blocks still running, and whether its activations are prepared
  // for down (see step 2).
  std::unique_ptr<std::atomic<int32_t>[]> gu_left, ready;
  int64_t flags = 0;
};

// Waits until `flag` is nonzero: polls briefly (the block it waits for is one expert's gate/up,
// tens of microseconds at most), then sleeps on it.
void WaitSet(std::atomic<int32_t>& flag) {
  for (int spin = 0; spin < 20000; ++spin) {
    if (flag.load(std::memory_order_acquire) != 0) return;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  while (flag.load(std::memory_order_acquire) == 0) flag.wait(0, std::memory_order_acquire);
}

// Floats of arena for AmxPreparedElems(rows, in) uint16_t, rounded to whole 64-byte lines.
int64_t AmxArenaFloats(int64_t rows, int64_t in) {
  return (AmxPreparedElems(rows, in) + 31) / 32 * 16;
}

// Plans expert `e` (m rows) and lays out its prepared rows in the arena from `used` on.
ExpertPlan PlanExpert(const WeightView* views, int64_t n, int32_t e, int64_t m, int64_t d,
                      int64_t width, bool amx, int64_t& used) {
  ExpertPlan plan;
  const WeightView &gate = views[e], &up = views[n + e], &down = views[2 * n + e];
  plan.amx_gu = amx && gate.weight.dtype == DType::kBF16 &&
                MoeAmxTakes(m, d, width, gate.weight.data) &&
                MoeAmxTakes(m, d, width, up.weight.data);
  plan.amx_down =
      amx && down.weight.dtype == DType::kBF16 && MoeAmxTakes(m, width, d, down.weight.data);
  plan.reg_gu = !plan.amx_gu || width % 16 != 0;
  plan.reg_down = !plan.amx_down || d % 16 != 0;
  auto take = [&](int64_t floats) {
    used = (used + 15) / 16 * 16;
    const int64_t at = used;
    used += floats;
    return at;
  };
  if (plan.amx_gu) {
    plan.lead_gate = AmxLead(gate.weight.data);
    plan.lead_up = AmxLead(up.weight.data);
    plan.gate_tiles = take(AmxArenaFloats(m, d));
    plan.up_tiles = plan.lead_up == plan.lead_gate ? plan.gate_tiles : take(AmxArenaFloats(m, d));
  }
  if (plan.amx_down) {
    plan.lead_down = AmxLead(down.weight.data);
    plan.down_tiles = take(AmxArenaFloats(m, width));
  }
  return plan;
}

MoeScratch& Scratch() {
  thread_local MoeScratch s;
  return s;
}

// Views over the pointer arrays (the Backend contract's layout).
void ViewsFromPointers(const MoeExpertsParams& p, std::vector<WeightView>& views) {
  const int64_t n = p.num_experts;
  views.assign(3 * n, WeightView{});
  const bool fp8 = p.dtype == DType::kF8E4M3;
  const void* const* data[3] = {p.gate, p.up, p.down};
  const float* const* scales[3] = {p.gate_scale_inv, p.up_scale_inv, p.down_scale_inv};
  for (int m = 0; m < 3; ++m) {
    const int64_t out = m < 2 ? p.width : p.hidden, in = m < 2 ? p.hidden : p.width;
    for (int64_t e = 0; e < n; ++e) {
      WeightView& v = views[m * n + e];
      v.weight = TensorView{.dtype = p.dtype, .shape = {out, in}, .data = data[m][e]};
      v.block_out = p.block_out;
      v.block_in = p.block_in;
      if (fp8) {
        v.scale_inv = TensorView{.dtype = DType::kF32,
                                 .shape = {CeilDiv(out, p.block_out), CeilDiv(in, p.block_in)},
                                 .data = scales[m][e]};
      }
    }
  }
}

// Outputs [o0, o0 + outs) of bf16 weight w (outs a multiple of 16) on the AMX tiles, from rows
// prepared for w's lead: y[r * ys + o - o0] = x_r . W_o.
void RunAmx(const uint16_t* prepared, int64_t rows, int64_t in, int64_t lead, const WeightView& w,
            int64_t o0, int64_t outs, float* y, int64_t ys) {
  if (outs == 0) return;
  const auto* data = static_cast<const uint8_t*>(w.weight.data) + o0 * in * 2;
  AmxLinearBlock(prepared, rows, in, lead, data, in * 2, outs, y, ys, false);
}

}  // namespace

absl::Status OptMoeExperts(const SimdKernels& k, const MoeExpertsParams& p) {
  const std::string op = "MoeExperts";
  MoeScratch& s = Scratch();
  const WeightView* views = p.expert_views;
  if (views == nullptr) {
    if (absl::Status st = CheckMoeExperts(p); !st.ok()) return st;
  } else {
    if (p.rows < 0 || p.hidden <= 0 || p.width <= 0 || p.num_experts <= 0 || p.top_k < 1) {
      return Invalid(op, absl::StrCat("need rows >= 0, hidden, width, num_experts > 0 and top_k >= "
                                      "1, got ",
                                      p.rows, ", ", p.hidden, ", ", p.width, ", ", p.num_experts,
                                      ", ", p.top_k));
    }
    if ((p.x_stride != 0 && p.x_stride < p.hidden) || (p.h_stride != 0 && p.h_stride < p.hidden)) {
      return Invalid(op, "x_stride or h_stride < hidden");
    }
    if (p.rows > 0 && (p.x == nullptr || p.h == nullptr || p.expert_ids == nullptr ||
                       p.expert_weights == nullptr)) {
      return Invalid(op, "null x, h, expert_ids or expert_weights");
    }
  }
  if (p.rows == 0) return absl::OkStatus();
  const int64_t n = p.num_experts, k_top = p.top_k, pairs = p.rows * k_top;
  const int64_t d = p.hidden, width = p.width;
  for (int64_t i = 0; i < pairs; ++i) {
    const int32_t e = p.expert_ids[i];
    if (e < 0 || e >= n) {
      return Invalid(op, absl::StrCat("expert id ", e, " not in [0, ", n, ")"));
    }
  }
  if (views == nullptr) {
    for (int64_t i = 0; i < pairs; ++i) {
      const int32_t e = p.expert_ids[i];
      const bool fp8 = p.dtype == DType::kF8E4M3;
      if (p.gate[e] == nullptr || p.up[e] == nullptr || p.down[e] == nullptr ||
          (fp8 && (p.gate_scale_inv[e] == nullptr || p.up_scale_inv[e] == nullptr ||
                   p.down_scale_inv[e] == nullptr))) {
        return Invalid(op, absl::StrCat("expert ", e, " has a null weight pointer"));
      }
    }
    ViewsFromPointers(p, s.views);
    views = s.views.data();
  }

  // Group the pairs by expert (tokens in order within an expert).
  s.start.assign(n + 1, 0);
  for (int64_t i = 0; i < pairs; ++i) ++s.start[p.expert_ids[i] + 1];
  for (int64_t e = 0; e < n; ++e) s.start[e + 1] += s.start[e];
  s.next.assign(s.start.begin(), s.start.end() - 1);
  s.order.resize(pairs);
  s.where.resize(pairs);
  for (int64_t i = 0; i < pairs; ++i) {
    const int32_t at = s.next[p.expert_ids[i]]++;
    s.order[at] = static_cast<int32_t>(i / k_top);  // the token
    s.where[i] = at;
  }
  s.active.clear();
  for (int64_t e = 0; e < n; ++e) {
    if (s.start[e + 1] > s.start[e]) s.active.push_back(static_cast<int32_t>(e));
  }
  const int64_t experts = static_cast<int64_t>(s.active.size());
  // Experts with the most tokens first: the threads claim work items in this order, so the longest
  // items (a shared expert every token takes, computed on register tiles of 8 rows) start first
  // instead of leaving one thread finishing them while the other waits.
  std::stable_sort(s.active.begin(), s.active.end(), [&](int32_t a, int32_t b) {
    return s.start[a + 1] - s.start[a] > s.start[b + 1] - s.start[b];
  });

  // The selected experts' weights: consistent shapes, one format for gate/up and one for down.
  const DType gu_dtype = views[s.active[0]].weight.dtype;
  const DType down_dtype = views[2 * n + s.active[0]].weight.dtype;
  for (int32_t e : s.active) {
    for (int m = 0; m < 3; ++m) {
      const WeightView& v = views[m * n + e];
      const int64_t out = m < 2 ? width : d, in = m < 2 ? d : width;
      if (v.weight.data == nullptr || v.weight.shape.size() != 2 || v.out_features() != out ||
          v.in_features() != in) {
        return Invalid(op, absl::StrCat("expert ", e,
                                        (m == 0   ? " gate"
                                         : m == 1 ? " up"
                                                  : " down"),
                                        " weight must be [", out, ", ", in, "]"));
      }
      if (v.weight.dtype != (m < 2 ? gu_dtype : down_dtype) || !BlockLinearSupports(k, v)) {
        return absl::UnimplementedError(absl::StrCat(
            op, ": expert ", e, " weights are not in one format the optimized experts take"));
      }
    }
  }

  // Arena: xe [pairs, d] | gu [pairs, 2 width] | ye [pairs, d] | per expert prepared x, act.
  const int64_t xe_at = 0, gu_at = pairs * d, ye_at = gu_at + pairs * 2 * width;
  int64_t used = ye_at + pairs * d;
  s.x_prep.resize(experts);
  s.a_prep.resize(experts);
  s.plans.resize(experts);
  const bool amx = k.isa == CpuIsa::kAvx512 && AmxBf16Usable();
  for (int64_t a = 0; a < experts; ++a) {
    const int32_t e = s.active[a];
    const int64_t m = s.start[e + 1] - s.start[e];
    ExpertPlan& plan = s.plans[a] = PlanExpert(views, n, e, m, d, width, amx, used);
    const int32_t* tokens = s.order.data() + s.start[e];
    plan.direct = plan.amx_gu && !plan.reg_gu;
    for (int64_t i = 1; plan.direct && i < m; ++i) plan.direct = tokens[i] == tokens[0] + i;
    used = (used + 15) / 16 * 16;
    s.x_prep[a] = used;
    if (plan.reg_gu) used += PreparedScratchFloats(k, gu_dtype, m, d);
    used = (used + 15) / 16 * 16;
    s.a_prep[a] = used;
    if (plan.reg_down) used += PreparedScratchFloats(k, down_dtype, m, width);
  }
  if (static_cast<int64_t>(s.arena.size()) < used) s.arena.resize(used);
  float* arena = s.arena.data();
  auto tiles = [&](int64_t at) { return reinterpret_cast<uint16_t*>(arena + at); };
  float* xe = arena + xe_at;
  float* gu = arena + gu_at;
  float* ye = arena + ye_at;
  s.x_rows.resize(experts);
  s.a_rows.resize(experts);

  CpuThreadPool& pool = CpuThreadPool::Get();
  const bool parallel = pool.threads() > 1 && pairs * d * width >= kOptParallelWork / 4;
  const int64_t xs = Stride(p.x_stride, d), hs = Stride(p.h_stride, d);

  // 1. Each expert's tokens gathered and prepared for the gate/up format. A direct expert (the
  // shared one) is prepared from x in place, its chunks cut over the threads (the shared expert
  // alone at 8 rows, prepared whole on one thread: 0.51 ms per 11 layers; cut: 0.46).
  s.prep_items.clear();
  const int64_t chunks = d / kAmxChunk;
  const int64_t per_item = std::max<int64_t>(4, CeilDiv(chunks, pool.threads()));
  for (int64_t a = 0; a < experts; ++a) {
    const ExpertPlan& plan = s.plans[a];
    if (!plan.direct) {
      s.prep_items.push_back({.active = static_cast<int32_t>(a)});
      continue;
    }
    for (int32_t part = 0; part < (plan.up_tiles != plan.gate_tiles ? 2 : 1); ++part) {
      for (int64_t c0 = 0; c0 < chunks; c0 += per_item) {
        s.prep_items.push_back({.active = static_cast<int32_t>(a),
                                .part = part,
                                .chunk_begin = c0,
                                .chunk_end = std::min(chunks, c0 + per_item)});
      }
    }
  }
  pool.ParallelFor(
      static_cast<int64_t>(s.prep_items.size()),
      [&](int64_t i) {
        const PrepItem& item = s.prep_items[i];
        const int64_t a = item.active;
        const int32_t e = s.active[a];
        const int64_t begin = s.start[e], m = s.start[e + 1] - begin;
        if (item.chunk_end >= 0) {
          const ExpertPlan& plan = s.plans[a];
          const bool up = item.part == 1;
          AmxPrepareRows(p.x + s.order[begin] * xs, xs, m, d, up ? plan.lead_up : plan.lead_gate,
                         tiles(up ? plan.up_tiles : plan.gate_tiles), item.chunk_begin,
                         item.chunk_end);
          return;
        }
        for (int64_t i = begin; i < begin + m; ++i) {
          std::copy_n(p.x + s.order[i] * xs, d, xe + i * d);
        }
        const ExpertPlan& plan = s.plans[a];
        const float* x = xe + begin * d;
        if (plan.reg_gu) s.x_rows[a] = PrepareRows(k, gu_dtype, x, d, m, d, arena + s.x_prep[a]);
        if (plan.amx_gu) {
          AmxPrepareRows(x, d, m, d, plan.lead_gate, tiles(plan.gate_tiles));
          if (plan.up_tiles != plan.gate_tiles) {
            AmxPrepareRows(x, d, m, d, plan.lead_up, tiles(plan.up_tiles));
          }
        }
      },
      parallel);

  // 2. One loop over the gate/up blocks of every expert, then the down blocks. A gate/up block
  // runs gate and up on a block of features, then SiLU-mul in place over the gate half; the block
  // that finishes an expert's last one prepares its activations for the down format and marks it
  // ready. A down block waits for its expert's mark. Items are claimed in index order, so when a
  // down block is claimed every gate/up block has been claimed by a running thread: the wait ends
  // (and a serial loop never waits). One loop instead of three leaves the threads two fewer
  // barriers per call to wait at for the slowest block.
  const int64_t gu_block = FeatureBlock(width, experts, pool.threads());
  const int64_t gu_blocks = CeilDiv(width, gu_block);
  const int64_t down_block = FeatureBlock(d, experts, pool.threads());
  const int64_t down_blocks = CeilDiv(d, down_block);
  if (s.flags < experts) {
    s.gu_left.reset(new std::atomic<int32_t>[experts]);
    s.ready.reset(new std::atomic<int32_t>[experts]);
    s.flags = experts;
  }
  for (int64_t a = 0; a < experts; ++a) {
    s.gu_left[a].store(static_cast<int32_t>(gu_blocks), std::memory_order_relaxed);
    s.ready[a].store(0, std::memory_order_relaxed);
  }
  auto prepare_down = [&](int64_t a) {
    const int32_t e = s.active[a];
    const int64_t begin = s.start[e], m = s.start[e + 1] - begin;
    const ExpertPlan& plan = s.plans[a];
    const float* act = gu + begin * 2 * width;
    if (plan.reg_down) {
      s.a_rows[a] = PrepareRows(k, down_dtype, act, 2 * width, m, width, arena + s.a_prep[a]);
    }
    if (plan.amx_down) {
      AmxPrepareRows(act, 2 * width, m, width, plan.lead_down, tiles(plan.down_tiles));
    }
  };
  const int64_t gu_items = experts * gu_blocks;
  pool.ParallelFor(
      gu_items + experts * down_blocks,
      [&](int64_t item) {
        if (item < gu_items) {
          const int64_t a = item / gu_blocks, o0 = (item % gu_blocks) * gu_block;
          const int64_t o1 = std::min(width, o0 + gu_block);
          const int32_t e = s.active[a];
          const int64_t begin = s.start[e], m = s.start[e + 1] - begin;
          float* rows = gu + begin * 2 * width;
          const ExpertPlan& plan = s.plans[a];
          int64_t o = o0;  // outputs [o0, o) ran on the AMX tiles
          if (plan.amx_gu) {
            const int64_t tiled = (o1 - o0) / 16 * 16;
            RunAmx(tiles(plan.gate_tiles), m, d, plan.lead_gate, views[e], o0, tiled, rows + o0,
                   2 * width);
            RunAmx(tiles(plan.up_tiles), m, d, plan.lead_up, views[n + e], o0, tiled,
                   rows + width + o0, 2 * width);
            o += tiled;
          }
          BlockLinear(k, s.x_rows[a], views[e], o, o1, rows + o, 2 * width, false);
          BlockLinear(k, s.x_rows[a], views[n + e], o, o1, rows + width + o, 2 * width, false);
          for (int64_t r = 0; r < m; ++r) {
            float* g = rows + r * 2 * width;
            k.silu_mul(g + o0, g + width + o0, g + o0, o1 - o0);
          }
          if (s.gu_left[a].fetch_sub(1, std::memory_order_acq_rel) == 1) {
            prepare_down(a);
            s.ready[a].store(1, std::memory_order_release);
            s.ready[a].notify_all();
          }
          return;
        }
        const int64_t down_item = item - gu_items;
        const int64_t a = down_item / down_blocks, o0 = (down_item % down_blocks) * down_block;
        const int64_t o1 = std::min(d, o0 + down_block);
        WaitSet(s.ready[a]);
        const int32_t e = s.active[a];
        const int64_t m = s.start[e + 1] - s.start[e];
        float* y = ye + s.start[e] * d;
        const ExpertPlan& plan = s.plans[a];
        int64_t o = o0;
        if (plan.amx_down) {
          const int64_t tiled = (o1 - o0) / 16 * 16;
          RunAmx(tiles(plan.down_tiles), m, width, plan.lead_down, views[2 * n + e], o0, tiled,
                 y + o0, d);
          o += tiled;
        }
        BlockLinear(k, s.a_rows[a], views[2 * n + e], o, o1, y + o, d, false);
      },
      parallel);

  // 3. h[t] += sum_j w_j y_j, the k terms summed in order into one value first.
  const int64_t token_blocks = CeilDiv(p.rows, 4);
  pool.ParallelFor(
      token_blocks,
      [&](int64_t tb) {
        const int64_t t1 = std::min(p.rows, (tb + 1) * 4);
        for (int64_t t = tb * 4; t < t1; ++t) {
          float* h = p.h + t * hs;
          float* acc = ThreadScratch(1, d);
          std::fill_n(acc, d, 0.0f);
          for (int64_t j = 0; j < k_top; ++j) {
            const float w = p.expert_weights[t * k_top + j];
            const float* y = ye + s.where[t * k_top + j] * d;
            for (int64_t o = 0; o < d; ++o) acc[o] += w * y[o];
          }
          for (int64_t o = 0; o < d; ++o) h[o] += acc[o];
        }
      },
      parallel && p.rows >= 8);
  return absl::OkStatus();
}

}  // namespace r2::cpu

// SampleRows on CUDA (kernels/sample_rows.h): one thread block per row, one kernel launch per
// call; only the specs go up and only the results come back.
//
// Per row, in one block of kThreads threads:
//   edits       the raw values of every edited id are saved, then logit_bias, bans and penalties
//               are applied in place in three phases (barriers between them; ids are distinct
//               within logit_bias and within history, as the op's contract says)
//   greedy      a block arg-max (largest value, lowest id; NaN never wins)
//   sampling    max; top_k as the k-th largest order key by a radix select over the float bits
//               (4 passes of 8-bit digits, integer counts in shared memory), never a sort; weights
//               w = ExpNonPositive((l - max) / T) with the host reference's polynomial and no
//               fused multiply-adds, so every weight has the reference's bits; Z in double;
//               top_p as a mass-weighted radix search over the weights' bits (the largest
//               weight t with sum(w >= t) >= top_p * Z: the reference's threshold); min_p;
//               the kept mass; the inverse-CDF draw: per-warp sums over contiguous chunks,
//               the crossing warp found on one thread, then a warp-wide prefix scan in id
//               order inside that chunk
//   restore     the saved raw values are written back (the row is unchanged afterwards)
//   logprobs    on the raw row: max, log-sum-exp in double, the rank by a block count, the top
//               list by a radix select of the N-th largest then a sort of the (few) survivors
// Sums run in another order than the reference's sequential ones, so the kept mass and the
// draw's target can differ from the reference's by double rounding: a token differs only when a
// CDF or top_p boundary lies that close to the target (tests/unit/cuda/sampling_test.cc).
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstddef>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"
#include "kernels/sample_rows.h"

namespace r2::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kGatherCap = 1024;  // top-logprob survivors sorted in shared memory

struct DeviceSpec {
  int64_t row;
  double uniform;
  float temperature, top_p, min_p, repetition, frequency, presence;
  int32_t top_k, bias_off, num_bias, banned_off, num_banned, history_off, num_history, saved_off;
  int32_t logprobs, top_n;
};

struct DeviceResult {
  int32_t token;
  float logprob;
  int32_t rank;
  int32_t num_top;
  SampleTopLogprob top[kMaxSampleTopLogprobs];
};
static_assert(sizeof(DeviceResult) == sizeof(SampleRowResult));
static_assert(offsetof(SampleRowResult, top) == offsetof(DeviceResult, top));

struct SharedState {
  double sum;
  double above;
  uint32_t prefix;
  int32_t index;
  int32_t count;
  float value;
};

// e^x for x <= 0: the host's polynomial (kernels/cpu/sampling_simd.h, which the reference runs),
// every operation rounded on its own (no contraction), so the bits equal the host's.
__device__ __forceinline__ float ExpNonPositive(float x) {
  if (x < -87.0f) return 0.0f;
  const float magic = 12582912.0f;
  const float shifted = __fadd_rn(__fmul_rn(x, 1.44269504088896341f), magic);
  const int n = __float_as_int(shifted) - 0x4B400000;
  const float nf = __fsub_rn(shifted, magic);
  float r = __fsub_rn(x, __fmul_rn(nf, 0.693359375f));
  r = __fsub_rn(r, __fmul_rn(nf, -2.12194440e-4f));
  float p = 1.0f / 5040.0f;
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 720.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 120.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 24.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 6.0f);
  p = __fadd_rn(__fmul_rn(p, r), 0.5f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  return __fmul_rn(p, __int_as_float((n + 127) << 23));
}

// A key whose unsigned order is the float order (NaN: 0, below every number; -0 is +0).
__device__ __forceinline__ uint32_t OrderKey(float v) {
  if (v != v) return 0u;
  if (v == 0.0f) return 0x80000000u;
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ bool RanksBefore(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T all = scratch[0];
  for (int w = 1; w < kWarps; ++w) all = op(all, scratch[w]);
  return all;
}

struct Reductions {
  double d[kWarps];
  float f[kWarps];
  int i[kWarps];
  int j[kWarps];
};

__device__ double BlockSum(double v, Reductions& r) {
  return BlockReduce(
      v, [](double a, double b) { return a + b; }, r.d);
}
__device__ int BlockSumInt(int v, Reductions& r) {
  return BlockReduce(
      v, [](int a, int b) { return a + b; }, r.i);
}
__device__ int BlockMinInt(int v, Reductions& r) {
  return BlockReduce(
      v, [](int a, int b) { return a < b ? a : b; }, r.j);
}
__device__ float BlockMax(float v, Reductions& r) {
  return BlockReduce(
      v, [](float a, float b) { return b > a ? b : a; }, r.f);
}

// The largest value over the row (NaN never wins; -inf when none).
__device__ float RowMax(const float* l, int V, Reductions& r) {
  float best = -INFINITY;
  for (int i = threadIdx.x; i < V; i += kThreads) best = l[i] > best ? l[i] : best;
  return BlockMax(best, r);
}

// The first id of the largest value (NaN never wins); all -inf: the first -inf; all NaN: 0.
__device__ int RowArgMax(const float* l, int V, Reductions& r) {
  float best = -INFINITY;
  int index = INT_MAX;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float v = l[i];
    if (v > best || (v == best && i < index)) {
      best = v;
      index = i;
    }
  }
  const float top = BlockMax(best, r);
  const int first = BlockMinInt(best == top ? index : INT_MAX, r);
  return first == INT_MAX ? 0 : first;
}

// The largest key t such that the weight of {i : included(i), key(i) >= t} reaches `target`
// (MSB-first over 8-bit digits; when rounding leaves no digit reaching it, everything is kept).
// key_weight(i, &key, &weight) returns whether i takes part. W: unsigned for counts (native
// integer atomics), double for the top_p mass.
template <typename W, typename F>
__device__ uint32_t RadixSearch(int V, double target, F key_weight, W* hist, SharedState& sh) {
  uint32_t prefix = 0;
  double above = 0.0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kThreads) hist[d] = W{0};
    __syncthreads();
    const uint32_t high_mask = shift == 24 ? 0u : (0xFFFFFFFFu << (shift + 8));
    for (int i = threadIdx.x; i < V; i += kThreads) {
      uint32_t key;
      W weight;
      if (!key_weight(i, key, weight) || (key & high_mask) != prefix) continue;
      atomicAdd(&hist[(key >> shift) & 0xFFu], weight);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double cumulative = above;
      int digit = -1, lowest = 0;
      for (int d = 255; d >= 0; --d) {
        const double mass = static_cast<double>(hist[d]);
        if (mass == 0.0) continue;
        lowest = d;
        if (cumulative + mass >= target) {
          digit = d;
          break;
        }
        cumulative += mass;
      }
      if (digit < 0) {
        digit = lowest;
        cumulative -= static_cast<double>(hist[lowest]);
      }
      sh.prefix = prefix | (static_cast<uint32_t>(digit) << shift);
      sh.above = cumulative;
    }
    __syncthreads();
    prefix = sh.prefix;
    above = sh.above;
    __syncthreads();
  }
  return prefix;
}

struct DrawShared {
  double warp_sum[kWarps];
  int warp_last[kWarps];
  int crossing;
  double base;
  int token;
};

// The token drawn from the edited row (the reference's FilteredDistribution semantics).
__device__ int Draw(const float* l, int V, const DeviceSpec& s, Reductions& r, double* hist,
                    SharedState& sh, DrawShared& ds) {
  const float m = RowMax(l, V, r);
  const bool top_k = s.top_k > 0 && s.top_k < V;
  uint32_t kth_key = 0;
  if (top_k) {
    kth_key = RadixSearch(
        V, static_cast<double>(s.top_k),
        [&](int i, uint32_t& key, unsigned& weight) {
          key = OrderKey(l[i]);
          weight = 1u;
          return l[i] == l[i];
        },
        reinterpret_cast<unsigned*>(hist), sh);
  }
  auto candidate = [&](int i) { return !top_k || OrderKey(l[i]) >= kth_key; };
  const float temperature = s.temperature;
  auto weight_of = [&](float v) { return ExpNonPositive(__fdiv_rn(__fsub_rn(v, m), temperature)); };
  double z = 0.0;
  if (isfinite(m)) {
    double local = 0.0;
    for (int i = threadIdx.x; i < V; i += kThreads) {
      if (candidate(i)) local += weight_of(l[i]);
    }
    z = BlockSum(local, r);
  }
  if (!(z > 0.0) || !isfinite(z)) {  // degenerate: the first candidate with the largest value
    int first_max = INT_MAX, first = INT_MAX;
    for (int i = threadIdx.x; i < V; i += kThreads) {
      if (!candidate(i)) continue;
      first = min(first, i);
      if (l[i] == m) first_max = min(first_max, i);
    }
    first_max = BlockMinInt(first_max, r);
    first = BlockMinInt(first, r);
    return first_max != INT_MAX ? first_max : (first != INT_MAX ? first : 0);
  }
  float threshold = 0.0f;
  if (s.top_p < 1.0f) {
    const uint32_t bits = RadixSearch(
        V, static_cast<double>(s.top_p) * z,
        [&](int i, uint32_t& key, double& weight) {
          if (!candidate(i)) return false;
          const float w = weight_of(l[i]);
          key = __float_as_uint(w);
          weight = w;
          return w > 0.0f;
        },
        hist, sh);
    threshold = __uint_as_float(bits);
  }
  threshold = threshold < s.min_p ? s.min_p : threshold;
  auto kept_weight = [&](int i) {
    if (!candidate(i)) return 0.0f;
    const float w = weight_of(l[i]);
    return w > 0.0f && w >= threshold ? w : 0.0f;
  };
  // Per-warp kept sums over contiguous chunks (multiples of 32 ids), then the crossing chunk.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int chunk = ((V + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int begin = min(V, warp * chunk), end = min(V, begin + chunk);
  double local = 0.0;
  int last = -1;
  for (int i = begin + lane; i < end; i += 32) {
    const float w = kept_weight(i);
    local += w;
    if (w > 0.0f) last = i;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    local += __shfl_xor_sync(0xffffffffu, local, o);
    last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  }
  if (lane == 0) {
    ds.warp_sum[warp] = local;
    ds.warp_last[warp] = last;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double kept = 0.0;
    for (int w = 0; w < kWarps; ++w) kept += ds.warp_sum[w];
    // The kept mass as these chunk sums give it (with no threshold it is Z in another order),
    // so the walk below crosses the target unless u * kept rounds past the last kept weight.
    const double target = s.uniform * kept;
    double cumulative = 0.0;
    int crossing = -1, last_kept = -1;
    for (int w = 0; w < kWarps; ++w) {
      if (ds.warp_sum[w] == 0.0) continue;
      last_kept = ds.warp_last[w];
      if (cumulative + ds.warp_sum[w] > target) {
        crossing = w;
        break;
      }
      cumulative += ds.warp_sum[w];
    }
    ds.crossing = crossing;
    ds.base = cumulative;
    sh.sum = target;
    ds.token = last_kept >= 0 ? last_kept : 0;
  }
  __syncthreads();
  if (warp == ds.crossing) {
    const double target = sh.sum;
    double running = ds.base;
    int found = -1;
    for (int i0 = begin; i0 < end && found < 0; i0 += 32) {
      const int i = i0 + lane;
      const float w = i < end ? kept_weight(i) : 0.0f;
      double scan = w;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const double other = __shfl_up_sync(0xffffffffu, scan, o);
        if (lane >= o) scan += other;
      }
      const unsigned crossed = __ballot_sync(0xffffffffu, w > 0.0f && running + scan > target);
      if (crossed != 0u) found = i0 + __ffs(crossed) - 1;
      running += __shfl_sync(0xffffffffu, scan, 31);
    }
    if (lane == 0) ds.token = found >= 0 ? found : ds.warp_last[warp];
  }
  __syncthreads();
  return ds.token;
}

struct TopShared {
  float value[kGatherCap];
  int id[kGatherCap];
};

// Logprob, rank and top list of `token` on the raw row.
__device__ void Logprobs(const float* l, int V, int token, int top_n, DeviceResult& out,
                         Reductions& r, double* hist, SharedState& sh, TopShared& ts) {
  const float m = RowMax(l, V, r);
  double local = 0.0;
  for (int i = threadIdx.x; i < V; i += kThreads) local += ExpNonPositive(__fsub_rn(l[i], m));
  const double log_sum = log(BlockSum(local, r));
  auto log_softmax = [&](float v) {
    return static_cast<float>(static_cast<double>(__fsub_rn(v, m)) - log_sum);
  };
  const float tv = l[token];
  int ahead = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) ahead += RanksBefore(l[i], i, tv, token);
  ahead = BlockSumInt(ahead, r);
  const int n = min(top_n, V);
  if (threadIdx.x == 0) {
    out.token = token;
    out.logprob = log_softmax(tv);
    out.rank = ahead + 1;
    out.num_top = n;
  }
  if (n == 0) return;
  const uint32_t kth_key = RadixSearch(
      V, static_cast<double>(n),
      [&](int i, uint32_t& key, unsigned& weight) {
        key = OrderKey(l[i]);
        weight = 1u;
        return true;
      },
      reinterpret_cast<unsigned*>(hist), sh);
  if (threadIdx.x == 0) sh.count = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < V; i += kThreads) {
    if (OrderKey(l[i]) < kth_key) continue;
    const int slot = atomicAdd(&sh.count, 1);
    if (slot < kGatherCap) {
      ts.value[slot] = l[i];
      ts.id[slot] = i;
    }
  }
  __syncthreads();
  const int gathered = sh.count;
  if (gathered <= kGatherCap) {
    if (threadIdx.x == 0) {  // insertion into the sorted top list, a total order
      int count = 0;
      for (int g = 0; g < gathered; ++g) {
        const float v = ts.value[g];
        const int id = ts.id[g];
        if (count == n && !RanksBefore(v, id, out.top[n - 1].logprob, out.top[n - 1].token)) {
          continue;
        }
        int pos = count < n ? count++ : n - 1;
        while (pos > 0 && RanksBefore(v, id, out.top[pos - 1].logprob, out.top[pos - 1].token)) {
          out.top[pos] = out.top[pos - 1];
          --pos;
        }
        out.top[pos] = {id, v};
      }
    }
  } else {  // more ties at the boundary than fit: n arg-max passes, each after the previous pick
    float prev_v = INFINITY;
    int prev_i = -1;
    for (int k = 0; k < n; ++k) {
      float best = -INFINITY;
      int index = INT_MAX;
      for (int i = threadIdx.x; i < V; i += kThreads) {
        const float v = l[i];
        if (!RanksBefore(prev_v, prev_i, v, i)) continue;
        if (v > best || (v == best && i < index)) {
          best = v;
          index = i;
        }
      }
      const float top = BlockMax(best, r);
      index = BlockMinInt(best == top ? index : INT_MAX, r);
      if (threadIdx.x == 0) out.top[k] = {index, top};
      prev_v = top;
      prev_i = index;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 0; k < n; ++k) out.top[k].logprob = log_softmax(out.top[k].logprob);
  }
}

__global__ void __launch_bounds__(kThreads)
    SampleRowsKernel(float* logits, int64_t stride, int V, const DeviceSpec* specs,
                     const SampleLogitBias* bias, const int32_t* banned,
                     const SampleTokenCount* history, float* saved, DeviceResult* results) {
  __shared__ Reductions r;
  __shared__ double hist[256];
  __shared__ SharedState sh;
  __shared__ DrawShared ds;
  __shared__ TopShared ts;
  const DeviceSpec s = specs[blockIdx.x];
  float* l = logits + s.row * stride;
  const SampleLogitBias* b = bias + s.bias_off;
  const int32_t* ban = banned + s.banned_off;
  const SampleTokenCount* h = history + s.history_off;
  float* save = saved + s.saved_off;
  const int num_edits = s.num_bias + s.num_banned + s.num_history;
  auto edited_id = [&](int k) {
    if (k < s.num_bias) return b[k].token;
    if (k < s.num_bias + s.num_banned) return ban[k - s.num_bias];
    return h[k - s.num_bias - s.num_banned].token;
  };
  for (int k = threadIdx.x; k < num_edits; k += kThreads) save[k] = l[edited_id(k)];
  __syncthreads();
  for (int k = threadIdx.x; k < s.num_bias; k += kThreads) {
    l[b[k].token] = __fadd_rn(l[b[k].token], b[k].bias);
  }
  __syncthreads();
  for (int k = threadIdx.x; k < s.num_banned; k += kThreads) l[ban[k]] = -INFINITY;
  __syncthreads();
  for (int k = threadIdx.x; k < s.num_history; k += kThreads) {
    float v = l[h[k].token];
    if (s.repetition != 1.0f) {
      v = v > 0.0f ? __fdiv_rn(v, s.repetition) : __fmul_rn(v, s.repetition);
    }
    if (h[k].output_count > 0) {
      v = __fsub_rn(
          v, __fadd_rn(__fmul_rn(static_cast<float>(h[k].output_count), s.frequency), s.presence));
    }
    l[h[k].token] = v;
  }
  __syncthreads();
  const int token = s.temperature == 0.0f ? RowArgMax(l, V, r) : Draw(l, V, s, r, hist, sh, ds);
  __syncthreads();
  for (int k = threadIdx.x; k < num_edits; k += kThreads) l[edited_id(k)] = save[k];
  __syncthreads();
  DeviceResult& out = results[blockIdx.x];
  if (s.logprobs) {
    Logprobs(l, V, token, s.top_n, out, r, hist, sh, ts);
  } else if (threadIdx.x == 0) {
    out.token = token;
    out.logprob = 0.0f;
    out.rank = 0;
    out.num_top = 0;
  }
}

size_t AlignUp(size_t n) { return (n + 255) / 256 * 256; }

}  // namespace

absl::Status SampleRows(const Context& ctx, const SampleRowsParams& p) {
  if (absl::Status s = CheckSampleRows(p); !s.ok()) return s;
  if (p.num_specs == 0) return absl::OkStatus();
  if (p.vocab_size > INT_MAX / 2) {
    return Invalid("SampleRows", absl::StrCat("vocab_size ", p.vocab_size, " is too large"));
  }
  const auto n = static_cast<size_t>(p.num_specs);
  size_t num_bias = 0, num_banned = 0, num_history = 0;
  for (size_t i = 0; i < n; ++i) {
    num_bias += p.specs[i].num_logit_bias;
    num_banned += p.specs[i].num_banned;
    num_history += p.specs[i].num_history;
  }
  // One upload: specs, then the edit lists; then the device-only areas.
  const size_t specs_at = 0;
  const size_t bias_at = AlignUp(specs_at + n * sizeof(DeviceSpec));
  const size_t banned_at = AlignUp(bias_at + num_bias * sizeof(SampleLogitBias));
  const size_t history_at = AlignUp(banned_at + num_banned * sizeof(int32_t));
  const size_t upload_bytes = history_at + num_history * sizeof(SampleTokenCount);
  const size_t saved_at = AlignUp(upload_bytes);
  const size_t results_at =
      AlignUp(saved_at + (num_bias + num_banned + num_history) * sizeof(float));
  const size_t total = results_at + n * sizeof(DeviceResult);
  thread_local std::vector<char> staging;
  thread_local std::vector<DeviceResult> results;
  staging.resize(upload_bytes);
  results.resize(n);
  auto* specs = reinterpret_cast<DeviceSpec*>(staging.data() + specs_at);
  auto* bias = reinterpret_cast<SampleLogitBias*>(staging.data() + bias_at);
  auto* banned = reinterpret_cast<int32_t*>(staging.data() + banned_at);
  auto* history = reinterpret_cast<SampleTokenCount*>(staging.data() + history_at);
  int32_t bias_off = 0, banned_off = 0, history_off = 0;
  for (size_t i = 0; i < n; ++i) {
    const SampleRowSpec& s = p.specs[i];
    specs[i] = DeviceSpec{
        .row = s.row,
        .uniform = s.uniform,
        .temperature = s.temperature,
        .top_p = s.top_p,
        .min_p = s.min_p,
        .repetition = s.repetition_penalty,
        .frequency = s.frequency_penalty,
        .presence = s.presence_penalty,
        .top_k = s.top_k,
        .bias_off = bias_off,
        .num_bias = s.num_logit_bias,
        .banned_off = banned_off,
        .num_banned = s.num_banned,
        .history_off = history_off,
        .num_history = s.num_history,
        .saved_off = bias_off + banned_off + history_off,
        .logprobs = s.logprobs ? 1 : 0,
        .top_n = s.logprobs ? s.top_logprobs : 0,
    };
    std::copy(s.logit_bias, s.logit_bias + s.num_logit_bias, bias + bias_off);
    std::copy(s.banned, s.banned + s.num_banned, banned + banned_off);
    std::copy(s.history, s.history + s.num_history, history + history_off);
    bias_off += s.num_logit_bias;
    banned_off += s.num_banned;
    history_off += s.num_history;
  }
  absl::StatusOr<void*> scratch = ctx.misc_scratch.Get(total, ctx.stream);
  if (!scratch.ok()) return scratch.status();
  char* base = static_cast<char*>(*scratch);
  R2_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(base, staging.data(), upload_bytes, cudaMemcpyHostToDevice, ctx.stream));
  SampleRowsKernel<<<static_cast<unsigned>(n), kThreads, 0, ctx.stream>>>(
      p.logits, p.row_stride == 0 ? p.vocab_size : p.row_stride, static_cast<int>(p.vocab_size),
      reinterpret_cast<const DeviceSpec*>(base + specs_at),
      reinterpret_cast<const SampleLogitBias*>(base + bias_at),
      reinterpret_cast<const int32_t*>(base + banned_at),
      reinterpret_cast<const SampleTokenCount*>(base + history_at),
      reinterpret_cast<float*>(base + saved_at),
      reinterpret_cast<DeviceResult*>(base + results_at));
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("SampleRowsKernel");
  R2_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(results.data(), base + results_at,
                                          n * sizeof(DeviceResult), cudaMemcpyDeviceToHost,
                                          ctx.stream));
  R2_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx.stream));
  for (size_t i = 0; i < n; ++i) {
    SampleRowResult& out = p.results[i];
    const DeviceResult& in = results[i];
    out.token = in.token;
    out.logprob = in.logprob;
    out.rank = in.rank;
    out.num_top = in.num_top;
    for (int k = 0; k < in.num_top; ++k) out.top[k] = in.top[k];
  }
  return absl::OkStatus();
}

}  // namespace r2::cuda

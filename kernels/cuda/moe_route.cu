// MoeRoute on CUDA: one thread block (a single warp) per token. Scores and bias-corrected scores
// live in shared memory; group scores are one thread per group; the group and expert selections are
// iterated block-wide arg-max passes with the reference's order (larger first, lower index on
// ties).
#include <cfloat>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_context.h"

namespace r2::cuda {
namespace {

// One warp per token: the arg-max passes are warp shuffles, the barriers are a single warp's.
constexpr int kRouteThreads = 32;

struct Best {
  float v;
  int i;  // -1: none
};

__device__ __forceinline__ bool Better(const Best& a, const Best& b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

// Block-wide arg-max of the candidates each thread proposes; every thread gets the result.
__device__ Best BlockArgMax(Best mine, Best* shared) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Best other;
    other.v = __shfl_xor_sync(0xffffffffu, mine.v, o);
    other.i = __shfl_xor_sync(0xffffffffu, mine.i, o);
    if (Better(other, mine)) mine = other;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = mine;
  __syncthreads();
  Best best = shared[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (Better(shared[w], best)) best = shared[w];
  }
  __syncthreads();  // shared is reused by the next call
  return best;
}

struct RouteArgs {
  const float* logits;
  int64_t ls;
  int64_t rows;
  int num_experts;
  const float* bias;
  bool softmax;
  bool top2_sum;
  int n_group;
  int topk_group;
  int top_k;
  bool norm;
  float scaling;
  int32_t* ids;
  float* weights;
};

// Shared memory: s[E], c[E], group_score[n_group] (floats), picked[E], kept[n_group] (chars).
__global__ void MoeRouteKernel(RouteArgs a) {
  extern __shared__ float smem[];
  const int E = a.num_experts;
  float* s = smem;
  float* c = s + E;
  float* gscore = c + E;
  auto* picked = reinterpret_cast<unsigned char*>(gscore + a.n_group);
  unsigned char* kept = picked + E;
  __shared__ Best reduce[32];
  __shared__ float softmax_max, softmax_sum;
  __shared__ int chosen[64];

  for (int64_t t = blockIdx.x; t < a.rows; t += gridDim.x) {
    const float* l = a.logits + t * a.ls;
    if (a.softmax) {
      if (threadIdx.x == 0) {
        // In the reference's order so the scores match it bit for bit.
        float m = l[0];
        for (int e = 1; e < E; ++e) m = fmaxf(m, l[e]);
        float sum = 0.0f;
        for (int e = 0; e < E; ++e) sum += expf(l[e] - m);
        softmax_max = m;
        softmax_sum = sum;
      }
      __syncthreads();
      for (int e = threadIdx.x; e < E; e += blockDim.x) {
        s[e] = expf(l[e] - softmax_max) / softmax_sum;
      }
    } else {
      for (int e = threadIdx.x; e < E; e += blockDim.x) s[e] = 1.0f / (1.0f + expf(-l[e]));
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      c[e] = s[e] + (a.bias != nullptr ? a.bias[e] : 0.0f);
      picked[e] = 0;
    }
    for (int g = threadIdx.x; g < a.n_group; g += blockDim.x) kept[g] = 0;
    __syncthreads();

    if (a.topk_group < a.n_group) {
      const int gsize = E / a.n_group;
      for (int g = threadIdx.x; g < a.n_group; g += blockDim.x) {
        float m1 = -INFINITY, m2 = -INFINITY;
        for (int e = g * gsize; e < (g + 1) * gsize; ++e) {
          const float v = c[e];
          if (v > m1) {
            m2 = m1;
            m1 = v;
          } else if (v > m2) {
            m2 = v;
          }
        }
        gscore[g] = a.top2_sum ? m1 + m2 : m1;
      }
      __syncthreads();
      // Keep the topk_group best groups; experts of the others are masked to -inf.
      for (int k = 0; k < a.topk_group; ++k) {
        Best mine{0.0f, -1};
        for (int g = threadIdx.x; g < a.n_group; g += blockDim.x) {
          const Best cand{gscore[g], g};
          if (!kept[g] && Better(cand, mine)) mine = cand;
        }
        const Best best = BlockArgMax(mine, reduce);
        if (threadIdx.x == 0 && best.i >= 0) kept[best.i] = 1;
        __syncthreads();
      }
      for (int e = threadIdx.x; e < E; e += blockDim.x) {
        if (!kept[e / gsize]) c[e] = -INFINITY;
      }
      __syncthreads();
    }

    for (int k = 0; k < a.top_k; ++k) {
      Best mine{0.0f, -1};
      for (int e = threadIdx.x; e < E; e += blockDim.x) {
        Best cand{c[e], e};
        if (!picked[e] && Better(cand, mine)) mine = cand;
      }
      const Best best = BlockArgMax(mine, reduce);
      if (threadIdx.x == 0) {
        chosen[k] = best.i;
        if (best.i >= 0) picked[best.i] = 1;
      }
      __syncthreads();
    }

    if (threadIdx.x == 0) {
      float sum = 0.0f;
      for (int k = 0; k < a.top_k; ++k) sum += chosen[k] >= 0 ? s[chosen[k]] : 0.0f;
      const float norm = a.norm ? 1.0f / (sum + 1e-20f) : 1.0f;
      for (int k = 0; k < a.top_k; ++k) {
        const int id = chosen[k];
        a.ids[t * a.top_k + k] = id >= 0 ? id : 0;
        a.weights[t * a.top_k + k] = id >= 0 ? __fmul_rn(__fmul_rn(s[id], norm), a.scaling) : 0.0f;
      }
    }
    __syncthreads();
  }
}

}  // namespace

absl::Status MoeRoute(const Context& ctx, const MoeRouteParams& p) {
  if (p.rows < 0 || p.num_experts <= 0) return Invalid("MoeRoute", "bad rows or num_experts");
  if (p.n_group <= 0 || p.num_experts % p.n_group != 0) {
    return Invalid("MoeRoute", "n_group must divide num_experts");
  }
  if (p.topk_group < 1 || p.topk_group > p.n_group) {
    return Invalid("MoeRoute", "topk_group must be in [1, n_group]");
  }
  const int64_t group_size = p.num_experts / p.n_group;
  if (p.n_group > 1 && p.group_score == MoeGroupScore::kTop2Sum && group_size < 2) {
    return Invalid("MoeRoute", "top-2 group scores need at least 2 experts per group");
  }
  if (p.top_k < 1 || p.top_k > p.topk_group * group_size) {
    return Invalid("MoeRoute", "top_k must be in [1, experts in the kept groups]");
  }
  if (p.top_k > 64) return Invalid("MoeRoute", "top_k must be <= 64 on CUDA");
  if (p.rows == 0) return absl::OkStatus();
  if (p.logits == nullptr || p.expert_ids == nullptr || p.expert_weights == nullptr) {
    return Invalid("MoeRoute", "null logits or outputs");
  }
  const int64_t ls = StrideOr(p.logits_stride, p.num_experts);
  if (ls < p.num_experts) return Invalid("MoeRoute", "logits_stride is smaller than num_experts");
  const size_t smem = sizeof(float) * (2 * p.num_experts + p.n_group) + p.num_experts + p.n_group;
  if (smem > 48 * 1024) {
    return Invalid("MoeRoute", absl::StrCat("num_experts ", p.num_experts, " too large"));
  }
  RouteArgs a{p.logits,
              ls,
              p.rows,
              static_cast<int>(p.num_experts),
              p.bias,
              p.scoring == MoeScoring::kSoftmax,
              p.group_score == MoeGroupScore::kTop2Sum,
              static_cast<int>(p.n_group),
              static_cast<int>(p.topk_group),
              static_cast<int>(p.top_k),
              p.norm_topk_prob,
              p.scaling_factor,
              p.expert_ids,
              p.expert_weights};
  MoeRouteKernel<<<GridCap(p.rows, 65535), kRouteThreads, smem, ctx.stream>>>(a);
  R2_CUDA_RETURN_IF_LAUNCH_ERROR("MoeRoute");
  return absl::OkStatus();
}

}  // namespace r2::cuda

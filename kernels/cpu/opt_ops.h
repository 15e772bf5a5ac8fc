#pragma once
// The ops of the optimized CPU backend that differ from the reference: each validates like the
// reference (and hands anything it does not take on to the reference op, whose InvalidArgument
// the caller then sees), splits the work over the CpuThreadPool (opt_thread_pool.h) and runs the
// per-instruction-set kernels in `k`. Scratch memory is thread-local and only grows, so a warmed-up
// step allocates nothing.
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cpu/opt_simd.h"

namespace r2::cpu {

absl::Status OptLinear(const SimdKernels& k, const LinearParams& p);
// LinearGroup's products (CheckLinearGroup holds) with x prepared once and every product's
// outputs in one parallel loop, where they can share that: bf16/f16/f32/fp8 weights of one
// in_features, fewer than kGemmMinRows rows, and the ones on AMX tiles at one AmxLead. Otherwise
// false, having run nothing (the caller runs Linear on each).
bool OptLinearGroup(const SimdKernels& k, std::span<const LinearParams> products);
absl::Status OptRmsNorm(const SimdKernels& k, const RmsNormParams& p);
absl::Status OptSiluMul(const SimdKernels& k, const SiluMulParams& p);
absl::Status OptEmbedding(const SimdKernels& k, const EmbeddingParams& p);
// The reference's cache write, after requesting every destination line for writing at once (a
// decode step's slots are in no cache; written one after another, each store's miss waited).
absl::Status OptKvCacheWrite(const KvCacheWriteParams& p);
absl::Status OptMoeRoute(const MoeRouteParams& p);
absl::Status OptMlaDecodeAttention(const SimdKernels& k, const MlaDecodeParams& p);

// Below this many multiply-adds an optimized op runs on one thread.
inline constexpr int64_t kOptParallelWork = int64_t{1} << 16;

// A thread-local float buffer of at least n values; slot tells a caller's buffers apart.
float* ThreadScratch(int slot, int64_t n);

}  // namespace r2::cpu

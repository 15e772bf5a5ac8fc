#pragma once
// The vector arithmetic under host sampling's O(V) passes (kernels/cpu/host_sampling.h: the
// engine Sampler and the SampleRows reference both run on it), written once with GCC/Clang vector
// extensions (4 float lanes, 16 bytes, so no ABI change between SSE2 and AVX builds); the same
// source compiles to SSE2, AVX or NEON. Only IEEE add, subtract, multiply, divide, compare and
// integer operations are used, and ExpNonPositive is compiled without fused multiply-adds (which
// GCC and Clang would otherwise form on FMA and NEON targets), so a result is the same bit for bit
// on every machine, in every build, and in every position of a row (a partial block is padded,
// never computed by other code).
//
//   ExpNonPositive(x)  e^x for x <= 0: n = round(x log2 e) (by adding 1.5 * 2^23),
//                      r = x - n ln2 (ln2 split Cody-Waite style as 0.693359375 and
//                      -2.12194440e-4), e^r by its degree-7 Taylor polynomial in Horner form,
//                      times 2^n built from the exponent bits. Relative error under 2e-7
//                      (1.02e-7 measured over [-87, 0]). x < -87 gives 0, so -inf (a banned
//                      token) gives exactly 0; x = 0 gives exactly 1; NaN gives NaN. Every
//                      product passes through Unfused() (an empty asm the compiler cannot see
//                      through), so no multiply-add is ever fused, and the function still inlines
//                      (a per-function optimize attribute would stop GCC from inlining it).
//   ArgMax(p, n)       the first index of the largest value in one pass over memory (NaN never
//                      wins).
//   BlockSum(lo, hi)   the sum of a block of 8 values (two vectors) in double, pairwise:
//                      ((w0 + w1) + (w2 + w3)) + ((w4 + w5) + (w6 + w7)).
// Host sampling's long sums are sequential sums of BlockSums over consecutive blocks of 8.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace r2::cpu::sampling_simd {

inline constexpr size_t kLanes = 4;
inline constexpr size_t kBlock = 8;  // values per BlockSum: two vectors

using F4 = float __attribute__((vector_size(16)));
using I4 = int32_t __attribute__((vector_size(16)));

inline F4 Broadcast(float x) { return F4{x, x, x, x}; }
inline I4 BroadcastInt(int32_t x) { return I4{x, x, x, x}; }

inline F4 Load(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Loads n <= 4 values and fills the remaining lanes with `fill`.
inline F4 LoadPartial(const float* p, size_t n, float fill) {
  F4 v = Broadcast(fill);
  std::memcpy(&v, p, n * sizeof(float));
  return v;
}

inline void Store(float* p, F4 v) { std::memcpy(p, &v, sizeof(v)); }

// True when any lane of a comparison result is set.
inline bool AnyLane(I4 mask) {
  uint64_t words[2];
  std::memcpy(words, &mask, sizeof(words));
  return (words[0] | words[1]) != 0;
}

inline int32_t SumLanes(I4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

// The number of set lanes of a comparison result (lanes are 0 or -1).
inline int32_t CountLanes(I4 mask) { return -SumLanes(mask); }

// Returns `v` unchanged through an empty asm, so a product is rounded before it is added (no
// fused multiply-add can be formed across it). Costs no instruction.
inline F4 Unfused(F4 v) {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+x"(v));
#elif defined(__aarch64__) || defined(__arm__)
  asm("" : "+w"(v));
#else
  asm("" : "+m"(v));
#endif
  return v;
}

inline F4 ExpNonPositive(F4 x) {
  const F4 lowest = Broadcast(-87.0f);
  const I4 underflow = x < lowest;
  const F4 clamped = underflow ? lowest : x;
  const F4 magic = Broadcast(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F4 shifted = Unfused(clamped * Broadcast(1.44269504088896341f)) + magic;
  const I4 n = std::bit_cast<I4>(shifted) - BroadcastInt(0x4B400000);
  const F4 nf = shifted - magic;
  F4 r = clamped - Unfused(nf * Broadcast(0.693359375f));
  r = r - Unfused(nf * Broadcast(-2.12194440e-4f));
  F4 p = Broadcast(1.0f / 5040.0f);
  p = Unfused(p * r) + Broadcast(1.0f / 720.0f);
  p = Unfused(p * r) + Broadcast(1.0f / 120.0f);
  p = Unfused(p * r) + Broadcast(1.0f / 24.0f);
  p = Unfused(p * r) + Broadcast(1.0f / 6.0f);
  p = Unfused(p * r) + Broadcast(0.5f);
  p = Unfused(p * r) + Broadcast(1.0f);
  p = Unfused(p * r) + Broadcast(1.0f);
  const I4 scale_bits = (n + BroadcastInt(127)) << 23;
  const F4 result = Unfused(p * std::bit_cast<F4>(scale_bits));
  return underflow ? Broadcast(0.0f) : result;
}

// The same function on one value (lane 0 of a broadcast), so scalar and vector agree.
inline float ExpNonPositive(float x) { return ExpNonPositive(Broadcast(x))[0]; }

// ((w0 + w1) + (w2 + w3)) + ((w4 + w5) + (w6 + w7)) in double, on pairs of doubles: the same
// additions in the same order as the scalar form, so the same bits, in fewer instructions.
inline double BlockSum(F4 lo, F4 hi) {
  using D2 = double __attribute__((vector_size(16)));
  const F4 even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6);  // w0 w2 w4 w6
  const F4 odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7);   // w1 w3 w5 w7
  const D2 ab = __builtin_convertvector(__builtin_shufflevector(even, even, 0, 1), D2) +
                __builtin_convertvector(__builtin_shufflevector(odd, odd, 0, 1), D2);
  const D2 cd = __builtin_convertvector(__builtin_shufflevector(even, even, 2, 3), D2) +
                __builtin_convertvector(__builtin_shufflevector(odd, odd, 2, 3), D2);
  const D2 halves = __builtin_shufflevector(ab, cd, 0, 2) + __builtin_shufflevector(ab, cd, 1, 3);
  return halves[0] + halves[1];
}

// The largest of n values; NaN never wins; -inf when there is none. Four accumulators keep the
// compares independent; max is exact, so the grouping does not change the result.
inline float Max(const float* p, size_t n) {
  constexpr float kLow = -std::numeric_limits<float>::infinity();
  auto take = [](F4 v, F4 best) { return v > best ? v : best; };
  F4 best[4] = {Broadcast(kLow), Broadcast(kLow), Broadcast(kLow), Broadcast(kLow)};
  size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    for (size_t k = 0; k < 4; ++k) best[k] = take(Load(p + i + k * kLanes), best[k]);
  }
  for (; i + kLanes <= n; i += kLanes) best[0] = take(Load(p + i), best[0]);
  if (i < n) best[0] = take(LoadPartial(p + i, n - i, kLow), best[0]);
  const F4 all = take(take(best[0], best[1]), take(best[2], best[3]));
  float result = kLow;
  for (size_t lane = 0; lane < kLanes; ++lane) result = all[lane] > result ? all[lane] : result;
  return result;
}

// The first index i < n with p[i] == value, or n when there is none.
inline size_t FirstIndexOf(const float* p, size_t n, float value) {
  const F4 value4 = Broadcast(value);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    if (AnyLane(Load(p + i) == value4)) break;
  }
  for (; i < n; ++i) {
    if (p[i] == value) return i;
  }
  return n;
}

// The first index i < n of the largest value, or n when no value is above -inf (all -inf or
// NaN). One pass over memory: Max over chunks of 1024 values (4 KB), remembering the first chunk
// with the largest maximum, then FirstIndexOf in that chunk alone, which is still in L1.
inline size_t ArgMax(const float* p, size_t n) {
  constexpr size_t kChunk = 1024;
  float best = -std::numeric_limits<float>::infinity();
  size_t best_chunk = n;
  for (size_t start = 0; start < n; start += kChunk) {
    const float chunk_max = Max(p + start, n - start < kChunk ? n - start : kChunk);
    if (chunk_max > best) {
      best = chunk_max;
      best_chunk = start;
    }
  }
  if (best_chunk == n) return n;
  const size_t len = n - best_chunk < kChunk ? n - best_chunk : kChunk;
  return best_chunk + FirstIndexOf(p + best_chunk, len, best);
}

}  // namespace r2::cpu::sampling_simd

// Integer-weight kernels for AVX-512 with VNNI (vpdpbusd), chosen at run time (opt_quant.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/opt_quant.h"

// Clang 14's backend aborts on these tiles under AddressSanitizer ("Cannot emit physreg copy
// instruction"); builds with it (the fuzzer build) leave the AVX-512 machine the AVX2 kernels.
#if defined(__x86_64__) && defined(__GNUC__) && !(defined(__clang__) && __clang_major__ < 15)
#include <immintrin.h>

#if !defined(__clang__)
// GCC 12 reports the _mm512_undefined_* placeholders inside its own intrinsics (cvtepu8_epi32,
// srli_epi32, ...) as uninitialized once they are inlined into a tile; they are not.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if defined(__clang__)
#pragma clang attribute push(                                                               \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

// Tile loops fully unrolled, so the accumulators stay in registers.
#if defined(__clang__)
#define R2_UNROLL _Pragma("unroll")
#else
#define R2_UNROLL _Pragma("GCC unroll 4")
#endif

namespace r2::cpu {
namespace avx512vnni {
namespace {

constexpr int64_t kPad = 64;         // int8 bytes per vector
constexpr int64_t kChunk = 32;       // u4 elements per 16-byte load
constexpr int64_t kPrefetch = 1024;  // bytes ahead in a weight row

// Horizontal reductions through the zero-masked extracts (the unmasked ones trip GCC 12's
// uninitialized-value warning on their placeholder operand).
inline __m256i High256(__m512i v) { return _mm512_maskz_extracti64x4_epi64(0xff, v, 1); }
inline __m256 High256(__m512 v) { return _mm512_maskz_extractf32x8_ps(0xff, v, 1); }

inline int32_t SumEpi32(__m512i v) {
  const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(v), High256(v));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline float SumPs(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), High256(v));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lanes are never NaN here (built with max_ps(|x|, acc), which skips NaN inputs).
inline float MaxPs(__m512 v) {
  const __m256 m8 = _mm256_max_ps(_mm512_castps512_ps256(v), High256(v));
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

float QuantizeRow(const float* x, int64_t n, int8_t* q, int32_t* sum) {
  // max |x| with NaNs skipped as std::max(amax, |x|) does (max_ps returns its second operand).
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  __m512 vmax = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 a = _mm512_and_ps(_mm512_loadu_ps(x + j), abs_mask);
    vmax = _mm512_max_ps(a, vmax);
  }
  if (j < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - j)) - 1);
    const __m512 a = _mm512_and_ps(_mm512_maskz_loadu_ps(m, x + j), abs_mask);
    vmax = _mm512_max_ps(a, vmax);
  }
  const float amax = MaxPs(vmax);
  if (!(amax > 0.0f)) {
    std::memset(q, 0, n);
    *sum = 0;
    return 0.0f;
  }
  const float s = amax / 127.0f;
  const __m512 vs = _mm512_set1_ps(s), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  __m512i vsum = _mm512_setzero_si512();
  for (j = 0; j < n; j += 16) {
    const int64_t left = n - j;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
    __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), vs);
    v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    const __m512i qi = _mm512_maskz_cvtps_epi32(m, v);
    vsum = _mm512_add_epi32(vsum, qi);
    _mm_mask_storeu_epi8(q + j, m, _mm512_cvtepi32_epi8(qi));
  }
  *sum = SumEpi32(vsum);
  return s;
}

// acc += (w + 128) . q over 64-byte chunks; y = float(acc - 128 * sum(q)) * s_x * s_w.
template <int R, int O>
void Int8Tile(const Int8Block& b, int64_t r0, int64_t o0) {
  __m512i acc[R][O];
  R2_UNROLL
  for (int r = 0; r < R; ++r) {
    R2_UNROLL
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_si512();
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int64_t in = b.in;
  const int8_t* xq = b.x.q + r0 * b.x.stride;
  const int8_t* w = b.w + o0 * in;
  for (int64_t j = 0; j < in; j += kPad) {
    const int64_t left = in - j;
    const __mmask64 m = left >= 64 ? ~__mmask64{0} : ((__mmask64{1} << left) - 1);
    __m512i xv[R];
    R2_UNROLL
    for (int r = 0; r < R; ++r) xv[r] = _mm512_loadu_si512(xq + r * b.x.stride + j);
    R2_UNROLL
    for (int o = 0; o < O; ++o) {
      const __m512i wv = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, w + o * in + j), flip);
      R2_UNROLL
      for (int r = 0; r < R; ++r) acc[r][o] = _mm512_dpbusd_epi32(acc[r][o], wv, xv[r]);
    }
  }
  R2_UNROLL
  for (int r = 0; r < R; ++r) {
    const uint32_t correction = 128u * static_cast<uint32_t>(b.x.sum[r0 + r]);
    const float xs = b.x.scale[r0 + r];
    float* y = b.y + (r0 + r) * b.y_stride + o0;
    R2_UNROLL
    for (int o = 0; o < O; ++o) {
      const auto total =
          static_cast<int32_t>(static_cast<uint32_t>(SumEpi32(acc[r][o])) - correction);
      const float v = static_cast<float>(total) * xs * b.w_scale[o0 + o];
      y[o] = b.accumulate ? y[o] + v : v;
    }
  }
}

// Per (output, group), the 16 possible weights (k - offset) * scale, k = 0..15, are exactly the
// reference's dequantized values; vpermps looks each nibble up in that table (it reads only the
// low 4 bits of each index lane), then FMA with the even and odd halves of each 32-element chunk.
template <int R, int O>
void Int4Tile(const Int4Block& b, int64_t r0, int64_t o0) {
  __m512 acc[R][O];
  R2_UNROLL
  for (int r = 0; r < R; ++r) {
    R2_UNROLL
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  }
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const float* xp = b.xp + r0 * b.xp_stride;
  for (int64_t g = 0; g < b.groups; ++g) {
    const int64_t j0 = g * b.group_size, j1 = std::min(b.in, j0 + b.group_size);
    __m512 table[O];
    R2_UNROLL
    for (int o = 0; o < O; ++o) {
      const int64_t at = (o0 + o) * b.groups + g;
      table[o] = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(b.offset[at])),
                               _mm512_set1_ps(b.scale[at]));
    }
    for (int64_t j = j0; j < j1; j += kChunk) {
      const int64_t bytes = std::min<int64_t>(16, (j1 - j + 1) / 2);
      const __mmask16 m =
          bytes >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << bytes) - 1);
      __m512 xe[R], xo[R];
      R2_UNROLL
      for (int r = 0; r < R; ++r) {
        xe[r] = _mm512_loadu_ps(xp + r * b.xp_stride + j);
        xo[r] = _mm512_loadu_ps(xp + r * b.xp_stride + j + 16);
      }
      R2_UNROLL
      for (int o = 0; o < O; ++o) {
        // Weight rows stream from memory: ask for the line 1 KiB ahead (prefetches never fault;
        // measured: int4 GEMV faster, the int8 tiles slower with it).
        const uint8_t* row = b.w + (o0 + o) * b.row_bytes;
        if (((j / 2) & 63) == 0) {
          _mm_prefetch(reinterpret_cast<const char*>(row + j / 2 + kPrefetch), _MM_HINT_T0);
        }
        const __m128i packed = _mm_maskz_loadu_epi8(m, row + j / 2);
        const __m512i wi = _mm512_cvtepu8_epi32(packed);
        const __m512 we = _mm512_permutexvar_ps(wi, table[o]);
        const __m512 wo = _mm512_permutexvar_ps(_mm512_srli_epi32(wi, 4), table[o]);
        R2_UNROLL
        for (int r = 0; r < R; ++r) {
          acc[r][o] = _mm512_fmadd_ps(we, xe[r], acc[r][o]);
          acc[r][o] = _mm512_fmadd_ps(wo, xo[r], acc[r][o]);
        }
      }
    }
  }
  R2_UNROLL
  for (int r = 0; r < R; ++r) {
    float* y = b.y + (r0 + r) * b.y_stride + o0;
    R2_UNROLL
    for (int o = 0; o < O; ++o) {
      const float v = SumPs(acc[r][o]);
      y[o] = b.accumulate ? y[o] + v : v;
    }
  }
}

// Runs tiles of up to TR rows x TO outputs over the block.
#define R2_DRIVE(B, TILE, TR, TO)                                          \
  void Drive##TILE(const B& b) {                                           \
    static constexpr void (*kFns[4][4])(const B&, int64_t, int64_t) = {    \
        {TILE<1, 1>, TILE<1, 2>, TILE<1, 3>, TILE<1, 4>},                  \
        {TILE<2, 1>, TILE<2, 2>, TILE<2, 3>, TILE<2, 4>},                  \
        {TILE<3, 1>, TILE<3, 2>, TILE<3, 3>, TILE<3, 4>},                  \
        {TILE<4, 1>, TILE<4, 2>, TILE<4, 3>, TILE<4, 4>}};                 \
    for (int64_t r0 = 0; r0 < b.rows; r0 += TR) {                          \
      const int64_t nr = std::min<int64_t>(TR, b.rows - r0);               \
      const int64_t to = nr == 1 ? 4 : TO; /* one row: 4 weight streams */ \
      for (int64_t o0 = 0; o0 < b.outs; o0 += to) {                        \
        const int64_t no = std::min<int64_t>(to, b.outs - o0);             \
        kFns[nr - 1][no - 1](b, r0, o0);                                   \
      }                                                                    \
    }                                                                      \
  }

R2_DRIVE(Int8Block, Int8Tile, 3, 4)  // 12 accumulators: no spills (4 x 4 spills)
R2_DRIVE(Int4Block, Int4Tile, 4, 2)
#undef R2_DRIVE

}  // namespace

const QuantKernels kKernels = {.name = "avx512-vnni",
                               .int8_pad = kPad,
                               .int4_chunk = kChunk,
                               .quantize_row = QuantizeRow,
                               .int8_block = DriveInt8Tile,
                               .int4_block = DriveInt4Tile};

}  // namespace avx512vnni
#undef R2_UNROLL
}  // namespace r2::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

namespace r2::cpu {
const QuantKernels* Avx512VnniQuantKernels() { return &avx512vnni::kKernels; }
}  // namespace r2::cpu
#else
namespace r2::cpu {
const QuantKernels* Avx512VnniQuantKernels() { return nullptr; }
}  // namespace r2::cpu
#endif

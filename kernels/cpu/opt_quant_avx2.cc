// Integer-weight kernels for AVX2 (+FMA), chosen at run time (opt_quant.h). int8 products use
// maddubs on |w| (as unsigned, so -128 is exact) and sign(q, w): two products per int16 lane stay
// below 2 * 128 * 127 < 32767, so nothing saturates.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/opt_quant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace r2::cpu {
namespace avx2q {
namespace {

constexpr int64_t kPad = 64;    // Int8Rows stride multiple (two vectors)
constexpr int64_t kChunk = 16;  // u4 elements per 8-byte load

inline int32_t SumEpi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline float SumPs(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float QuantizeRow(const float* x, int64_t n, int8_t* q, int32_t* sum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask), vmax);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  float amax = 0.0f;
  for (float v : lanes) amax = std::max(amax, v);
  for (; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  if (!(amax > 0.0f)) {
    std::memset(q, 0, n);
    *sum = 0;
    return 0.0f;
  }
  const float s = amax / 127.0f;
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i vsum = _mm256_setzero_si256();
  int32_t total = 0;
  j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256i qi[4];
    for (int i = 0; i < 4; ++i) {
      __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + j + 8 * i), vs);
      v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      qi[i] = _mm256_cvtps_epi32(v);
      vsum = _mm256_add_epi32(vsum, qi[i]);
    }
    const __m256i ab = _mm256_packs_epi32(qi[0], qi[1]), cd = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j), bytes);
  }
  for (; j < n; ++j) {
    const float v = std::nearbyint(x[j] / s);
    q[j] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    total += q[j];
  }
  *sum = total + SumEpi32(vsum);
  return s;
}

template <int R, int O>
void Int8Tile(const Int8Block& b, int64_t r0, int64_t o0) {
  __m256i acc[R][O];
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) acc[r][o] = _mm256_setzero_si256();
  }
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t in = b.in;
  const int8_t* xq = b.x.q + r0 * b.x.stride;
  const int8_t* w = b.w + o0 * in;
  alignas(32) int8_t tail[O][32];
  for (int64_t j = 0; j < in; j += 32) {
    __m256i xv[R];
    for (int r = 0; r < R; ++r) {
      xv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + r * b.x.stride + j));
    }
    const bool full = j + 32 <= in;
    for (int o = 0; o < O; ++o) {
      const int8_t* src = w + o * in + j;
      if (!full) {
        std::memset(tail[o], 0, 32);
        std::memcpy(tail[o], src, in - j);
        src = tail[o];
      }
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
      const __m256i wa = _mm256_abs_epi8(wv);
      for (int r = 0; r < R; ++r) {
        const __m256i p = _mm256_maddubs_epi16(wa, _mm256_sign_epi8(xv[r], wv));
        acc[r][o] = _mm256_add_epi32(acc[r][o], _mm256_madd_epi16(p, ones));
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    const float xs = b.x.scale[r0 + r];
    float* y = b.y + (r0 + r) * b.y_stride + o0;
    for (int o = 0; o < O; ++o) {
      const float v = static_cast<float>(SumEpi32(acc[r][o])) * xs * b.w_scale[o0 + o];
      y[o] = b.accumulate ? y[o] + v : v;
    }
  }
}

template <int R, int O>
void Int4Tile(const Int4Block& b, int64_t r0, int64_t o0) {
  __m256 acc[R][O];
  for (int r = 0; r < R; ++r) {
    for (int o = 0; o < O; ++o) acc[r][o] = _mm256_setzero_ps();
  }
  const __m256i low4 = _mm256_set1_epi32(0xf);
  const float* xp = b.xp + r0 * b.xp_stride;
  for (int64_t g = 0; g < b.groups; ++g) {
    const int64_t j0 = g * b.group_size, j1 = std::min(b.in, j0 + b.group_size);
    __m256 off[O], sc[O];
    for (int o = 0; o < O; ++o) {
      off[o] = _mm256_set1_ps(b.offset[(o0 + o) * b.groups + g]);
      sc[o] = _mm256_set1_ps(b.scale[(o0 + o) * b.groups + g]);
    }
    for (int64_t j = j0; j < j1; j += kChunk) {
      const int64_t bytes = std::min<int64_t>(8, (j1 - j + 1) / 2);
      __m256 xe[R], xo[R];
      for (int r = 0; r < R; ++r) {
        xe[r] = _mm256_loadu_ps(xp + r * b.xp_stride + j);
        xo[r] = _mm256_loadu_ps(xp + r * b.xp_stride + j + 8);
      }
      for (int o = 0; o < O; ++o) {
        uint64_t word = 0;
        std::memcpy(&word, b.w + (o0 + o) * b.row_bytes + j / 2, bytes);
        const __m256i wi = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(word)));
        const __m256 we = _mm256_mul_ps(
            _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(wi, low4)), off[o]), sc[o]);
        const __m256 wo = _mm256_mul_ps(
            _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(wi, 4)), off[o]), sc[o]);
        for (int r = 0; r < R; ++r) {
          acc[r][o] = _mm256_fmadd_ps(we, xe[r], acc[r][o]);
          acc[r][o] = _mm256_fmadd_ps(wo, xo[r], acc[r][o]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float* y = b.y + (r0 + r) * b.y_stride + o0;
    for (int o = 0; o < O; ++o) {
      const float v = SumPs(acc[r][o]);
      y[o] = b.accumulate ? y[o] + v : v;
    }
  }
}

#define R2_DRIVE(B, TILE, TR, TO)                                       \
  void Drive##TILE(const B& b) {                                        \
    static constexpr void (*kFns[2][4])(const B&, int64_t, int64_t) = { \
        {TILE<1, 1>, TILE<1, 2>, TILE<1, 3>, TILE<1, 4>},               \
        {TILE<2, 1>, TILE<2, 2>, TILE<2, 3>, TILE<2, 4>}};              \
    for (int64_t r0 = 0; r0 < b.rows; r0 += TR) {                       \
      const int64_t nr = std::min<int64_t>(TR, b.rows - r0);            \
      for (int64_t o0 = 0; o0 < b.outs; o0 += TO) {                     \
        const int64_t no = std::min<int64_t>(TO, b.outs - o0);          \
        kFns[nr - 1][no - 1](b, r0, o0);                                \
      }                                                                 \
    }                                                                   \
  }

R2_DRIVE(Int8Block, Int8Tile, 2, 4)
R2_DRIVE(Int4Block, Int4Tile, 2, 3)
#undef R2_DRIVE

}  // namespace

const QuantKernels kKernels = {.name = "avx2",
                               .int8_pad = kPad,
                               .int4_chunk = kChunk,
                               .quantize_row = QuantizeRow,
                               .int8_block = DriveInt8Tile,
                               .int4_block = DriveInt4Tile};

}  // namespace avx2q
}  // namespace r2::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace r2::cpu {
const QuantKernels* Avx2QuantKernels() { return &avx2q::kKernels; }
}  // namespace r2::cpu
#else
namespace r2::cpu {
const QuantKernels* Avx2QuantKernels() { return nullptr; }
}  // namespace r2::cpu
#endif

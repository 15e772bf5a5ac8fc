// AMX-BF16 Linear for decode batches (opt_amx.h).
#include "kernels/cpu/opt_amx.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

// Like the VNNI kernels, left out of clang < 15 builds (the fuzzer build's clang 14 aborts on
// AVX-512 tiles under AddressSanitizer) and of non-x86 builds.
#if defined(__x86_64__) && defined(__GNUC__) && !(defined(__clang__) && __clang_major__ < 15)
#define R2_HAVE_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace r2::cpu {
namespace {

std::atomic<bool> amx_allowed{true};

#if defined(R2_HAVE_AMX)

bool DetectAmx() {
  const char* env = std::getenv("R2_CPU_AMX");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool amx_bf16 = (edx & (1u << 22)) != 0, amx_tile = (edx & (1u << 24)) != 0;
  if (!amx_bf16 || !amx_tile || !__builtin_cpu_supports("avx512f")) return false;
  // Linux keeps the 8 KiB tile data state off until a process asks for it
  // (ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18); then XCR0 has both tile bits.
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return false;
  uint32_t xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  return (xcr0_lo & (3u << 17)) == (3u << 17);
}

// The tile configuration (palette 1): tmm0, tmm1 the float32 results (16 outputs x rows), tmm2,
// tmm3 the weight tiles (16 outputs x 32 bf16), tmm4-6 the activation parts hi, mid, lo (16
// column pairs x rows x 2 bf16).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

TileConfig ConfigFor(int64_t rows) {
  TileConfig c;
  const auto pair_bytes = static_cast<uint16_t>(4 * rows);
  for (int t : {0, 1, 4, 5, 6}) {
    c.colsb[t] = pair_bytes;
    c.rows[t] = 16;
  }
  for (int t : {2, 3}) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  return c;
}

// `tiles` (1 or 2) groups of 16 outputs starting at weight row w: results into out[t][16][rows].
// Every chunk loads each weight tile once for the three activation parts; the next group's
// weights (`next_rows` rows from `next`, or null) are prefetched into L2 in address order,
// next_rows lines per chunk, so they stream in while this one computes (a line of each of its
// rows per chunk instead, 32 scattered rows at a time, left lm_head at 8 rows ~8% slower).
// The lead columns and the 32 - lead last ones of 16 weight rows from w, as one aligned chunk.
__attribute__((target("avx512f,avx512bw"))) void GatherEdges(const uint8_t* w, int64_t w_row_bytes,
                                                             int64_t in, int64_t lead,
                                                             uint8_t* edge) {
  const __mmask32 head = (__mmask32{1} << lead) - 1;
  for (int64_t o = 0; o < 16; ++o) {
    const uint8_t* row = w + o * w_row_bytes;
    const __m512i a = _mm512_maskz_loadu_epi16(head, row);
    const __m512i b = _mm512_maskz_loadu_epi16(~head, row + 2 * (in - kAmxChunk));
    _mm512_store_si512(edge + 64 * o, _mm512_or_si512(a, b));
  }
}

template <int kTiles>
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw"))) void Group(
    const uint16_t* prepared, int64_t rows, int64_t in, int64_t lead, const uint8_t* w,
    int64_t w_row_bytes, const uint8_t* next, int64_t next_rows, float* out) {
  const int64_t part_bytes = 16 * 4 * rows;                    // one B tile
  const int64_t chunks = in / kAmxChunk - (lead > 0 ? 1 : 0);  // whole aligned chunks
  _tile_zero(0);
  if constexpr (kTiles == 2) _tile_zero(1);
  const auto* xb = reinterpret_cast<const uint8_t*>(prepared);
  const uint8_t* wa = w + 2 * lead;  // 64-byte aligned
  alignas(64) uint8_t edge[2 * 16 * 64];
  for (int64_t c = 0; c <= chunks; ++c) {
    if (next != nullptr) {
      // Over the chunks, all of the next group's lines when its rows are back to back.
      const char* from = reinterpret_cast<const char*>(next) + c * next_rows * 64;
      for (int64_t r = 0; r < next_rows; ++r) _mm_prefetch(from + r * 64, _MM_HINT_T1);
    }
    const uint8_t* bc = xb + c * 3 * part_bytes;
    if (c < chunks) {
      const uint8_t* wc = wa + c * 64;
      _tile_loadd(2, wc, w_row_bytes);
      if constexpr (kTiles == 2) _tile_loadd(3, wc + 16 * w_row_bytes, w_row_bytes);
    } else {
      if (lead == 0) break;
      GatherEdges(w, w_row_bytes, in, lead, edge);
      _tile_loadd(2, edge, 64);
      if constexpr (kTiles == 2) {
        GatherEdges(w + 16 * w_row_bytes, w_row_bytes, in, lead, edge + 16 * 64);
        _tile_loadd(3, edge + 16 * 64, 64);
      }
    }
    _tile_loadd(4, bc, 4 * rows);
    _tile_loadd(5, bc + part_bytes, 4 * rows);
    _tile_loadd(6, bc + 2 * part_bytes, 4 * rows);
    _tile_dpbf16ps(0, 2, 6);
    _tile_dpbf16ps(0, 2, 5);
    _tile_dpbf16ps(0, 2, 4);
    if constexpr (kTiles == 2) {
      _tile_dpbf16ps(1, 3, 6);
      _tile_dpbf16ps(1, 3, 5);
      _tile_dpbf16ps(1, 3, 4);
    }
  }
  _tile_stored(0, out, 4 * rows);
  if constexpr (kTiles == 2) _tile_stored(1, out + 16 * rows, 4 * rows);
}

// bf16 bits (in the high half of each lane, low half zero) of v rounded to nearest even; lanes
// that are not finite keep their top half (a NaN stays a NaN).
__attribute__((target("avx512f"))) inline __m512i RoundToBf16(__m512 v, __mmask16 finite) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  const __m512i kept = _mm512_or_si512(b, _mm512_set1_epi32(0x00400000));  // quiet NaN / inf
  const __m512i top = _mm512_mask_blend_epi32(finite, _mm512_and_si512(b, kept), rounded);
  return _mm512_and_si512(top, _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
}

// The three bf16 parts of x[0, n) (n a multiple of 16): hi = bf16(x), mid = bf16(x - hi),
// lo = bf16(x - hi - mid); for a value that is not finite, hi keeps it and mid, lo are zero.
__attribute__((target("avx512f,avx512bw"))) void SplitRow(const float* x, int64_t n, uint16_t* hi,
                                                          uint16_t* mid, uint16_t* lo) {
  const __m512 inf = _mm512_set1_ps(INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    const __mmask16 finite = _mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_LT_OQ);
    const __m512i h = RoundToBf16(v, finite);
    const __m512 r1 = _mm512_maskz_sub_ps(finite, v, _mm512_castsi512_ps(h));
    const __m512i m = RoundToBf16(r1, 0xffff);
    const __m512 r2 = _mm512_sub_ps(r1, _mm512_castsi512_ps(m));
    const __m512i l = RoundToBf16(r2, 0xffff);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + j),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(mid + j),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(m, 16)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + j),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(l, 16)));
  }
}

__attribute__((target("avx512f"))) void PrepareRowsAvx512(const float* x, int64_t x_stride,
                                                          int64_t rows, int64_t in, int64_t lead,
                                                          uint16_t* out, int64_t chunk_begin,
                                                          int64_t chunk_end) {
  thread_local std::vector<uint16_t> parts;
  if (static_cast<int64_t>(parts.size()) < 3 * in) parts.resize(3 * in);
  auto* words = reinterpret_cast<int*>(out);  // one word per (chunk, part, pair, row)
  // Pair i of a chunk goes to word i * rows of the chunk's part (the B tile's row i).
  const __m512i pair_at =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(static_cast<int>(rows)));
  // In chunk order, chunk c < in / 32 - 1 (or every chunk, lead 0) is columns [lead + 32 c,
  // lead + 32 c + 32) of x; with lead > 0 the last one gathers [0, lead) and [in - 32 + lead, in).
  const int64_t whole = in / kAmxChunk - (lead > 0 ? 1 : 0);
  const int64_t split_end = std::min(chunk_end, whole);
  alignas(64) float edge[kAmxChunk];
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    if (chunk_begin < split_end) {
      const int64_t c0 = chunk_begin * kAmxChunk, n = (split_end - chunk_begin) * kAmxChunk;
      SplitRow(xr + lead + c0, n, parts.data() + c0, parts.data() + in + c0,
               parts.data() + 2 * in + c0);
    }
    if (chunk_end > whole) {  // the edge chunk
      std::memcpy(edge, xr, lead * sizeof(float));
      std::memcpy(edge + lead, xr + in - kAmxChunk + lead, (kAmxChunk - lead) * sizeof(float));
      const int64_t c0 = whole * kAmxChunk;
      SplitRow(edge, kAmxChunk, parts.data() + c0, parts.data() + in + c0,
               parts.data() + 2 * in + c0);
    }
    for (int p = 0; p < 3; ++p) {
      const uint16_t* part = parts.data() + p * in;
      for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
        const __m512i pairs16 = _mm512_loadu_si512(part + chunk * kAmxChunk);
        _mm512_i32scatter_epi32(words + (chunk * 3 + p) * 16 * rows + r, pair_at, pairs16, 4);
      }
    }
  }
}

__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw"))) void AmxBlock(
    const uint16_t* prepared, int64_t rows, int64_t in, int64_t lead, const uint8_t* w,
    int64_t w_row_bytes, int64_t outs, float* y, int64_t y_stride, bool accumulate) {
  const TileConfig config = ConfigFor(rows);
  // The configuration must be in memory when ldtilecfg reads it: GCC 12 has dropped the stores
  // of a configuration built right before _tile_loadconfig as dead.
  __asm__ volatile("" : : "r"(&config) : "memory");
  _tile_loadconfig(&config);
  alignas(64) float out[2 * 16 * kAmxMaxRows];
  for (int64_t o0 = 0; o0 < outs;) {
    const int tiles = outs - o0 >= 32 ? 2 : 1;
    const int64_t after = o0 + 16 * tiles;
    const int64_t next_rows = outs - after >= 32 ? 32 : outs - after;
    const uint8_t* next = next_rows > 0 ? w + after * w_row_bytes : nullptr;
    const uint8_t* wo = w + o0 * w_row_bytes;
    if (tiles == 2) {
      Group<2>(prepared, rows, in, lead, wo, w_row_bytes, next, next_rows, out);
    } else {
      Group<1>(prepared, rows, in, lead, wo, w_row_bytes, next, next_rows, out);
    }
    // Column r of each stored tile is row r's 16 outputs.
    const __m512i at =
        _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                           _mm512_set1_epi32(static_cast<int>(rows)));
    for (int64_t r = 0; r < rows; ++r) {
      for (int t = 0; t < tiles; ++t) {
        float* yr = y + r * y_stride + o0 + 16 * t;
        __m512 v = _mm512_i32gather_ps(at, out + t * 16 * rows + r, 4);
        if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(yr));
        _mm512_storeu_ps(yr, v);
      }
    }
    o0 = after;
  }
  _tile_release();
}

#endif  // R2_HAVE_AMX

}  // namespace

bool AmxBf16Usable() {
#if defined(R2_HAVE_AMX)
  static const bool usable = DetectAmx();
  return usable && amx_allowed.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

bool SetAmxAllowed(bool allowed) { return amx_allowed.exchange(allowed); }

void AmxPrepareRows(const float* x, int64_t x_stride, int64_t rows, int64_t in, int64_t lead,
                    uint16_t* out, int64_t chunk_begin, int64_t chunk_end) {
#if defined(R2_HAVE_AMX)
  if (chunk_end < 0) chunk_end = in / kAmxChunk;
  PrepareRowsAvx512(x, x_stride, rows, in, lead, out, chunk_begin, chunk_end);
#else
  (void)x, (void)x_stride, (void)rows, (void)in, (void)lead, (void)out, (void)chunk_begin,
      (void)chunk_end;
  std::abort();  // AmxBf16Usable() is false in this build: callers never get here
#endif
}

void AmxLinearBlock(const uint16_t* prepared, int64_t rows, int64_t in, int64_t lead,
                    const uint8_t* w, int64_t w_row_bytes, int64_t outs, float* y, int64_t y_stride,
                    bool accumulate) {
#if defined(R2_HAVE_AMX)
  AmxBlock(prepared, rows, in, lead, w, w_row_bytes, outs, y, y_stride, accumulate);
#else
  (void)prepared, (void)rows, (void)in, (void)lead, (void)w, (void)w_row_bytes, (void)outs, (void)y,
      (void)y_stride, (void)accumulate;
  std::abort();  // AmxBf16Usable() is false in this build: callers never get here
#endif
}

}  // namespace r2::cpu

// GemmLinear: the driver of the packed GEMM (see opt_gemm.h).
#include "kernels/cpu/opt_gemm.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Columns per packed block: a panel of kKc x NR float32 (32 KiB for NR = 32) stays in L1 while
// the row tiles sweep over it.
constexpr int64_t kKc = 256;
// Rows per pass: the pass's block of x (kRowPass x kKc float32, 256 KiB) stays in L2 while the
// panels of a work unit go by; a larger product packs its panels once per pass. x rows 4 KiB
// apart (in = 1024) share L2 sets every 32 rows: 256 rows keep 8 lines per set, 512 rows filled
// all 16 ways and ran ~15% slower.
constexpr int64_t kRowPass = 256;

const std::array<float, 256>& Fp8Values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

// dst[o * kc + k] = element (o0 + o, k0 + k) of a block-scaled fp8 weight as float32 (its block's
// scale applied), o < n, k < kc.
void DecodeFp8Block(const WeightView& w, int64_t o0, int64_t n, int64_t k0, int64_t kc,
                    float* dst) {
  const std::array<float, 256>& table = Fp8Values();
  const int64_t in = w.in_features(), cols = w.scale_inv.shape[1];
  const auto* scales = static_cast<const float*>(w.scale_inv.data);
  for (int64_t o = 0; o < n; ++o) {
    const auto* q = static_cast<const uint8_t*>(w.weight.data) + (o0 + o) * in;
    const float* srow = scales + ((o0 + o) / w.block_out) * cols;
    float* d = dst + o * kc - k0;
    for (int64_t j0 = k0; j0 < k0 + kc;) {
      const int64_t c = j0 / w.block_in, j1 = std::min(k0 + kc, (c + 1) * w.block_in);
      float scale;
      std::memcpy(&scale, srow + c, 4);  // scale_inv may be unaligned in a mapped file
      for (int64_t j = j0; j < j1; ++j) d[j] = table[q[j]] * scale;
      j0 = j1;
    }
  }
}

float* Grow(std::vector<float>& b, int64_t n) {
  if (static_cast<int64_t>(b.size()) < n) b.resize(n);
  return b.data();
}

// Outputs [o_begin, o_end) of W (row o at wb + o * in elements) for every row of x, on the
// calling thread; y points at output o_begin of row 0.
void GemmOutputs(const SimdKernels& k, const GemmKernels& g, const WeightView& w, const uint8_t* wb,
                 const float* x, int64_t xs, int64_t total_rows, int64_t o_begin, int64_t o_end,
                 float* y, int64_t ys, bool accumulate) {
  const DType dtype = w.weight.dtype;
  const int64_t in = w.in_features(), nr = g.panel;
  const int64_t elem = static_cast<int64_t>(DTypeSize(dtype));
  thread_local std::vector<float> packed_buffer, decoded_buffer;
  float* packed = Grow(packed_buffer, nr * std::max<int64_t>(std::min(kKc, in), 1));
  // Rows per pass, whole tiles.
  const int64_t row_pass = std::max<int64_t>(1, kRowPass / g.tile_rows) * g.tile_rows;
  for (int64_t r0 = 0; r0 < total_rows; r0 += row_pass) {
    const int64_t rows = std::min(row_pass, total_rows - r0);
    const float* xr = x + r0 * xs;
    float* yr = y + r0 * ys;
    if (in == 0) {
      for (int64_t o0 = o_begin; o0 < o_end; o0 += nr) {
        g.panel_rows(xr, xs, rows, packed, 0, std::min(nr, o_end - o0), yr + (o0 - o_begin), ys,
                     accumulate);
      }
      continue;
    }
    // Column blocks outside the panels: the pass's block of x stays in L2 for all panels.
    for (int64_t k0 = 0; k0 < in; k0 += kKc) {
      const int64_t kc = std::min(kKc, in - k0);
      for (int64_t o0 = o_begin; o0 < o_end; o0 += nr) {
        const int64_t n = std::min(nr, o_end - o0);
        if (dtype == DType::kBF16) {
          g.pack_bf16(wb + (o0 * in + k0) * elem, in * elem, n, kc, packed);
        } else if (dtype == DType::kF32) {
          g.pack_f32(reinterpret_cast<const float*>(wb) + o0 * in + k0, in, n, kc, packed);
        } else {
          // f16 and fp8: the block's rows decoded to float32 (fp8 with its scales) first.
          float* d = Grow(decoded_buffer, nr * kc);
          if (dtype == DType::kF16) {
            for (int64_t o = 0; o < n; ++o) {
              k.decode_f16(wb + ((o0 + o) * in + k0) * elem, d + o * kc, kc);
            }
          } else {
            DecodeFp8Block(w, o0, n, k0, kc, d);
          }
          g.pack_f32(d, kc, n, kc, packed);
        }
        g.panel_rows(xr + k0, xs, rows, packed, kc, n, yr + (o0 - o_begin), ys,
                     accumulate || k0 > 0);
      }
    }
  }
}

}  // namespace

const GemmKernels& GemmKernelsFor(CpuIsa isa) {
  const GemmKernels* g = nullptr;
  if (isa == CpuIsa::kAvx512) g = Avx512Gemm();
  if (isa == CpuIsa::kAvx2) g = Avx2Gemm();
  return g != nullptr ? *g : PortableGemm();
}

bool GemmSupports(const WeightView& w) {
  if (w.weight.data == nullptr || w.weight.shape.size() != 2) return false;
  if (w.out_features() < 0 || w.in_features() < 0) return false;
  const DType d = w.weight.dtype;
  if (d == DType::kF8E4M3) {
    const TensorView& s = w.scale_inv;
    return w.block_out > 0 && w.block_in > 0 && s.data != nullptr && s.dtype == DType::kF32 &&
           s.shape == std::vector<int64_t>{CeilDiv(w.out_features(), w.block_out),
                                           CeilDiv(w.in_features(), w.block_in)};
  }
  return (d == DType::kBF16 || d == DType::kF16 || d == DType::kF32) && !w.block_scaled();
}

void GemmBlock(const SimdKernels& k, const float* x, int64_t xs, int64_t rows, const WeightView& w,
               int64_t o0, int64_t o1, float* y, int64_t ys, bool accumulate) {
  if (rows <= 0 || o1 <= o0) return;
  GemmOutputs(k, GemmKernelsFor(k.isa), w, static_cast<const uint8_t*>(w.weight.data), x, xs, rows,
              o0, o1, y, ys, accumulate);
}

void GemmLinear(const SimdKernels& k, const LinearParams& p) {
  const GemmKernels& g = GemmKernelsFor(k.isa);
  const WeightView& w = p.weight;
  const int64_t in = w.in_features(), out = w.out_features();
  const int64_t xs = Stride(p.x_stride, in), ys = Stride(p.y_stride, out);
  const int64_t elem = static_cast<int64_t>(DTypeSize(w.weight.dtype));
  const int64_t nr = g.panel, panels = CeilDiv(out, nr);
  CpuThreadPool& pool = CpuThreadPool::Get();
  const int64_t threads = pool.threads();
  const bool parallel = threads > 1 && p.batch * p.rows * in * out >= kOptParallelWork;
  // Whole panels per work unit, about four units per thread (a late worker's share is claimed by
  // the others); every unit packs its own panels, so the packing work does not grow with units.
  const int64_t per_unit = std::max<int64_t>(1, panels / (4 * threads));
  const int64_t units = CeilDiv(panels, per_unit);
  const auto* weights = static_cast<const uint8_t*>(w.weight.data);
  pool.ParallelFor(
      p.batch * units,
      [&](int64_t u) {
        const int64_t b = u / units, o0 = (u % units) * per_unit * nr;
        const int64_t o1 = std::min(out, o0 + per_unit * nr);
        GemmOutputs(k, g, w, weights + b * p.weight_batch_stride * elem, p.x + b * p.x_batch_stride,
                    xs, p.rows, o0, o1, p.y + b * p.y_batch_stride + o0, ys, p.accumulate);
      },
      parallel);
}

}  // namespace r2::cpu

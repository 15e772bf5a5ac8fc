// OptQuantLinear and the single-threaded Linear pieces (PrepareRows, BlockLinear) the MoE experts
// op shares; the portable integer kernels; the choice of integer kernels per instruction set.
#include "kernels/cpu/opt_quant.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"
#include "kernels/numeric.h"
#include "kernels/quant_format.h"

namespace r2::cpu {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// ---- portable kernels ----------------------------------------------------------------------

float PortableQuantizeRow(const float* x, int64_t n, int8_t* q, int32_t* sum) {
  const float s = QuantizeInt8Row(x, n, q);
  int32_t total = 0;
  for (int64_t j = 0; j < n; ++j) total += q[j];
  *sum = total;
  return s;
}

void PortableInt8Block(const Int8Block& b) {
  for (int64_t o = 0; o < b.outs; ++o) {
    const int8_t* w = b.w + o * b.in;
    for (int64_t r = 0; r < b.rows; ++r) {
      const int8_t* x = b.x.q + r * b.x.stride;
      int32_t acc = 0;
      for (int64_t j = 0; j < b.in; ++j) acc += int32_t{x[j]} * int32_t{w[j]};
      const float v = static_cast<float>(acc) * b.x.scale[r] * b.w_scale[o];
      float* y = b.y + r * b.y_stride + o;
      *y = b.accumulate ? *y + v : v;
    }
  }
}

// Portable chunk: 2 elements (an even and an odd one), so the split rows are x itself.
void PortableInt4Block(const Int4Block& b) {
  for (int64_t o = 0; o < b.outs; ++o) {
    const uint8_t* w = b.w + o * b.row_bytes;
    for (int64_t r = 0; r < b.rows; ++r) {
      const float* x = b.xp + r * b.xp_stride;
      float acc = 0.0f;
      for (int64_t g = 0; g < b.groups; ++g) {
        const float s = b.scale[o * b.groups + g], off = b.offset[o * b.groups + g];
        const int64_t j1 = std::min(b.in, (g + 1) * b.group_size);
        for (int64_t j = g * b.group_size; j < j1; ++j) {
          const int32_t nibble = (w[j >> 1] >> ((j & 1) * 4)) & 0xf;
          acc += (static_cast<float>(nibble) - off) * s * x[j];
        }
      }
      float* y = b.y + r * b.y_stride + o;
      *y = b.accumulate ? *y + acc : acc;
    }
  }
}

const QuantKernels kPortable = {.name = "portable",
                                .int8_pad = 64,
                                .int4_chunk = 2,
                                .quantize_row = PortableQuantizeRow,
                                .int8_block = PortableInt8Block,
                                .int4_block = PortableInt4Block};

// ---- float formats (decoded a few rows at a time) --------------------------------------------

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = Fp8E4M3ToFloat(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

constexpr int64_t kDecodeRows = 8;

// Grow-only per-thread buffers of BlockLinear (decoded rows; integer scales and offsets).
float* LocalBuffer(int slot, int64_t n) {
  thread_local std::array<std::vector<float>, 2> buffers;
  std::vector<float>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(n);
  return b.data();
}

void DecodeRows(const SimdKernels& k, const WeightView& w, int64_t o0, int64_t n, float* dst) {
  const int64_t in = w.in_features();
  if (w.weight.dtype == DType::kF16) {
    k.decode_f16(static_cast<const uint8_t*>(w.weight.data) + o0 * in * 2, dst, n * in);
    return;
  }
  const std::array<float, 256>& table = Fp8Table();
  const int64_t cols = w.scale_inv.shape[1];
  const auto* scales = static_cast<const float*>(w.scale_inv.data);
  for (int64_t o = o0; o < o0 + n; ++o) {
    const auto* q = static_cast<const uint8_t*>(w.weight.data) + o * in;
    const float* srow = scales + (o / w.block_out) * cols;
    float* d = dst + (o - o0) * in;
    for (int64_t j0 = 0, c = 0; j0 < in; j0 += w.block_in, ++c) {
      float scale;
      std::memcpy(&scale, srow + c, 4);
      const int64_t j1 = std::min(in, j0 + w.block_in);
      for (int64_t j = j0; j < j1; ++j) d[j] = table[q[j]] * scale;
    }
  }
}

// Elements [begin, begin + n) of an F32/BF16/F16 scale tensor (possibly unaligned) as float.
void LoadScales(const TensorView& t, int64_t begin, int64_t n, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(t.data);
  if (t.dtype == DType::kF32) {
    std::memcpy(out, bytes + 4 * begin, 4 * n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, bytes + 2 * (begin + i), 2);
    out[i] = t.dtype == DType::kBF16 ? BF16ToFloat(v) : HalfToFloat(v);
  }
}

PreparedRows Slice(const PreparedRows& x, int64_t r0, int64_t n) {
  PreparedRows s = x;
  s.rows = n;
  if (s.x != nullptr) s.x += r0 * s.x_stride;
  if (s.xp != nullptr) s.xp += r0 * s.xp_stride;
  if (s.q.q != nullptr) {
    s.q.q += r0 * s.q.stride;
    s.q.scale += r0;
    s.q.sum += r0;
  }
  return s;
}

}  // namespace

const QuantKernels& PortableQuantKernels() { return kPortable; }

const QuantKernels& QuantKernelsFor(CpuIsa isa) {
  // Decided once per set: CpuIsaSupported asks CPUID, which costs a VM exit under a hypervisor.
  static const std::array<const QuantKernels*, 3> table = [] {
    std::array<const QuantKernels*, 3> t{&kPortable, &kPortable, &kPortable};
    const bool avx2 = CpuIsaSupported(CpuIsa::kAvx2) && Avx2QuantKernels() != nullptr;
    const bool avx512 = CpuIsaSupported(CpuIsa::kAvx512);
    if (avx2) t[static_cast<int>(CpuIsa::kAvx2)] = Avx2QuantKernels();
    if (avx512 && CpuHasAvx512Vnni() && Avx512VnniQuantKernels() != nullptr) {
      t[static_cast<int>(CpuIsa::kAvx512)] = Avx512VnniQuantKernels();
    } else if (avx512 && avx2) {
      t[static_cast<int>(CpuIsa::kAvx512)] = Avx2QuantKernels();
    }
    return t;
  }();
  const auto i = static_cast<size_t>(isa);
  return i < table.size() ? *table[i] : kPortable;
}

bool BlockLinearSupports(const SimdKernels& k, const WeightView& w) {
  if (w.weight.data == nullptr || w.weight.shape.size() != 2) return false;
  if (w.out_features() <= 0 || w.in_features() <= 0) return false;
  const DType d = w.weight.dtype;
  if (d == DType::kI8 || d == DType::kU4) {
    if (!CheckIntegerWeight(w, "Linear").ok()) return false;
    return d == DType::kI8 || w.group_size % QuantKernelsFor(k.isa).int4_chunk == 0;
  }
  if (d == DType::kF8E4M3) {
    const TensorView& s = w.scale_inv;
    return w.block_out > 0 && w.block_in > 0 && s.data != nullptr && s.dtype == DType::kF32 &&
           s.shape == std::vector<int64_t>{CeilDiv(w.out_features(), w.block_out),
                                           CeilDiv(w.in_features(), w.block_in)};
  }
  return IsFloatStorage(d) && !w.block_scaled();
}

int64_t PreparedScratchFloats(const SimdKernels& k, DType dtype, int64_t rows, int64_t in) {
  const QuantKernels& qk = QuantKernelsFor(k.isa);
  switch (dtype) {
    case DType::kI8:
      return 2 * rows + CeilDiv(rows * RoundUp(in, qk.int8_pad), 4);
    case DType::kU4:
      return rows * RoundUp(in, qk.int4_chunk);
    case DType::kBF16:
      return rows * (in / k.bf16_group * k.bf16_group);
    default:
      return 0;
  }
}

PreparedRows PrepareRows(const SimdKernels& k, DType dtype, const float* x, int64_t xs,
                         int64_t rows, int64_t in, float* scratch) {
  const QuantKernels& qk = QuantKernelsFor(k.isa);
  PreparedRows p;
  p.dtype = dtype;
  p.rows = rows;
  p.in = in;
  if (dtype != DType::kI8) {
    p.x = x;
    p.x_stride = xs;
  }
  if (dtype == DType::kI8) {
    const int64_t stride = RoundUp(in, qk.int8_pad);
    auto* scale = scratch;
    auto* sum = reinterpret_cast<int32_t*>(scratch + rows);
    auto* q = reinterpret_cast<int8_t*>(scratch + 2 * rows);
    for (int64_t r = 0; r < rows; ++r) {
      int8_t* qr = q + r * stride;
      scale[r] = qk.quantize_row(x + r * xs, in, qr, &sum[r]);
      std::memset(qr + in, 0, stride - in);
    }
    p.q = {.q = q, .stride = stride, .scale = scale, .sum = sum};
  } else if (dtype == DType::kU4) {
    const int64_t c = qk.int4_chunk, half = c / 2, stride = RoundUp(in, c);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = x + r * xs;
      float* dst = scratch + r * stride;
      for (int64_t j = 0; j < stride; j += c) {
        for (int64_t i = 0; i < half; ++i) {
          const int64_t e = j + 2 * i, o = e + 1;
          dst[j + i] = e < in ? src[e] : 0.0f;
          dst[j + half + i] = o < in ? src[o] : 0.0f;
        }
      }
    }
    p.xp = scratch;
    p.xp_stride = stride;
  } else if (dtype == DType::kBF16) {
    const int64_t in_main = in / k.bf16_group * k.bf16_group;
    if (in_main > 0) {
      k.pair_split(x, xs, rows, in, scratch);
      p.xp = scratch;
    }
    p.xp_stride = in_main;
  }
  return p;
}

void BlockLinear(const SimdKernels& k, const PreparedRows& x, const WeightView& w, int64_t o0,
                 int64_t o1, float* y, int64_t ys, bool accumulate) {
  const DType dtype = w.weight.dtype;
  const int64_t in = w.in_features(), outs = o1 - o0;
  if (outs <= 0 || x.rows <= 0) return;
  const auto* data = static_cast<const uint8_t*>(w.weight.data);
  if (dtype == DType::kI8) {
    float* scale = LocalBuffer(1, outs);
    LoadScales(w.scale, o0, outs, scale);
    QuantKernelsFor(k.isa).int8_block({.x = x.q,
                                       .rows = x.rows,
                                       .w = reinterpret_cast<const int8_t*>(data) + o0 * in,
                                       .in = in,
                                       .w_scale = scale,
                                       .outs = outs,
                                       .y = y,
                                       .y_stride = ys,
                                       .accumulate = accumulate});
    return;
  }
  if (dtype == DType::kU4) {
    const int64_t groups = QuantGroups(in, w.group_size), row_bytes = PackedU4RowBytes(in);
    float* scale = LocalBuffer(1, 2 * outs * groups);
    float* offset = scale + outs * groups;
    LoadScales(w.scale, o0 * groups, outs * groups, scale);
    const auto* zero = static_cast<const uint8_t*>(w.zero_point.data);
    for (int64_t o = 0; o < outs; ++o) {
      const int64_t row = o0 + o, shift = 4 * (row % 8);
      for (int64_t g = 0; g < groups; ++g) {
        int32_t z = 0;
        if (zero != nullptr) {
          uint32_t word;
          std::memcpy(&word, zero + 4 * ((row / 8) * groups + g), 4);
          z = static_cast<int32_t>((word >> shift) & 0xf) - 8;
        }
        offset[o * groups + g] = static_cast<float>(8 + z);
      }
    }
    QuantKernelsFor(k.isa).int4_block({.xp = x.xp,
                                       .xp_stride = x.xp_stride,
                                       .rows = x.rows,
                                       .w = data + o0 * row_bytes,
                                       .row_bytes = row_bytes,
                                       .in = in,
                                       .group_size = w.group_size,
                                       .groups = groups,
                                       .scale = scale,
                                       .offset = offset,
                                       .outs = outs,
                                       .y = y,
                                       .y_stride = ys,
                                       .accumulate = accumulate});
    return;
  }
  if (x.rows >= kGemmMinRows && GemmSupports(w)) {  // many rows: the packed GEMM, as Linear does
    GemmBlock(k, x.x, x.x_stride, x.rows, w, o0, o1, y, ys, accumulate);
    return;
  }
  LinearBlock block{.x = x.x,
                    .x_stride = x.x_stride,
                    .xp = x.xp,
                    .xp_stride = x.xp_stride,
                    .rows = x.rows,
                    .in = in,
                    .y_stride = ys,
                    .accumulate = accumulate};
  if (dtype == DType::kBF16 || dtype == DType::kF32) {
    const int64_t elem = static_cast<int64_t>(DTypeSize(dtype));
    block.w = data + o0 * in * elem;
    block.w_row_bytes = in * elem;
    block.w_bf16 = dtype == DType::kBF16;
    block.outs = outs;
    block.y = y;
    k.linear_block(block);
    return;
  }
  float* decoded = LocalBuffer(0, kDecodeRows * in);
  block.w = reinterpret_cast<const uint8_t*>(decoded);
  block.w_row_bytes = in * 4;
  for (int64_t o = o0; o < o1; o += kDecodeRows) {
    const int64_t n = std::min(kDecodeRows, o1 - o);
    DecodeRows(k, w, o, n, decoded);
    block.outs = n;
    block.y = y + (o - o0);
    k.linear_block(block);
  }
}

absl::Status OptQuantLinear(const SimdKernels& k, const LinearParams& p) {
  const WeightView& w = p.weight;
  if (!w.integer_quantized() || p.batch != 1 || p.rows < 0 || !BlockLinearSupports(k, w) ||
      (p.rows > 0 && (p.x == nullptr || p.y == nullptr)) ||
      (p.x_stride != 0 && p.x_stride < w.in_features()) ||
      (p.y_stride != 0 && p.y_stride < w.out_features())) {
    return Linear(p);  // the reference: its error, or a layout only it takes
  }
  if (p.rows == 0) return absl::OkStatus();
  const int64_t in = w.in_features(), out = w.out_features();
  const int64_t xs = Stride(p.x_stride, in), ys = Stride(p.y_stride, out);
  thread_local std::vector<float> prepared_buffer;
  const int64_t need = PreparedScratchFloats(k, w.weight.dtype, p.rows, in);
  if (static_cast<int64_t>(prepared_buffer.size()) < need) prepared_buffer.resize(need);
  const PreparedRows x =
      PrepareRows(k, w.weight.dtype, p.x, xs, p.rows, in, prepared_buffer.data());
  CpuThreadPool& pool = CpuThreadPool::Get();
  const int64_t threads = pool.threads();
  const bool parallel = threads > 1 && p.rows * in * out >= kOptParallelWork;
  const int64_t unit = std::max<int64_t>(16, RoundUp(CeilDiv(out, 4 * threads), 16));
  const int64_t units = CeilDiv(out, unit);
  // Rows per pass: the pass's activations stay in L2 while a unit's weights are reused.
  const int64_t row_chunk = std::max<int64_t>(16, (int64_t{64} << 10) / in);
  pool.ParallelFor(
      units,
      [&](int64_t u) {
        const int64_t o0 = u * unit, o1 = std::min(out, o0 + unit);
        for (int64_t r0 = 0; r0 < p.rows; r0 += row_chunk) {
          const int64_t n = std::min(row_chunk, p.rows - r0);
          BlockLinear(k, Slice(x, r0, n), w, o0, o1, p.y + r0 * ys + o0, ys, p.accumulate);
        }
      },
      parallel);
  return absl::OkStatus();
}

}  // namespace r2::cpu

#pragma once
// Integer weight formats (W8A8 int8 per output channel, W4A16 int4 per group of input columns):
// validation of a WeightView against its scales, dequantization of one row, and the scalar
// quantizers that the converter (r2serve quantize), the reference Linear and the tests share.
// The layouts are the ones WeightView documents (kernels/tensor.h) and docs/quantization.md
// describes: compressed-tensors "int-quantized" (int8) and "pack-quantized" (int4).
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/tensor.h"

namespace r2 {

// Scale columns of an integer weight: ceil(in / group_size).
inline int64_t QuantGroups(int64_t in, int64_t group_size) {
  return (in + group_size - 1) / group_size;
}

// InvalidArgument, prefixed with `op`, unless `w` is a complete I8 or U4 weight: 2-d logical
// shape, group_size > 0 (I8: == in), `scale` F32/BF16/F16 [out, ceil(in / group_size)], and for
// U4 an optional I32 `zero_point` [ceil(out / 8), groups] (I8 takes none). Messages give the
// expected shape.
absl::Status CheckIntegerWeight(const WeightView& w, const std::string& op);

// Row o of an integer weight (checked by CheckIntegerWeight) as float32.
void DequantizeIntegerRow(const WeightView& w, int64_t o, float* row);

// The signed 4-bit value (nibble - 8, in [-8, 7]) of element j of a packed U4 row.
inline int32_t UnpackU4(const uint8_t* row, int64_t j) {
  const int32_t nibble = (row[j >> 1] >> ((j & 1) * 4)) & 0xf;
  return nibble - 8;
}
// Stores q in [-8, 7] as element j of a packed U4 row (the other nibble of the byte is kept).
inline void PackU4(uint8_t* row, int64_t j, int32_t q) {
  const int shift = static_cast<int>(j & 1) * 4;
  const auto nibble = static_cast<uint8_t>((q + 8) & 0xf);
  row[j >> 1] = static_cast<uint8_t>((row[j >> 1] & ~(0xf << shift)) | (nibble << shift));
}

// Scale of output row o, group g of an integer weight (checked by CheckIntegerWeight).
float IntegerWeightScale(const WeightView& w, int64_t o, int64_t g);

// Zero point (signed, in [-8, 7]) of output row o, group g of a U4 weight's packed zero_point
// tensor with `groups` columns; 0 when there is none.
int32_t U4ZeroPoint(const WeightView& w, int64_t o, int64_t g);

// ---- quantizers ------------------------------------------------------------------------------

// Symmetric int8 of n values: s = max|x| / 127, q = clamp(round_half_even(x / s), -127, 127).
// Returns s (0 for an all-zero row, with q all 0). |x - q s| <= s / 2 for every element.
// Used for weight rows (per output channel) and, at run time, for activation rows (per token).
float QuantizeInt8Row(const float* x, int64_t n, int8_t* q);

// One group of int4 values. Symmetric: s = max|x| / 7.5, q = clamp(round(x / s), -8, 7), z = 0;
// asymmetric: the range [min(x, 0), max(x, 0)] over 15 steps, z = clamp(round(-8 - lo / s), -8,
// 7), q = clamp(round(x / s) + z, -8, 7). s is rounded up to a BF16 value (so it can be stored as
// BF16 without changing the dequantized weights). Dequantized: (q - z) * s, within s / 2 of x
// (symmetric) or within s (asymmetric).
struct Int4Group {
  float scale = 0.0f;
  int32_t zero = 0;
};
Int4Group QuantizeInt4Group(const float* x, int64_t n, bool symmetric, int32_t* q);

// ---- the converter's weight quantizers: scales searched for the least squared error ----------
//
// Plain max-abs scaling spends the whole integer range on the largest |w| of a row or group.
// These choose the scale (and, for asymmetric int4, the zero point) that minimizes the squared
// rounding error sum_j (w_j - dequantized_j)^2 of the row or group instead: candidates are the
// max-abs scale times a clip ratio r from 1 down to kMinClipRatio in steps of kClipRatioStep
// (values beyond the clipped range saturate at the end of the integer range), then a least-squares
// rescale of the best candidate's integers (s = sum w (q - z) / sum (q - z)^2). Every candidate's
// error is measured with the exact stored scale, and the max-abs scale itself (r = 1, the
// quantizers above) is a candidate, so the result is never worse than max-abs scaling in squared
// error. Elements inside the chosen range are within s / 2 of w; a saturated element is off by at
// most its distance to the range's end plus s / 2.
inline constexpr float kMinClipRatio = 0.70f;
inline constexpr float kClipRatioStep = 0.01f;

// Squared error sum_j (x_j - (q_j - z) s)^2 of one int4 group quantized with (s, z), writing q
// (q = clamp(round(x / s) + z, -8, 7)); s > 0.
double QuantizeInt4WithScale(const float* x, int64_t n, float s, int32_t z, int32_t* q);

// Int8 weight row (per output channel, symmetric, q in [-127, 127], F32 scale): the searched
// scale. Returns s (0 for an all-zero row).
float QuantizeInt8WeightRow(const float* x, int64_t n, int8_t* q);

// Int4 group, symmetric or asymmetric, with a BF16-representable scale: the searched scale (and
// zero point).
Int4Group QuantizeInt4GroupMinError(const float* x, int64_t n, bool symmetric, int32_t* q);

}  // namespace r2

#pragma once
// Tensors as the kernels see them: a dtype, a shape and a pointer. Views never own memory; the
// owner (a mapped checkpoint file, a model's scratch arena, the KV pool) outlives every view.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace r2 {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,  // e4m3fn: no infinities, 0x7f/0xff are NaN, max finite 448
  kI8,
  kU8,
  kI32,
  kI64,
  // Appended for integer-quantized weights (see WeightView):
  kU4,  // unsigned 4-bit values packed eight per little-endian 32-bit word, element 0 in the
        // lowest bits (the compressed-tensors "pack-quantized" layout); each row of a matrix
        // starts on a word boundary: PackedU4RowBytes(cols) bytes per row, padding nibbles 0
};

// Bytes per element (0 for kU4, which packs two per byte: see PackedU4RowBytes).
size_t DTypeSize(DType dtype);
// Lower-case name for messages: "f32", "bf16", "f8_e4m3", ...
std::string_view DTypeName(DType dtype);

// Bytes of one packed kU4 row of `cols` values: whole 32-bit words of eight values.
inline int64_t PackedU4RowBytes(int64_t cols) { return (cols + 7) / 8 * 4; }

struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major (C order), outermost first
  const void* data = nullptr;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t dim(size_t i) const { return shape[i]; }
  bool empty() const { return data == nullptr; }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

// Element i of a float-storage tensor (F32, BF16, F16, F8_E4M3) as float32, read without assuming
// alignment (views into mapped files may be unaligned); 0 for any other dtype.
float ElementAsFloat(const TensorView& t, int64_t i);

// The weight of a bias-free linear layer, stored PyTorch-style as [out_features, in_features]:
// y = W x. For F8_E4M3 weights, `scale_inv` is F32 [ceil(out/block_out), ceil(in/block_in)] and the
// real weight is fp8(W[i][j]) * scale_inv[i / block_out][j / block_in] (edge blocks may be
// partial). For every other dtype `scale_inv` is empty.
//
// Integer weights (docs/quantization.md) carry `scale` instead: F32/BF16/F16
// [out, ceil(in / group_size)], one value per output row and group of group_size input columns,
// and the real weight is (q[i][j] - z[i][j / group_size]) * scale[i][j / group_size]:
//  - I8 (W8A8): q is the int8 value, group_size == in (one scale per output channel), z = 0
//    (symmetric). The Linear quantizes each activation row symmetrically to int8 at run time
//    (s_x = max|x| / 127), accumulates the integer products exactly and writes acc * s_x * s_w.
//  - U4 (W4A16): `weight.shape` is the logical [out, in] over packed rows (see kU4), q is the
//    nibble - 8 in [-8, 7]; z = 0 unless `zero_point` is set: I32 [ceil(out / 8), groups],
//    zero points packed eight per word down the output dimension (row i in bits 4 * (i % 8) of
//    word [i / 8][g]), each stored as z + 8. Activations stay float.
struct WeightView {
  TensorView weight;
  TensorView scale_inv;
  int64_t block_out = 128;
  int64_t block_in = 128;
  TensorView scale;        // integer weights only
  TensorView zero_point;   // U4 with zero points only
  int64_t group_size = 0;  // integer weights: input columns per scale (I8: in)

  int64_t out_features() const { return weight.shape[0]; }
  int64_t in_features() const { return weight.shape[1]; }
  bool block_scaled() const { return !scale_inv.empty(); }
  bool integer_quantized() const {
    return weight.dtype == DType::kI8 || weight.dtype == DType::kU4;
  }
};

}  // namespace r2

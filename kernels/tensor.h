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
};

// Bytes per element.
size_t DTypeSize(DType dtype);
// Lower-case name for messages: "f32", "bf16", "f8_e4m3", ...
std::string_view DTypeName(DType dtype);

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

// The weight of a bias-free linear layer, stored PyTorch-style as [out_features, in_features]:
// y = W x. For F8_E4M3 weights, `scale_inv` is F32 [ceil(out/block_out), ceil(in/block_in)] and the
// real weight is fp8(W[i][j]) * scale_inv[i / block_out][j / block_in] (edge blocks may be
// partial). For every other dtype `scale_inv` is empty.
struct WeightView {
  TensorView weight;
  TensorView scale_inv;
  int64_t block_out = 128;
  int64_t block_in = 128;

  int64_t out_features() const { return weight.shape[0]; }
  int64_t in_features() const { return weight.shape[1]; }
  bool block_scaled() const { return !scale_inv.empty(); }
};

}  // namespace r2

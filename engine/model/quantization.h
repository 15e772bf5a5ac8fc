#pragma once
// Integer-quantized linear weights in a checkpoint (compressed-tensors layout, see
// docs/quantization.md and engine/model/quantization_config.h). For a linear weight "X.weight":
//   int4 (pack-quantized): X.weight_packed I32 [out, ceil(in / 8)], X.weight_shape I32/I64 [2]
//     = [out, in], X.weight_scale F32/BF16/F16 [out, ceil(in / group)], and with zero points
//     X.weight_zero_point I32 [ceil(out / 8), ceil(in / group)];
//   int8 (int-quantized): X.weight I8 [out, in], X.weight_scale F32/BF16/F16 [out, 1].
// Checkpoint::Open and Checkpoint::Linear hand such weights to the functions below; errors name
// the checkpoint directory, the tensor and what is wrong.
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/checkpoint.h"
#include "kernels/tensor.h"

namespace r2::model {

// True when `weight_name` ("X.weight") is stored as an integer weight: X.weight_packed exists, or
// X.weight is I8.
bool StoredAsIntegerWeight(const Checkpoint& checkpoint, const std::string& weight_name);

// The integer weight as a WeightView (I8 or U4, views into the mapped files), validated against
// config.json's compressed-tensors scheme.
absl::StatusOr<WeightView> BindIntegerLinear(const Checkpoint& checkpoint,
                                             const std::string& weight_name);

// BindIntegerLinear, then the logical shape must be `expected_shape`.
absl::Status ValidateIntegerLinear(const Checkpoint& checkpoint, const std::string& weight_name,
                                   const std::vector<int64_t>& expected_shape);

// An I8 or U4 weight as float32 [out, in].
absl::StatusOr<std::vector<float>> DequantizeIntegerToFloat(const WeightView& w);

}  // namespace r2::model

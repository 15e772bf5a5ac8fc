#pragma once
// The reference Linear for integer weights (kernels/quant_format.h): W8A8 with int8 weights per
// output channel and activations quantized per token at run time, and W4A16 with int4 weights in
// groups (float activations). The reference Linear (reference_dense.cc) dispatches here for I8
// and U4 weights.
#include "absl/status/status.h"
#include "kernels/backend.h"

namespace r2::cpu {

// y (+)= x W^T for an I8 (W8A8) or U4 (W4A16) weight. InvalidArgument for scale or zero-point
// shapes that do not match the weight, and for a strided batch (batch > 1).
absl::Status QuantizedLinear(const LinearParams& p);

}  // namespace r2::cpu

#pragma once
// Integer-weight Linear on CUDA (kernels/cuda/linear_int.cu): W8A8 (I8 weights per output
// channel, activations quantized per token at run time) and W4A16 (U4 weights in groups, float
// activations), the layouts of kernels/tensor.h (WeightView) and docs/quantization.md. Internal to
// kernels/cuda.
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_context.h"

namespace r2::cuda {

// Linear for an I8 or U4 weight (p.weight.integer_quantized()). Checks the weight against its
// scales (CheckIntegerWeight) and the params. Runs every I8 Linear, and U4 on its GEMV or its
// tensor-core kernel (5-64 rows, shapes in multiples of 128); *done is false only for a U4 weight
// that takes neither at rows >= kU4LtMinRows (not fp32_activations): the caller (linear.cu) then
// runs cuBLASLt on bf16 weight tiles made by DequantU4Tile, or LinearU4Gemv when cuBLASLt has no
// algorithm.
inline constexpr int64_t kU4LtMinRows = 9;
absl::Status LinearInteger(const Context& ctx, const LinearParams& p, bool* done);

// Every row of a (checked) U4 Linear through the float32 GEMV kernels, in passes of 8 rows.
absl::Status LinearU4Gemv(const Context& ctx, const LinearParams& p);

// Rows [o0, o0 + n) of a (checked) U4 weight as packed bf16 [n][in] at `tile` (device memory):
// bf16((q - z) * s), the float product rounded once more to bf16.
absl::Status DequantU4Tile(const Context& ctx, const WeightView& w, int64_t o0, int64_t n,
                           void* tile);

// MoeExperts with p.expert_views set: [3 * num_experts] host-side views (every expert's gate, then
// up, then down) whose data lives in device memory, in any format Linear takes (I8 and U4
// included). The expert ids are copied to the host (one synchronization), the pairs grouped by
// expert, and each selected expert runs as Linear calls on its gathered rows; the k results of a
// token are summed in order j = 0..top_k-1 into one value that is then added to h. Out-of-range
// ids contribute nothing. Not capturable in a CUDA Graph (the copy to the host).
absl::Status MoeExpertsByExpert(const Context& ctx, const MoeExpertsParams& p);

}  // namespace r2::cuda

#pragma once
// The CUDA backend's public face. Declared here, outside kernels/cuda, so that code built without
// CUDA can name it; kernels/cuda/cuda_backend.cc defines it when the CUDA toolkit is present and
// kernels/registry/backend_registry.cc answers Unavailable otherwise.
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace r2::cuda {

// The CUDA backend on `device`: every Backend op as CUDA kernels (cuBLASLt for large GEMMs),
// memory from cudaMalloc, one stream. Unavailable with the CUDA error text when there is no
// driver or device, InvalidArgument for a device index out of range.
// With `fp32_activations`, Linear keeps float32 activations at every row count (named
// "cuda-fp32"; exact to float32 rounding, slower prefill); otherwise larger row counts run bf16
// operands through cuBLASLt (about 1e-2 relative per product).
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device = 0,
                                                         bool fp32_activations = false);

}  // namespace r2::cuda

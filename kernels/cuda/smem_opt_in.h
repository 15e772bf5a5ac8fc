#pragma once
// Raising a kernel's dynamic shared memory limit (cudaFuncAttributeMaxDynamicSharedMemorySize)
// once per device instead of before every launch, so that a launch is plain stream work (as a
// CUDA Graph capture wants it). Internal to kernels/cuda.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "kernels/cuda/cuda_context.h"

namespace r2::cuda {

// One per kernel: a static in that kernel's launcher.
struct SmemOptIn {
  std::mutex mu;
  uint64_t devices = 0;  // bit d: the limit is raised on device d
};

// Lets `kernel` launch with `needed` bytes of dynamic shared memory on ctx.device: raises its
// limit to the device's opt-in maximum the first time (needed bytes each time when that maximum
// is unknown or the device index is past 63).
template <typename Kernel>
absl::Status EnsureSmemOptIn(SmemOptIn& state, Kernel* kernel, const Context& ctx, size_t needed) {
  if (needed <= 48 * 1024) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(state.mu);
  const bool cached = ctx.max_smem_per_block_optin > 0 && ctx.device >= 0 && ctx.device < 64;
  if (cached && (state.devices >> ctx.device & 1) != 0) return absl::OkStatus();
  const int bytes = cached ? std::max(ctx.max_smem_per_block_optin, static_cast<int>(needed))
                           : static_cast<int>(needed);
  R2_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  if (cached) state.devices |= uint64_t{1} << ctx.device;
  return absl::OkStatus();
}

}  // namespace r2::cuda

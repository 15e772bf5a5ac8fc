#pragma once
// What every CUDA kernel launcher receives: the stream, the cuBLASLt handle and device facts, plus
// a growable scratch area for ops that need temporary device memory (bf16 copies of activations,
// split-KV partial results). Internal to kernels/cuda; included by .cu and .cc files there only.
//
// The launchers are split by family, one file (or a few) each:
//   cuda_backend.cc       the Backend class: memory, argument checks, dispatch to the launchers
//   elementwise.cu        Embedding, RmsNorm, Rope, SiluMul, Add, GatherRows, ScatterAddRows
//   linear.cu             Linear (cuBLASLt for bf16/f16 at larger row counts, own GEMV kernels
//                         for small row counts, FP8 128x128 block-scaled weights)
//   linear_int.cu         Linear for I8 (W8A8) and U4 (W4A16) weights; MoeExperts over them
//   moe_route.cu          MoeRoute
//   mla_prefill.cu        MlaPrefillAttention
//   mla_decode.cu         MlaDecodeAttention (split over the KV length)
//   kv_cache.cu           KvCacheWrite (every KV cache format, bytes as the row codec)
//   moe_experts.cu        MoeExperts (the routed experts of a decode step, no host round trip)
//   sampling.cu           SampleRows (sampling where the logits are; results to the host)
// Argument checks on shapes, dtypes and strides happen on the host in each launcher (they return
// InvalidArgument naming the op and field); index arrays live on the device and are guarded in
// the kernels (an out-of-range index skips its row, never faults).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace r2::cuda {

// Turns a CUDA error into a status naming the call site: Internal for launch/runtime failures,
// ResourceExhausted for out-of-memory.
absl::Status CudaStatus(cudaError_t err, const char* what);
absl::Status CublasStatus(cublasStatus_t st, const char* what);

// Returns from the enclosing function when a CUDA call fails.
#define R2_CUDA_RETURN_IF_ERROR(call)                                          \
  do {                                                                         \
    cudaError_t _r2_err = (call);                                              \
    if (_r2_err != cudaSuccess) return ::r2::cuda::CudaStatus(_r2_err, #call); \
  } while (0)
// After a kernel launch: the launch error, if any.
#define R2_CUDA_RETURN_IF_LAUNCH_ERROR(what)                                  \
  do {                                                                        \
    cudaError_t _r2_err = cudaGetLastError();                                 \
    if (_r2_err != cudaSuccess) return ::r2::cuda::CudaStatus(_r2_err, what); \
  } while (0)

// A growable device buffer on the context's stream (stream-ordered cudaMallocAsync/FreeAsync, so
// growing never races with kernels still reading the old one).
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer();
  // At least `bytes` bytes, 256-byte aligned; contents undefined after a grow. Growing while
  // `stream` is being captured into a CUDA Graph is FailedPrecondition: warm up uncaptured first.
  absl::StatusOr<void*> Get(size_t bytes, cudaStream_t stream);
  // Frees the buffer now (waits for the device); the next Get allocates afresh.
  void Release();

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;  // cuBLASLt workspace
  size_t lt_workspace_bytes = 0;
  int sm_count = 0;
  int max_smem_per_block_optin = 0;  // bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin
  // Linear keeps float32 activations at every row count (the GEMV kernels, never bf16 operands
  // through cuBLASLt): the "cuda-fp32" backend, exact to float32 rounding, for checking the whole
  // model against the float32 goldens and for users who want that over speed.
  bool fp32_activations = false;
  // Scratch areas by purpose, so two live temporaries of one op never share memory.
  mutable ScratchBuffer linear_scratch;     // Linear: bf16 activations / dequantized weight tiles
  mutable ScratchBuffer attention_scratch;  // MLA decode: split-KV partial outputs and maxima
  mutable ScratchBuffer misc_scratch;       // anything else, one op at a time
  // Linear's cache of cuBLASLt descriptors and chosen algorithms (owned by linear.cu; created on
  // first use, destroyed with the context).
  mutable std::shared_ptr<void> linear_state;
};

// ---- launchers (one per Backend op) ---------------------------------------------------------
absl::Status Embedding(const Context& ctx, const EmbeddingParams& p);
absl::Status RmsNorm(const Context& ctx, const RmsNormParams& p);
absl::Status Linear(const Context& ctx, const LinearParams& p);
absl::Status Rope(const Context& ctx, const RopeParams& p);
absl::Status SiluMul(const Context& ctx, const SiluMulParams& p);
absl::Status Add(const Context& ctx, const AddParams& p);
absl::Status GatherRows(const Context& ctx, const GatherRowsParams& p);
absl::Status ScatterAddRows(const Context& ctx, const ScatterAddRowsParams& p);
absl::Status MoeRoute(const Context& ctx, const MoeRouteParams& p);
absl::Status MlaPrefillAttention(const Context& ctx, const MlaPrefillParams& p);
absl::Status KvCacheWrite(const Context& ctx, const KvCacheWriteParams& p);
absl::Status MlaDecodeAttention(const Context& ctx, const MlaDecodeParams& p);
// moe_experts.cu: decode-sized batches (rows * top_k <= kMoeExpertsMaxPairs) of BF16 or FP8
// experts, and I8/U4 experts given as expert_views (linear_int.cu); Unimplemented otherwise (the
// caller runs the experts one by one).
inline constexpr int64_t kMoeExpertsMaxPairs = 64;
absl::Status MoeExperts(const Context& ctx, const MoeExpertsParams& p);
// sampling.cu: one block per row, only specs up and results down.
absl::Status SampleRows(const Context& ctx, const SampleRowsParams& p);

}  // namespace r2::cuda

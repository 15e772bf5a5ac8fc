// The CUDA backend: device memory, copies through pinned staging, one stream, a cuBLASLt handle,
// and dispatch of every op to its launcher (kernels/cuda/*.cu).
#include "kernels/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_context.h"

namespace r2::cuda {

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat("cuda: ", what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      err == cudaErrorInitializationError || err == cudaErrorNotSupported) {
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

absl::Status CublasStatus(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat("cublasLt: ", what, ": status ", static_cast<int>(st));
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    return absl::InvalidArgumentError(msg);
  }
  return absl::InternalError(msg);
}

ScratchBuffer::~ScratchBuffer() { Release(); }

void ScratchBuffer::Release() {
  if (ptr_ != nullptr) {
    // Memory from cudaMallocAsync may be freed with cudaFree, which waits for the device first.
    cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
}

absl::StatusOr<void*> ScratchBuffer::Get(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) bytes = 256;
  if (ptr_ != nullptr && bytes <= bytes_ && stream == stream_) return ptr_;
  // Growing inside a CUDA Graph capture would hand later, uncaptured ops memory owned by the
  // graph: refuse with a clear error instead (run the step once uncaptured to size the scratch).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  R2_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda: scratch must grow to ", bytes,
        " bytes during a CUDA Graph capture; run the same step once before capturing it"));
  }
  // Grow geometrically so a sequence of slightly larger requests does not reallocate each time.
  size_t want = std::max(bytes, bytes_ + bytes_ / 2);
  want = (want + 255) / 256 * 256;
  if (ptr_ != nullptr) {
    R2_CUDA_RETURN_IF_ERROR(cudaFreeAsync(ptr_, stream_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* p = nullptr;
  cudaError_t err = cudaMallocAsync(&p, want, stream);
  if (err != cudaSuccess && want > bytes) {
    cudaGetLastError();
    want = (bytes + 255) / 256 * 256;
    err = cudaMallocAsync(&p, want, stream);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(absl::StrCat(
        "cuda: cannot allocate ", bytes, " bytes of scratch: ", cudaGetErrorString(err)));
  }
  ptr_ = p;
  bytes_ = want;
  stream_ = stream;
  return ptr_;
}

namespace {

// Host-to-device copies above this size go through pinned staging buffers in chunks of this size.
constexpr size_t kStagingChunk = size_t{16} << 20;
constexpr size_t kStagingThreshold = size_t{1} << 20;
constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;

class CudaBackend final : public Backend {
 public:
  CudaBackend() = default;
  ~CudaBackend() override {
    cudaSetDevice(ctx_.device);
    if (ctx_.stream != nullptr) cudaStreamSynchronize(ctx_.stream);
    ctx_.linear_state.reset();
    ctx_.linear_scratch.Release();
    ctx_.attention_scratch.Release();
    ctx_.misc_scratch.Release();
    for (int i = 0; i < 2; ++i) {
      if (staging_done_[i] != nullptr) cudaEventDestroy(staging_done_[i]);
      if (staging_[i] != nullptr) cudaFreeHost(staging_[i]);
    }
    if (ctx_.lt != nullptr) cublasLtDestroy(ctx_.lt);
    if (ctx_.lt_workspace != nullptr) cudaFree(ctx_.lt_workspace);
    if (ctx_.stream != nullptr) cudaStreamDestroy(ctx_.stream);
  }

  absl::Status Init(int device, bool fp32_activations) {
    ctx_.device = device;
    ctx_.fp32_activations = fp32_activations;
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    R2_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&ctx_.stream, cudaStreamNonBlocking));
    if (absl::Status s = CublasStatus(cublasLtCreate(&ctx_.lt), "cublasLtCreate"); !s.ok()) {
      return s;
    }
    R2_CUDA_RETURN_IF_ERROR(cudaMalloc(&ctx_.lt_workspace, kLtWorkspaceBytes));
    ctx_.lt_workspace_bytes = kLtWorkspaceBytes;
    R2_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetAttribute(&ctx_.sm_count, cudaDevAttrMultiProcessorCount, device));
    R2_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(
        &ctx_.max_smem_per_block_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    return absl::OkStatus();
  }

  std::string_view name() const override { return ctx_.fp32_activations ? "cuda-fp32" : "cuda"; }
  bool host_memory() const override { return false; }

  absl::StatusOr<void*> Allocate(size_t bytes) override {
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 256 : bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) error so later calls do not report it
      if (err == cudaErrorMemoryAllocation) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cuda: cannot allocate ", bytes, " bytes of device memory"));
      }
      return CudaStatus(err, "cudaMalloc");
    }
    return p;
  }

  void Free(void* ptr) override {
    if (ptr == nullptr) return;
    cudaSetDevice(ctx_.device);
    cudaFree(ptr);
  }

  absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    if (dst == nullptr || host_src == nullptr) {
      return absl::InvalidArgumentError("CopyToBackend: null pointer");
    }
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    if (bytes < kStagingThreshold) {
      // Pageable source: the call returns once the source has been read into the driver's own
      // staging memory, so the caller may reuse it right away.
      R2_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
      return absl::OkStatus();
    }
    if (absl::Status s = EnsureStaging(); !s.ok()) {
      // No pinned memory: a plain synchronous copy still works.
      R2_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_.stream));
      R2_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
      return absl::OkStatus();
    }
    auto* d = static_cast<char*>(dst);
    const auto* h = static_cast<const char*>(host_src);
    for (size_t done = 0; done < bytes;) {
      const size_t n = std::min(kStagingChunk, bytes - done);
      const int b = next_staging_;
      next_staging_ ^= 1;
      // Wait until the previous copy out of this staging buffer has finished.
      R2_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(staging_done_[b]));
      std::memcpy(staging_[b], h + done, n);
      R2_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(d + done, staging_[b], n, cudaMemcpyHostToDevice, ctx_.stream));
      R2_CUDA_RETURN_IF_ERROR(cudaEventRecord(staging_done_[b], ctx_.stream));
      done += n;
    }
    return absl::OkStatus();
  }

  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    if (host_dst == nullptr || src == nullptr) {
      return absl::InvalidArgumentError("CopyToHost: null pointer");
    }
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    R2_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    R2_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_.stream));
    return absl::OkStatus();
  }

  absl::Status CopyWithin(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0 || dst == src) return absl::OkStatus();
    if (dst == nullptr || src == nullptr) {
      return absl::InvalidArgumentError("CopyWithin: null pointer");
    }
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    const bool overlap = d < s + bytes && s < d + bytes;
    if (!overlap) {
      R2_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
      return absl::OkStatus();
    }
    // memmove semantics: go through scratch (cudaMemcpy's result is undefined for overlaps).
    absl::StatusOr<void*> tmp = ctx_.misc_scratch.Get(bytes, ctx_.stream);
    if (!tmp.ok()) return tmp.status();
    R2_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(*tmp, src, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
    R2_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst, *tmp, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
    return absl::OkStatus();
  }

  absl::Status Zero(void* dst, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    if (dst == nullptr) return absl::InvalidArgumentError("Zero: null pointer");
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    R2_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, 0, bytes, ctx_.stream));
    return absl::OkStatus();
  }

  absl::Status Synchronize() override {
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    R2_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ctx_.stream));
    R2_CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }

  absl::StatusOr<MemoryInfo> QueryMemory() override {
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    size_t free_bytes = 0, total_bytes = 0;
    R2_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    return MemoryInfo{static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
  }

  absl::Status Embedding(const EmbeddingParams& p) override {
    return Run([&] { return cuda::Embedding(ctx_, p); });
  }
  absl::Status RmsNorm(const RmsNormParams& p) override {
    return Run([&] { return cuda::RmsNorm(ctx_, p); });
  }
  absl::Status Linear(const LinearParams& p) override {
    return Run([&] { return cuda::Linear(ctx_, p); });
  }
  absl::Status Rope(const RopeParams& p) override {
    return Run([&] { return cuda::Rope(ctx_, p); });
  }
  absl::Status SiluMul(const SiluMulParams& p) override {
    return Run([&] { return cuda::SiluMul(ctx_, p); });
  }
  absl::Status Add(const AddParams& p) override {
    return Run([&] { return cuda::Add(ctx_, p); });
  }
  absl::Status GatherRows(const GatherRowsParams& p) override {
    return Run([&] { return cuda::GatherRows(ctx_, p); });
  }
  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    return Run([&] { return cuda::ScatterAddRows(ctx_, p); });
  }
  absl::Status MoeRoute(const MoeRouteParams& p) override {
    return Run([&] { return cuda::MoeRoute(ctx_, p); });
  }
  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    return Run([&] { return cuda::MlaPrefillAttention(ctx_, p); });
  }
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override {
    return Run([&] { return cuda::KvCacheWrite(ctx_, p); });
  }
  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    return Run([&] { return cuda::MlaDecodeAttention(ctx_, p); });
  }
  // KvCacheWrite (kv_cache.cu) encodes and MlaDecodeAttention (mla_decode.cu) reads every
  // format of kernels/kv_cache_format.h; prefill attends to the fresh rows, never the cache.
  bool SupportsKvCacheDType(KvCacheDType /*dtype*/) const override { return true; }
  absl::Status MoeExperts(const MoeExpertsParams& p) override {
    return Run([&] { return cuda::MoeExperts(ctx_, p); });
  }
  absl::Status SampleRows(const SampleRowsParams& p) override {
    return Run([&] { return cuda::SampleRows(ctx_, p); });
  }

 private:
  template <typename F>
  absl::Status Run(F&& launch) {
    R2_CUDA_RETURN_IF_ERROR(cudaSetDevice(ctx_.device));
    return launch();
  }

  absl::Status EnsureStaging() {
    if (staging_[0] != nullptr) return absl::OkStatus();
    for (int i = 0; i < 2; ++i) {
      R2_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&staging_[i], kStagingChunk, cudaHostAllocDefault));
      R2_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&staging_done_[i], cudaEventDisableTiming));
      // Recorded once so the first wait on it returns at once.
      R2_CUDA_RETURN_IF_ERROR(cudaEventRecord(staging_done_[i], ctx_.stream));
    }
    return absl::OkStatus();
  }

  Context ctx_;
  void* staging_[2] = {nullptr, nullptr};
  cudaEvent_t staging_done_[2] = {nullptr, nullptr};
  int next_staging_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device, bool fp32_activations) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("cuda: no usable CUDA device: ", cudaGetErrorName(err), " (",
                     cudaGetErrorString(err), ")"));
  }
  if (count == 0) return absl::UnavailableError("cuda: no CUDA device present");
  if (device < 0 || device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda: device ", device, " out of range (", count, " devices)"));
  }
  auto backend = std::make_unique<CudaBackend>();
  if (absl::Status s = backend->Init(device, fp32_activations); !s.ok()) {
    if (absl::IsInternal(s)) return absl::UnavailableError(s.message());
    return s;
  }
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace r2::cuda

#pragma once
// BackendBuffer: one allocation in a Backend's memory space, freed when the buffer goes away.
// Reserve() only grows (a larger request frees the old allocation and takes a new one, contents
// not kept), so a buffer sized for the largest step stops allocating. The backend must outlive
// the buffer.
#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace r2::model {

class BackendBuffer {
 public:
  BackendBuffer() = default;
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;
  BackendBuffer(BackendBuffer&& other) noexcept { *this = std::move(other); }
  BackendBuffer& operator=(BackendBuffer&& other) noexcept {
    if (this != &other) {
      Release();
      backend_ = std::exchange(other.backend_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ~BackendBuffer() { Release(); }

  // At least `bytes` of `backend` memory (contents undefined after a grow).
  absl::Status Reserve(Backend* backend, size_t bytes) {
    if (data_ != nullptr && backend == backend_ && bytes <= bytes_) return absl::OkStatus();
    Release();
    absl::StatusOr<void*> ptr = backend->Allocate(bytes);
    if (!ptr.ok()) return ptr.status();
    backend_ = backend;
    data_ = *ptr;
    bytes_ = bytes;
    return absl::OkStatus();
  }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void Release() {
    if (data_ != nullptr) backend_->Free(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A typed grow-only array in backend memory (the model's scratch activations).
template <typename T>
class BackendArray {
 public:
  absl::Status Grow(Backend* backend, int64_t n) {
    return buffer_.Reserve(backend, static_cast<size_t>(n > 0 ? n : 1) * sizeof(T));
  }
  T* data() const { return buffer_.as<T>(); }

 private:
  BackendBuffer buffer_;
};

}  // namespace r2::model

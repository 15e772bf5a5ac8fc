#pragma once
// Helpers for CUDA-vs-CPU-reference kernel tests. They use only the Backend interface
// (MakeBackend("cuda")), so the tests compile and skip cleanly in builds without CUDA or without a
// device.
//
//   class MyTest : public r2::cudatest::CudaTest {};
//   TEST_F(MyTest, Op) {
//     DeviceBuffer x = Upload(host_x);            // device copy of a vector
//     DeviceBuffer out = Poisoned(n);             // n floats of NaN
//     ASSERT_OK(gpu().Op({... x.f32(), out.f32() ...}));
//     ExpectClose(out.Floats(n), reference, 1e-5, "Op");
//   }
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/numeric.h"
#include "kernels/tensor.h"

namespace r2::cudatest {

// Memory from a backend's Allocate(), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* backend, size_t bytes) : backend_(backend), bytes_(bytes) {
    absl::StatusOr<void*> p = backend->Allocate(bytes);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) ptr_ = *p;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      backend_ = o.backend_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
    }
    return *this;
  }
  ~DeviceBuffer() { Reset(); }

  void* get() const { return ptr_; }
  float* f32() const { return static_cast<float*>(ptr_); }
  int32_t* i32() const { return static_cast<int32_t*>(ptr_); }
  size_t bytes() const { return bytes_; }

  void Write(const void* host, size_t bytes) {
    ASSERT_LE(bytes, bytes_);
    const absl::Status s = backend_->CopyToBackend(ptr_, host, bytes);
    EXPECT_TRUE(s.ok()) << s;
  }
  template <typename T>
  std::vector<T> Read(size_t n) const {
    std::vector<T> out(n);
    EXPECT_LE(n * sizeof(T), bytes_);
    const absl::Status s = backend_->CopyToHost(out.data(), ptr_, n * sizeof(T));
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }
  std::vector<float> Floats(size_t n) const { return Read<float>(n); }

 private:
  void Reset() {
    if (ptr_ != nullptr) backend_->Free(ptr_);
    ptr_ = nullptr;
  }
  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

inline std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<int32_t> RandomInts(std::mt19937& rng, size_t n, int32_t lo, int32_t hi) {
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> NaNs(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// Values stored in `dtype` (BF16/F16/F32/F8_E4M3): the raw bytes to upload.
inline std::vector<uint8_t> Encode(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kBF16: {
        const uint16_t b = FloatToBF16(values[i]);
        std::memcpy(&bytes[2 * i], &b, 2);
        break;
      }
      case DType::kF16: {
        const uint16_t b = FloatToHalf(values[i]);
        std::memcpy(&bytes[2 * i], &b, 2);
        break;
      }
      case DType::kF8E4M3:
        bytes[i] = FloatToFp8E4M3(values[i]);
        break;
      default:
        std::memcpy(&bytes[4 * i], &values[i], 4);
    }
  }
  return bytes;
}

// The same values on the host (for the reference) and on the device, as tensor views.
struct MirroredTensor {
  std::vector<uint8_t> host;
  DeviceBuffer device;
  TensorView host_view;
  TensorView device_view;
};

// Relative error ||got - ref||_2 / ||ref||_2 over the elements where ref is a number. An element
// where exactly one of the two is NaN (unwritten output, a write outside the op's region, a
// non-finite result) counts as a failure: *mismatch is its index, or -1 when there is none.
inline double RelativeL2(const std::vector<float>& got, const std::vector<float>& ref,
                         int64_t* mismatch) {
  *mismatch = -1;
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const bool gn = std::isnan(got[i]), rn = std::isnan(ref[i]);
    if (gn || rn) {
      if (gn != rn && *mismatch < 0) *mismatch = static_cast<int64_t>(i);
      continue;
    }
    if (!std::isfinite(got[i]) && got[i] != ref[i] && *mismatch < 0) {
      *mismatch = static_cast<int64_t>(i);
    }
    const double d = static_cast<double>(got[i]) - ref[i];
    diff += d * d;
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return norm == 0.0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

inline void ExpectClose(const std::vector<float>& got, const std::vector<float>& ref, double bound,
                        const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int64_t mismatch = -1;
  const double err = RelativeL2(got, ref, &mismatch);
  EXPECT_LT(mismatch, 0) << what << ": element " << mismatch << " is "
                         << (mismatch >= 0 ? got[mismatch] : 0.0f) << ", reference "
                         << (mismatch >= 0 ? ref[mismatch] : 0.0f);
  EXPECT_LE(err, bound) << what << ": relative L2 error " << err;
}

// Fixture: gpu() is the CUDA backend (the test is skipped with the reason when there is none),
// cpu() the float32 reference.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend("cuda");
    if (!b.ok()) GTEST_SKIP() << "no CUDA backend: " << b.status();
    gpu_ = std::move(*b);
    cpu_ = MakeCpuReferenceBackend();
  }

  Backend& gpu() { return *gpu_; }
  Backend& cpu() { return *cpu_; }

  DeviceBuffer Alloc(size_t bytes) { return DeviceBuffer(gpu_.get(), bytes); }
  template <typename T>
  DeviceBuffer Upload(const std::vector<T>& v) {
    DeviceBuffer b(gpu_.get(), std::max<size_t>(1, v.size()) * sizeof(T));
    if (!v.empty()) b.Write(v.data(), v.size() * sizeof(T));
    return b;
  }
  DeviceBuffer Poisoned(size_t n) { return Upload(NaNs(n)); }

  // `values` rounded to `dtype`, on host and device, with `shape`.
  MirroredTensor Mirror(const std::vector<float>& values, DType dtype, std::vector<int64_t> shape) {
    MirroredTensor t;
    t.host = Encode(values, dtype);
    t.device = Upload(t.host);
    t.host_view = TensorView{dtype, shape, t.host.data()};
    t.device_view = TensorView{dtype, std::move(shape), t.device.get()};
    return t;
  }

  std::mt19937 rng_{20261128};

 private:
  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<Backend> cpu_;
};

}  // namespace r2::cudatest

// The Backend defaults: host memory and memcpy, shared by every CPU backend; LinearGroup as Linear
// on each product.
#include "kernels/backend.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "absl/strings/str_cat.h"

namespace r2 {

absl::StatusOr<void*> Backend::Allocate(size_t bytes) {
  // aligned_alloc wants a multiple of the alignment; a zero-byte request still gets a pointer.
  // A buffer of 2 MiB or more (the KV cache, the absorbed attention matrices, activations of
  // long prefills) starts on a 2 MiB boundary and is advised into transparent huge pages: the
  // kernels walk it in rows scattered over many 4 KiB pages otherwise (one TLB miss each).
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t align = bytes >= kHuge ? kHuge : 256;
  const size_t rounded = (bytes + align - 1) / align * align;
  void* ptr = std::aligned_alloc(align, rounded == 0 ? align : rounded);
#if defined(__linux__)
  if (ptr != nullptr && align == kHuge) ::madvise(ptr, rounded, MADV_HUGEPAGE);  // advice only
#endif
  if (ptr == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat(std::string(name()), ": cannot allocate ", bytes, " bytes of host memory"));
  }
  return ptr;
}

void Backend::Free(void* ptr) { std::free(ptr); }

absl::Status Backend::CopyToBackend(void* dst, const void* host_src, size_t bytes) {
  if (bytes != 0) std::memcpy(dst, host_src, bytes);
  return absl::OkStatus();
}

absl::Status Backend::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  if (bytes != 0) std::memcpy(host_dst, src, bytes);
  return absl::OkStatus();
}

absl::Status Backend::CopyWithin(void* dst, const void* src, size_t bytes) {
  if (bytes != 0 && dst != src) std::memmove(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status Backend::Zero(void* dst, size_t bytes) {
  if (bytes != 0) std::memset(dst, 0, bytes);
  return absl::OkStatus();
}

absl::StatusOr<MemoryInfo> Backend::QueryMemory() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  int64_t kb = 0;
  MemoryInfo info;
  while (meminfo >> key >> kb >> unit) {
    if (key == "MemTotal:") info.total_bytes = kb * 1024;
    if (key == "MemAvailable:") info.free_bytes = kb * 1024;
  }
  if (info.total_bytes == 0) return absl::UnavailableError("cannot read /proc/meminfo");
  return info;
}

absl::Status CheckLinearGroup(std::span<const LinearParams> products) {
  for (size_t i = 0; i < products.size(); ++i) {
    const LinearParams& p = products[i];
    const char* field = nullptr;
    if (p.batch != 1) {
      field = "batch (must be 1)";
    } else if (p.weight_transposed) {
      field = "weight_transposed (must be false)";
    } else if (p.x != products[0].x) {
      field = "x (differs from products[0]'s)";
    } else if (p.x_stride != products[0].x_stride) {
      field = "x_stride (differs from products[0]'s)";
    } else if (p.rows != products[0].rows) {
      field = "rows (differs from products[0]'s)";
    }
    if (field != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("LinearGroup: products[", i, "].", field));
    }
  }
  return absl::OkStatus();
}

absl::Status Backend::LinearGroup(std::span<const LinearParams> products) {
  if (absl::Status s = CheckLinearGroup(products); !s.ok()) return s;
  for (size_t i = 0; i < products.size(); ++i) {
    if (absl::Status s = Linear(products[i]); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("LinearGroup: products[", i, "]: ", s.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Backend::MoeExperts(const MoeExpertsParams&) {
  return absl::UnimplementedError(
      absl::StrCat("MoeExperts: not implemented by ", std::string(name())));
}

absl::Status Backend::SampleRows(const SampleRowsParams& p) {
  if (host_memory()) return SampleRowsOnHost(p);
  if (absl::Status s = CheckSampleRows(p); !s.ok()) return s;
  // Each named row is copied to the host once; the reference samples the copies in spec order.
  const int64_t stride = p.row_stride == 0 ? p.vocab_size : p.row_stride;
  std::vector<float> rows(static_cast<size_t>(p.num_specs * p.vocab_size));
  std::vector<SampleRowSpec> specs(p.specs, p.specs + p.num_specs);
  for (int64_t i = 0; i < p.num_specs; ++i) {
    float* dst = rows.data() + i * p.vocab_size;
    absl::Status s = CopyToHost(dst, p.logits + specs[i].row * stride,
                                static_cast<size_t>(p.vocab_size) * sizeof(float));
    if (!s.ok()) return s;
    specs[i].row = i;
  }
  SampleRowsParams host = p;
  host.logits = rows.data();
  host.num_rows = p.num_specs;
  host.row_stride = 0;
  host.specs = specs.data();
  return SampleRowsOnHost(host);
}

}  // namespace r2

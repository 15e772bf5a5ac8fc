#include "engine/model/huge_page_weights.h"

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace r2::model {
namespace {

constexpr size_t kChunkBytes = size_t{64} << 20;  // the most memory held twice at a time

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

absl::Status Errno(const char* call, size_t offset) {
  return absl::InternalError(absl::StrCat("moving weights to huge pages: ", call, " at offset ",
                                          offset, ": ", std::strerror(errno)));
}

// Anonymous memory of `bytes` starting on a 2 MiB boundary, advised MADV_HUGEPAGE.
void* AlignedAnonymous(size_t bytes) {
  const size_t reserve = bytes + kHugePageBytes;
  void* raw = ::mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kHugePageBytes - 1) & ~(uintptr_t{kHugePageBytes} - 1);
  if (aligned > begin) ::munmap(raw, aligned - begin);
  const uintptr_t end = begin + reserve, used_end = aligned + bytes;
  if (end > used_end) ::munmap(reinterpret_cast<void*>(used_end), end - used_end);
  void* p = reinterpret_cast<void*>(aligned);
  ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP the pages are 4 KiB
  return p;
}

}  // namespace

absl::Status MoveToHugePages(absl::Span<const uint8_t> mapping, HugePageMove* moved) {
  const double t0 = Now();
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  auto* base = const_cast<uint8_t*>(mapping.data());
  if (mapping.empty()) return absl::OkStatus();
  if (reinterpret_cast<uintptr_t>(base) % page != 0) {
    return absl::InvalidArgumentError("moving weights to huge pages: mapping not page-aligned");
  }
  // The mapping covers whole pages; bytes past the data in its last page read as zero.
  const size_t total = (mapping.size() + page - 1) / page * page;
  absl::Status status;
  for (size_t off = 0; off < total; off += kChunkBytes) {
    const size_t len = std::min(kChunkBytes, total - off);
    void* fresh = AlignedAnonymous(len);
    if (fresh == nullptr) {
      status = Errno("mmap", off);
      break;
    }
    std::memcpy(fresh, base + off, std::min(len, mapping.size() - off));
    if (::mprotect(fresh, len, PROT_READ) != 0) {
      status = Errno("mprotect", off);
      ::munmap(fresh, len);
      break;
    }
    // Replaces the file pages of [off, off + len) by the copy (the old pages are unmapped).
    if (::mremap(fresh, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, base + off) == MAP_FAILED) {
      status = Errno("mremap", off);
      ::munmap(fresh, len);
      break;
    }
    if (moved != nullptr) moved->bytes += static_cast<int64_t>(len);
  }
  if (moved != nullptr) moved->seconds += Now() - t0;
  return status;
}

HugePageMove PlaceWeightsInHugePages(absl::Span<const absl::Span<const uint8_t>> mappings) {
  HugePageMove moved;
  if (!HugePageWeightsEnabled()) return moved;
  int64_t total = 0;
  for (const auto& m : mappings) total += static_cast<int64_t>(m.size());
  const int64_t available = AvailableMemoryBytes();
  if (total == 0 || available < 0 || total + (int64_t{1} << 30) > available) return moved;
  for (const auto& m : mappings) {
    if (absl::Status s = MoveToHugePages(m, &moved); !s.ok()) {
      std::fprintf(stderr, "r2serve: weights stay partly file-backed: %s\n",
                   std::string(s.message()).c_str());
      break;
    }
  }
  moved.huge_bytes = AnonHugePageBytes(mappings);
  return moved;
}

int64_t AnonHugePageBytes(absl::Span<const absl::Span<const uint8_t>> ranges) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  int64_t total = 0;
  while (std::getline(smaps, line)) {
    unsigned long long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx ", &lo, &hi) == 2) {  // a mapping's first line
      inside = false;
      for (const auto& r : ranges) {
        const auto b = reinterpret_cast<uintptr_t>(r.data()), e = b + r.size();
        if (lo < e && hi > b) inside = true;
      }
      continue;
    }
    long long kb = 0;
    if (inside && std::sscanf(line.c_str(), "AnonHugePages: %lld kB", &kb) == 1) {
      total += kb * 1024;
    }
  }
  return total;
}

bool HugePageWeightsEnabled() {
  const char* v = std::getenv("R2_HUGE_PAGE_WEIGHTS");
  return v == nullptr || std::string(v) != "0";
}

int64_t AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    long long kb = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %lld kB", &kb) == 1) return kb * 1024;
  }
  return -1;
}

}  // namespace r2::model

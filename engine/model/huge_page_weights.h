#pragma once
// Host-backend weights in transparent huge pages. A checkpoint's safetensors files are mapped
// read-only (SafetensorsFile), and on a host backend the kernels read the weights straight from
// those mappings. File pages are 4 KiB (the page cache of an ordinary file is not huge), so a
// decode step that streams a few hundred MB of weights walks the page tables for every 4 KiB it
// reads. MoveToHugePages replaces a mapping, in place and chunk by chunk, with anonymous memory
// advised MADV_HUGEPAGE (2 MiB pages where the kernel grants them): the same bytes at the same
// addresses (views already handed out stay valid; no dequantized copy: fp8 stays fp8), read-only
// again afterwards. Each chunk's file pages leave the process as its anonymous copy takes their
// place, so the resident size grows by at most one chunk beyond the weights themselves (the
// page cache keeps its clean, reclaimable copy of the file).
//
// DeepseekModel::Create does this for host backends (Backend::host_memory()) unless the
// environment says R2_HUGE_PAGE_WEIGHTS=0, and only when the checkpoint fits in the memory the
// kernel reports available; otherwise the weights stay file-backed.
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace r2::model {

// Alignment SafetensorsFile gives its mappings, so that every 2 MiB of a file can be one page.
inline constexpr size_t kHugePageBytes = size_t{2} << 20;

struct HugePageMove {
  int64_t bytes = 0;       // bytes moved into anonymous memory
  int64_t huge_bytes = 0;  // of them, in huge pages (AnonHugePages of the moved ranges)
  double seconds = 0;      // wall time of the move
};

// Moves the pages of `mapping` (a private read-only mapping, page-aligned start; 2 MiB-aligned
// for huge pages) into anonymous memory, in place. On an error the chunks moved so far stay
// moved (same bytes) and the rest stay file-backed; the status names the failing call.
absl::Status MoveToHugePages(absl::Span<const uint8_t> mapping, HugePageMove* moved);

// What DeepseekModel::Create does for host backends: when HugePageWeightsEnabled() and the
// mappings fit in AvailableMemoryBytes() with 1 GiB to spare, MoveToHugePages on each, then
// AnonHugePageBytes. A failed move is reported on stderr and leaves the weights usable.
HugePageMove PlaceWeightsInHugePages(absl::Span<const absl::Span<const uint8_t>> mappings);

// Bytes of the ranges that sit in anonymous huge pages, from /proc/self/smaps (0 when unknown).
int64_t AnonHugePageBytes(absl::Span<const absl::Span<const uint8_t>> ranges);

// Whether the environment allows the move (R2_HUGE_PAGE_WEIGHTS unset or not "0"), and the
// memory the kernel reports available (MemAvailable, bytes; -1 when unknown).
bool HugePageWeightsEnabled();
int64_t AvailableMemoryBytes();

}  // namespace r2::model

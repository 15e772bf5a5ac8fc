#pragma once
// The optimized CPU backend: vectorized (AVX-512, AVX2+FMA, or portable code chosen at run time)
// and OpenMP-threaded kernels behind the Backend interface, tested against the reference ops.
//   auto backend = MakeCpuOptimizedBackend();  // the best instruction set this CPU has
//   backend->name();                           // "cpu (avx512)"
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace r2 {

enum class CpuIsa : uint8_t {
  kPortable,  // plain C++ (the compiler's baseline vectors)
  kAvx2,      // AVX2 + FMA + F16C
  kAvx512,    // AVX-512 F/BW/VL/DQ + FMA + F16C
};

// "portable", "avx2", "avx512".
std::string_view CpuIsaName(CpuIsa isa);
// Whether this CPU (and this build) can run `isa`.
bool CpuIsaSupported(CpuIsa isa);
// The best supported instruction set; detected once per process.
CpuIsa DetectCpuIsa();

// The optimized backend on the best instruction set of this CPU.
std::unique_ptr<Backend> MakeCpuOptimizedBackend();
// The optimized backend forced onto `isa` (tests run every path the machine supports);
// Unavailable when the CPU or the build cannot run it.
absl::StatusOr<std::unique_ptr<Backend>> MakeCpuOptimizedBackend(CpuIsa isa);

}  // namespace r2

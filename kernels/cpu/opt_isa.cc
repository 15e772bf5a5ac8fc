// Instruction-set detection for the optimized CPU backend and the table of kernels per set.
#include <cstdio>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

#include "kernels/cpu/opt_backend.h"
#include "kernels/cpu/opt_quant.h"
#include "kernels/cpu/opt_simd.h"

namespace r2 {

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kPortable:
      break;
  }
  return "portable";
}

#if defined(__x86_64__) && defined(__GNUC__)
// F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
static bool HasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

bool CpuIsaSupported(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable:
      return true;
#if defined(__x86_64__) && defined(__GNUC__)
    case CpuIsa::kAvx2:
      return cpu::Avx2Kernels() != nullptr && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma") && HasF16c();
    case CpuIsa::kAvx512:
      return cpu::Avx512Kernels() != nullptr && CpuIsaSupported(CpuIsa::kAvx2) &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    default:
      return false;
  }
}

bool CpuHasAvx512Vnni() {
#if defined(__x86_64__) && defined(__GNUC__)
  // CPUID leaf 7, sub-leaf 0, ECX bit 11 (AVX512_VNNI); the OS must save the AVX-512 state, which
  // CpuIsaSupported(kAvx512) checks.
  static const bool vnni = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return CpuIsaSupported(CpuIsa::kAvx512) &&
           __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 11)) != 0;
  }();
  return vnni;
#else
  return false;
#endif
}

CpuIsa DetectCpuIsa() {
  static const CpuIsa best = [] {
    for (CpuIsa isa : {CpuIsa::kAvx512, CpuIsa::kAvx2}) {
      if (CpuIsaSupported(isa)) return isa;
    }
    return CpuIsa::kPortable;
  }();
  return best;
}

namespace cpu {

const SimdKernels& KernelsFor(CpuIsa isa) {
  if (isa == CpuIsa::kAvx512 && CpuIsaSupported(isa)) return *Avx512Kernels();
  if (isa == CpuIsa::kAvx2 && CpuIsaSupported(isa)) return *Avx2Kernels();
  return PortableKernels();
}

}  // namespace cpu
}  // namespace r2

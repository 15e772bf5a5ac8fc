#pragma once
// The instruction sets this machine runs, for the tests that check the optimized CPU kernels on
// each of them (every path forced in turn).
#include <vector>

#include "kernels/cpu/opt_backend.h"

namespace r2::testing {

inline std::vector<CpuIsa> SupportedIsas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (CpuIsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

}  // namespace r2::testing

// MakeBackend(name): the one place that knows every backend this binary was built with.
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/cuda_backend.h"

namespace r2 {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view name) {
  if (name == "cpu") return MakeCpuOptimizedBackend();
  if (name == "cpu-reference") return MakeCpuReferenceBackend();
  if (name == "checked-memory") return MakeCheckedMemoryBackend();
  if (name == "cuda" || name == "cuda-fp32") {
#if defined(R2_HAVE_CUDA)
    return cuda::MakeCudaBackend(0, /*fp32_activations=*/name == "cuda-fp32");
#else
    return absl::UnavailableError(
        "this r2serve was built without CUDA (no nvcc at build time); rebuild with "
        "-DR2_CUDA=ON on a machine with the CUDA toolkit, or use --device cpu");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", std::string(name),
                   "' (known: cpu, cpu-reference, cuda, checked-memory)"));
}

}  // namespace r2

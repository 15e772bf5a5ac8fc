// MakeCpuOptimizedBackend(): logs the instruction set it picked once per process (stderr), then the
// optimized ops (opt_*.cc) on one instruction set, the reference
// ops where the reference is already as fast as the data movement allows (embedding, RoPE, add,
// gather/scatter of rows, the cache write).
#include "kernels/cpu/opt_backend.h"

#include <cstdio>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/opt_amx.h"
#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_quant.h"
#include "kernels/cpu/opt_thread_pool.h"
#include "kernels/cpu/reference_ops.h"

namespace r2 {
namespace {

class CpuOptimizedBackend final : public Backend {
 public:
  explicit CpuOptimizedBackend(CpuIsa isa)
      : k_(cpu::KernelsFor(isa)), name_(absl::StrCat("cpu (", std::string(CpuIsaName(isa)), ")")) {}

  std::string_view name() const override { return name_; }
  absl::Status Embedding(const EmbeddingParams& p) override { return cpu::OptEmbedding(k_, p); }
  absl::Status RmsNorm(const RmsNormParams& p) override { return cpu::OptRmsNorm(k_, p); }
  absl::Status Linear(const LinearParams& p) override {
    return p.weight.integer_quantized() && !p.weight_transposed ? cpu::OptQuantLinear(k_, p)
                                                                : cpu::OptLinear(k_, p);
  }
  absl::Status LinearGroup(std::span<const LinearParams> products) override {
    if (absl::Status s = CheckLinearGroup(products); !s.ok()) return s;
    if (cpu::OptLinearGroup(k_, products)) return absl::OkStatus();
    return Backend::LinearGroup(products);  // Linear on each
  }
  bool SupportsTransposedLinear() const override { return true; }
  absl::Status Rope(const RopeParams& p) override { return cpu::Rope(p); }
  absl::Status SiluMul(const SiluMulParams& p) override { return cpu::OptSiluMul(k_, p); }
  absl::Status Add(const AddParams& p) override { return cpu::Add(p); }
  absl::Status GatherRows(const GatherRowsParams& p) override { return cpu::GatherRows(p); }
  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    return cpu::ScatterAddRows(p);
  }
  absl::Status MoeRoute(const MoeRouteParams& p) override { return cpu::OptMoeRoute(p); }
  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    return cpu::GemmMlaPrefillAttention(k_, p);
  }
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override {
    return cpu::OptKvCacheWrite(p);
  }
  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    return cpu::OptMlaDecodeAttention(k_, p);
  }
  absl::Status MoeExperts(const MoeExpertsParams& p) override { return cpu::OptMoeExperts(k_, p); }

 private:
  const cpu::SimdKernels& k_;
  std::string name_;
};

}  // namespace

std::unique_ptr<Backend> MakeCpuOptimizedBackend() {
  const CpuIsa isa = DetectCpuIsa();
  static std::once_flag logged;
  std::call_once(logged, [isa] {
    const bool amx = isa == CpuIsa::kAvx512 && cpu::AmxBf16Usable();
    std::fprintf(stderr, "r2serve: cpu backend: %s kernels%s, %d threads\n",
                 std::string(CpuIsaName(isa)).c_str(),
                 amx ? " (AMX-BF16 tiles for bf16 Linear on 5-15 rows)" : "",
                 cpu::CpuThreadPool::Get().threads());
  });
  return std::make_unique<CpuOptimizedBackend>(isa);
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCpuOptimizedBackend(CpuIsa isa) {
  if (!CpuIsaSupported(isa)) {
    return absl::UnavailableError(
        absl::StrCat("this CPU cannot run the ", std::string(CpuIsaName(isa)), " kernels"));
  }
  return std::unique_ptr<Backend>(std::make_unique<CpuOptimizedBackend>(isa));
}

}  // namespace r2

// MakeCpuReferenceBackend(): the Backend interface over the reference ops in reference_*.cc.
#include "kernels/backend.h"
#include "kernels/cpu/reference_ops.h"

namespace r2 {
namespace {

class CpuReferenceBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu-reference"; }
  absl::Status Embedding(const EmbeddingParams& p) override { return cpu::Embedding(p); }
  absl::Status RmsNorm(const RmsNormParams& p) override { return cpu::RmsNorm(p); }
  absl::Status Linear(const LinearParams& p) override { return cpu::Linear(p); }
  bool SupportsTransposedLinear() const override { return true; }
  absl::Status Rope(const RopeParams& p) override { return cpu::Rope(p); }
  absl::Status SiluMul(const SiluMulParams& p) override { return cpu::SiluMul(p); }
  absl::Status Add(const AddParams& p) override { return cpu::Add(p); }
  absl::Status GatherRows(const GatherRowsParams& p) override { return cpu::GatherRows(p); }
  absl::Status ScatterAddRows(const ScatterAddRowsParams& p) override {
    return cpu::ScatterAddRows(p);
  }
  absl::Status MoeRoute(const MoeRouteParams& p) override { return cpu::MoeRoute(p); }
  absl::Status MlaPrefillAttention(const MlaPrefillParams& p) override {
    return cpu::MlaPrefillAttention(p);
  }
  absl::Status KvCacheWrite(const KvCacheWriteParams& p) override { return cpu::KvCacheWrite(p); }
  absl::Status MlaDecodeAttention(const MlaDecodeParams& p) override {
    return cpu::MlaDecodeAttention(p);
  }
  absl::Status MoeExperts(const MoeExpertsParams& p) override { return cpu::MoeExperts(p); }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuReferenceBackend() {
  return std::make_unique<CpuReferenceBackend>();
}

}  // namespace r2

// CUDA MoeExperts against the CPU reference (and a direct double computation) on random routed
// tokens: bf16 and block-scaled fp8 experts, 1..16 tokens, shapes on the vectorized and the
// scalar paths. h's row padding is NaN and must stay NaN. Skips without a device.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/unit/cuda/cuda_test_util.h"
#include "tests/unit/kernels/moe_experts_test_util.h"

namespace r2 {
namespace {

using testing::BackendMoeExperts;
using testing::MakeMoeExpertsCase;
using testing::MoeExpertsCase;
using testing::MoeExpertsError;

class CudaMoeExpertsTest : public cudatest::CudaTest {
 protected:
  // Runs `c` on the GPU and the reference; both must match the double result within `bound`.
  void Compare(const MoeExpertsCase& c, const std::string& what, double bound = 1e-4) {
    BackendMoeExperts dev(&gpu(), c);
    BackendMoeExperts ref(&cpu(), c);
    const absl::Status s = gpu().MoeExperts(dev.params);
    ASSERT_TRUE(s.ok()) << what << ": " << s;
    ASSERT_TRUE(gpu().Synchronize().ok());
    ASSERT_TRUE(cpu().MoeExperts(ref.params).ok());
    const std::vector<double> expected = c.Expected();
    const std::vector<float> got = dev.ReadH(), want = ref.ReadH();
    EXPECT_LT(MoeExpertsError(c, got, expected), bound) << what << " (cuda vs direct)";
    std::vector<double> want_d(want.begin(), want.end());
    EXPECT_LT(MoeExpertsError(c, got, want_d), bound) << what << " (cuda vs reference)";
  }
};

TEST_F(CudaMoeExpertsTest, Bf16AndFp8Experts) {
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    for (int64_t rows = 1; rows <= 16; ++rows) {
      const MoeExpertsCase c =
          MakeMoeExpertsCase(100 + static_cast<uint32_t>(rows), rows, /*hidden=*/512,
                             /*width=*/256, /*experts=*/16, /*top_k=*/4, dtype);
      Compare(c, std::string(DTypeName(dtype)) + " rows " + std::to_string(rows));
    }
  }
}

TEST_F(CudaMoeExpertsTest, DeepSeekShapedDecode) {
  // DeepSeek-V3's hidden size (7168: the widest shared-memory row) at a narrow expert width so
  // the host-side reference stays quick; one token, top-8 of 8 experts.
  for (DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    const MoeExpertsCase c = MakeMoeExpertsCase(7, 1, 7168, 256, 8, 8, dtype);
    Compare(c, std::string(DTypeName(dtype)) + " 7168x256");
  }
}

TEST_F(CudaMoeExpertsTest, ScalarPathsAndPartialBlocks) {
  // Widths that are not whole 16-byte words, and fp8 blocks that split the vector words.
  Compare(MakeMoeExpertsCase(1, 3, 70, 38, 6, 3, DType::kBF16), "bf16 70x38");
  Compare(MakeMoeExpertsCase(2, 3, 72, 40, 6, 3, DType::kF8E4M3, 32, 16), "fp8 72x40 blocks 32x16");
  Compare(MakeMoeExpertsCase(3, 2, 96, 48, 6, 2, DType::kF8E4M3, 24, 8), "fp8 96x48 blocks 24x8");
}

TEST_F(CudaMoeExpertsTest, OutOfRangeExpertIdsAreSkipped) {
  // Device ids are not validated on the host: a pair with an id past num_experts (or negative)
  // contributes nothing instead of faulting. Expected: the same case with those weights 0.
  MoeExpertsCase c = MakeMoeExpertsCase(11, 3, 64, 32, 8, 2, DType::kBF16);
  MoeExpertsCase zeroed = c;
  c.ids[1] = 1000;
  c.ids[4] = -1;
  zeroed.weights[1] = 0.0f;
  zeroed.weights[4] = 0.0f;
  BackendMoeExperts dev(&gpu(), c);
  ASSERT_TRUE(gpu().MoeExperts(dev.params).ok());
  EXPECT_LT(MoeExpertsError(c, dev.ReadH(), zeroed.Expected()), 1e-4);
}

TEST_F(CudaMoeExpertsTest, LargeBatchesAndOtherDtypesAreUnimplemented) {
  const MoeExpertsCase big = MakeMoeExpertsCase(4, 17, 64, 32, 8, 4, DType::kBF16);
  BackendMoeExperts dev(&gpu(), big);
  EXPECT_EQ(gpu().MoeExperts(dev.params).code(), absl::StatusCode::kUnimplemented);
  const MoeExpertsCase f32 = MakeMoeExpertsCase(5, 2, 64, 32, 8, 4, DType::kF32);
  BackendMoeExperts dev32(&gpu(), f32);
  EXPECT_EQ(gpu().MoeExperts(dev32.params).code(), absl::StatusCode::kUnimplemented);
  MoeExpertsParams bad = dev32.params;
  bad.top_k = 0;
  EXPECT_EQ(gpu().MoeExperts(bad).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace r2

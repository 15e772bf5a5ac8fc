// MoeExperts on the CPU backends (reference, optimized "cpu", checked-memory) against a direct
// double computation of the routed experts, and its argument errors.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "tests/unit/kernels/moe_experts_test_util.h"

namespace r2 {
namespace {

using testing::BackendMoeExperts;
using testing::MakeMoeExpertsCase;
using testing::MoeExpertsCase;
using testing::MoeExpertsError;

std::unique_ptr<Backend> Make(const std::string& name) {
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend(name);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

class MoeExpertsBackendTest
    : public ::testing::TestWithParam<std::tuple<std::string, DType, int64_t>> {};

TEST_P(MoeExpertsBackendTest, MatchesDirectComputation) {
  const auto [name, dtype, rows] = GetParam();
  std::unique_ptr<Backend> backend = Make(name);
  ASSERT_NE(backend, nullptr);
  // Odd widths and fp8 blocks that do not divide them exercise the partial edge blocks.
  const MoeExpertsCase c = MakeMoeExpertsCase(static_cast<uint32_t>(rows) * 7 + 1, rows,
                                              /*hidden=*/72, /*width=*/40, /*experts=*/6,
                                              /*top_k=*/3, dtype, /*block_out=*/32,
                                              /*block_in=*/16);
  BackendMoeExperts run(backend.get(), c);
  ASSERT_TRUE(backend->MoeExperts(run.params).ok());
  EXPECT_LT(MoeExpertsError(c, run.ReadH(), c.Expected()), 1e-5)
      << name << " " << DTypeName(dtype) << " rows " << rows;
}

INSTANTIATE_TEST_SUITE_P(
    All, MoeExpertsBackendTest,
    ::testing::Combine(::testing::Values("cpu-reference", "cpu", "checked-memory"),
                       ::testing::Values(DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3),
                       ::testing::Values(int64_t{1}, int64_t{3}, int64_t{8})));

TEST(MoeExpertsTest, ZeroRowsIsANoOp) {
  std::unique_ptr<Backend> backend = Make("cpu-reference");
  MoeExpertsParams p{.rows = 0, .hidden = 8, .width = 8, .num_experts = 2, .top_k = 1};
  EXPECT_TRUE(backend->MoeExperts(p).ok());
}

TEST(MoeExpertsTest, BadArgumentsNameTheField) {
  std::unique_ptr<Backend> backend = Make("cpu-reference");
  const MoeExpertsCase c = MakeMoeExpertsCase(5, 2, 16, 8, 4, 2, DType::kBF16);
  BackendMoeExperts run(backend.get(), c);
  auto expect_error = [&](MoeExpertsParams p, const std::string& what) {
    const absl::Status s = backend->MoeExperts(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
    EXPECT_NE(std::string(s.message()).find(what), std::string::npos) << s;
  };
  MoeExpertsParams p = run.params;
  p.top_k = 0;
  expect_error(p, "top_k");
  p = run.params;
  p.width = 0;
  expect_error(p, "width");
  p = run.params;
  p.num_experts = 0;
  expect_error(p, "num_experts");
  p = run.params;
  p.dtype = DType::kI8;
  expect_error(p, "unsupported expert dtype i8");
  p = run.params;
  p.down = nullptr;
  expect_error(p, "pointer array");
  p = run.params;
  p.dtype = DType::kF8E4M3;  // no scale arrays
  expect_error(p, "scale_inv");
  p = run.params;
  p.x_stride = 3;
  expect_error(p, "x_stride");
  p = run.params;
  p.expert_ids = nullptr;
  expect_error(p, "expert_ids");
  // An expert id past num_experts (the table has 4 entries; claim only 1).
  p = run.params;
  p.num_experts = 1;
  expect_error(p, "expert id");
  // Nothing was written by the failed calls.
  const std::vector<float> h = run.ReadH();
  for (size_t i = 0; i < h.size(); ++i) {
    if (i % c.h_stride < static_cast<size_t>(c.hidden)) EXPECT_EQ(h[i], c.h[i]) << i;
  }
}

TEST(MoeExpertsTest, CheckedMemoryRefusesHostPointers) {
  std::unique_ptr<Backend> backend = Make("checked-memory");
  const MoeExpertsCase c = MakeMoeExpertsCase(9, 1, 16, 8, 4, 2, DType::kBF16);
  BackendMoeExperts run(backend.get(), c);
  ASSERT_TRUE(backend->MoeExperts(run.params).ok());
  MoeExpertsParams p = run.params;
  const std::vector<float> host_x(c.x);
  p.x = host_x.data();
  absl::Status s = backend->MoeExperts(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("MoeExperts: x is not backend memory"), std::string::npos)
      << s;
  // A pointer table whose entries point at host memory.
  const std::vector<uint16_t> host_weight(16 * 8);
  std::vector<const void*> table(4, host_weight.data());
  void* device_table = *backend->Allocate(table.size() * sizeof(void*));
  ASSERT_TRUE(
      backend->CopyToBackend(device_table, table.data(), table.size() * sizeof(void*)).ok());
  p = run.params;
  p.up = static_cast<const void* const*>(device_table);
  s = backend->MoeExperts(p);
  EXPECT_NE(std::string(s.message()).find("up[expert] is not backend memory"), std::string::npos)
      << s;
  backend->Free(device_table);
}

TEST(MoeExpertsTest, UnimplementedByDefault) {
  // A backend that does not override MoeExperts answers Unimplemented, so callers fall back.
  class Minimal final : public Backend {
   public:
    std::string_view name() const override { return "minimal"; }
    absl::Status Embedding(const EmbeddingParams&) override { return absl::OkStatus(); }
    absl::Status RmsNorm(const RmsNormParams&) override { return absl::OkStatus(); }
    absl::Status Linear(const LinearParams&) override { return absl::OkStatus(); }
    absl::Status Rope(const RopeParams&) override { return absl::OkStatus(); }
    absl::Status SiluMul(const SiluMulParams&) override { return absl::OkStatus(); }
    absl::Status Add(const AddParams&) override { return absl::OkStatus(); }
    absl::Status GatherRows(const GatherRowsParams&) override { return absl::OkStatus(); }
    absl::Status ScatterAddRows(const ScatterAddRowsParams&) override { return absl::OkStatus(); }
    absl::Status MoeRoute(const MoeRouteParams&) override { return absl::OkStatus(); }
    absl::Status MlaPrefillAttention(const MlaPrefillParams&) override { return absl::OkStatus(); }
    absl::Status KvCacheWrite(const KvCacheWriteParams&) override { return absl::OkStatus(); }
    absl::Status MlaDecodeAttention(const MlaDecodeParams&) override { return absl::OkStatus(); }
  } minimal;
  EXPECT_EQ(minimal.MoeExperts({}).code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace r2

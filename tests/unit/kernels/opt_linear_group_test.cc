// Backend::LinearGroup: several Linears on the same rows of x as one op. The optimized CPU backend
// (every instruction set this machine runs, AMX on and off) against the reference Linear of each
// product, on bf16/f16/f32/fp8 weights and mixes of them, decode and prefill row counts, odd and
// unequal output counts, strided x and y, accumulation, and weights at different offsets from a
// 64-byte boundary (the AMX preparation is shared only at one offset); the contract's refusals on
// every CPU backend. Bound: max |opt - ref| / max |ref| < 2e-5, as for every float32 Linear.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend.h"
#include "kernels/cpu/opt_amx.h"
#include "kernels/cpu/opt_backend.h"
#include "kernels/cpu/opt_gemm.h"
#include "kernels/cpu/opt_ops.h"
#include "kernels/cpu/opt_simd.h"
#include "tests/unit/kernels/cpu_isas.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::RelativeError;
using testing::Store;
using testing::StoredTensor;
using testing::SupportedIsas;

constexpr double kLinearBound = 2e-5;

// One product's weight: `out` x `in` values stored in `dtype`, starting `offset` bytes past a
// 64-byte boundary (fp8: with block scales of 128 x 128 ... 32 x 64).
struct GroupWeight {
  std::vector<uint8_t> storage;
  StoredTensor stored, scale;
  WeightView view;
};

GroupWeight MakeWeight(std::mt19937& rng, DType dtype, int64_t out, int64_t in, int64_t offset) {
  GroupWeight g;
  g.stored = Store(RandomFloats(rng, out * in, 0.5f), dtype, {out, in});
  g.storage.resize(g.stored.bytes.size() + 128);
  const auto base = reinterpret_cast<uintptr_t>(g.storage.data());
  uint8_t* data = g.storage.data() + ((64 - base % 64) % 64) + offset;
  std::memcpy(data, g.stored.bytes.data(), g.stored.bytes.size());
  g.view.weight = TensorView{dtype, {out, in}, data};
  if (dtype == DType::kF8E4M3) {
    g.view.block_out = out % 2 == 0 ? 128 : 32;
    g.view.block_in = in % 2 == 0 ? 128 : 64;
    const int64_t so = (out + g.view.block_out - 1) / g.view.block_out;
    const int64_t si = (in + g.view.block_in - 1) / g.view.block_in;
    std::vector<float> scales(so * si);
    for (float& s : scales) s = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng);
    g.scale = Store(scales, DType::kF32, {so, si});
    g.view.scale_inv = g.scale.view;
  }
  return g;
}

struct GroupCase {
  std::vector<DType> dtypes;  // one per product
  std::vector<int64_t> outs;  // one per product
  int64_t rows = 8, in = 1024;
  bool strided = false, accumulate = false;
  std::vector<int64_t> offsets = {};  // weight bytes past 64; empty: 16 for every product

  std::string Name() const {
    std::vector<std::string> products;
    for (size_t i = 0; i < outs.size(); ++i) {
      products.push_back(absl::StrCat(std::string(DTypeName(dtypes[i])), " ", outs[i]));
    }
    return absl::StrCat(absl::StrJoin(products, " + "), " x ", in, ", rows ", rows,
                        strided ? ", strided" : "", accumulate ? ", accumulate" : "");
  }
};

// Runs c through opt.LinearGroup and ref.Linear on each product: the results agree within the
// bound, and the padding between strided rows is untouched. Also checks that the group's result
// equals the optimized backend's own Linear on each product, bit for bit (the same kernels add
// each output's terms in the same order, however the outputs are cut into work units).
void CheckGroup(Backend& opt, Backend& ref, std::mt19937& rng, const GroupCase& c) {
  SCOPED_TRACE(c.Name());
  const size_t n = c.outs.size();
  const int64_t xs = c.strided ? c.in + 3 : 0;
  const std::vector<float> x = RandomFloats(rng, c.rows * (xs ? xs : c.in));
  // Every product writes its own column slice of one y (y_stride: the sum of the outputs + 5) or
  // its own packed y.
  int64_t total_out = 0;
  for (int64_t o : c.outs) total_out += o;
  const int64_t ys = c.strided ? total_out + 5 : 0;
  std::vector<GroupWeight> weights;
  std::vector<std::vector<float>> y0(n);
  for (size_t i = 0; i < n; ++i) {
    weights.push_back(
        MakeWeight(rng, c.dtypes[i], c.outs[i], c.in, c.offsets.empty() ? 16 : c.offsets[i]));
    y0[i] = RandomFloats(rng, c.rows * (ys ? ys : c.outs[i]));
  }
  std::vector<std::vector<float>> y_ref = y0, y_group = y0, y_each = y0;
  std::vector<LinearParams> products(n);
  int64_t column = 0;
  for (size_t i = 0; i < n; ++i) {
    // Strided: product i's slice starts at `column` of a row (the others' slices hold y0 there).
    products[i] = LinearParams{.x = x.data(),
                               .x_stride = xs,
                               .rows = c.rows,
                               .weight = weights[i].view,
                               .y_stride = ys,
                               .accumulate = c.accumulate};
    const int64_t at = c.strided ? column : 0;
    products[i].y = y_ref[i].data() + at;
    ASSERT_TRUE(ref.Linear(products[i]).ok());
    products[i].y = y_each[i].data() + at;
    ASSERT_TRUE(opt.Linear(products[i]).ok());
    products[i].y = y_group[i].data() + at;
    column += c.outs[i];
  }
  const absl::Status status = opt.LinearGroup(products);
  ASSERT_TRUE(status.ok()) << status;
  column = 0;
  for (size_t i = 0; i < n; ++i) {
    SCOPED_TRACE(absl::StrCat("product ", i));
    EXPECT_LT(RelativeError(y_group[i], y_ref[i]), kLinearBound);
    EXPECT_EQ(y_group[i], y_each[i]);
    if (c.strided) {  // outside the product's slice, y is as it was
      for (int64_t r = 0; r < c.rows; ++r) {
        for (int64_t o = 0; o < ys; ++o) {
          if (o >= column && o < column + c.outs[i]) continue;
          ASSERT_EQ(y_group[i][r * ys + o], y0[i][r * ys + o]) << "row " << r << " column " << o;
        }
      }
    }
    column += c.outs[i];
  }
}

class OptLinearGroupTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    auto made = MakeCpuOptimizedBackend(GetParam());
    ASSERT_TRUE(made.ok()) << made.status();
    opt_ = *std::move(made);
  }
  // Runs `run` with AMX allowed and (where the machine has it) again with it turned off.
  template <typename Fn>
  void WithAndWithoutAmx(const Fn& run) {
    for (bool amx : {true, false}) {
      if (!amx && !(GetParam() == CpuIsa::kAvx512 && cpu::AmxBf16Usable())) continue;
      SCOPED_TRACE(amx ? "AMX allowed" : "AMX off");
      const bool was = cpu::SetAmxAllowed(amx);
      run();
      cpu::SetAmxAllowed(was);
    }
  }
  std::unique_ptr<Backend> opt_;
  std::unique_ptr<Backend> ref_ = MakeCpuReferenceBackend();
  std::mt19937 rng_{20261129};
};

// The model's groups (q_a + kv_a of the small model, a dense MLP's gate + up) and odd output
// counts, at every row count from one token to a prefill chunk, in every dtype.
TEST_P(OptLinearGroupTest, MatchesReferenceLinearOfEachProduct) {
  WithAndWithoutAmx([&] {
    for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16, DType::kF8E4M3}) {
      for (int64_t rows : {1, 3, 8, 13, 16, 40}) {
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {dtype, dtype}, .outs = {384, 288}, .rows = rows});
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {dtype, dtype}, .outs = {17, 33}, .rows = rows, .in = 100});
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {dtype, dtype, dtype}, .outs = {16, 16, 5}, .rows = rows, .in = 256});
      }
    }
    // Tails after the last whole group of 16 on the AMX path; a single product; wide products.
    CheckGroup(*opt_, *ref_, rng_,
               {.dtypes = {DType::kBF16, DType::kBF16}, .outs = {300, 261}, .rows = 8, .in = 512});
    CheckGroup(*opt_, *ref_, rng_, {.dtypes = {DType::kBF16}, .outs = {1031}, .rows = 5});
    CheckGroup(*opt_, *ref_, rng_,
               {.dtypes = {DType::kBF16, DType::kBF16}, .outs = {1408, 1408}, .rows = 12});
  });
}

TEST_P(OptLinearGroupTest, StridedRowsAccumulationAndMixedDtypes) {
  WithAndWithoutAmx([&] {
    for (int64_t rows : {1, 3, 8, 13, 16}) {
      for (bool accumulate : {false, true}) {
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {DType::kBF16, DType::kBF16},
                    .outs = {384, 288},
                    .rows = rows,
                    .strided = true,
                    .accumulate = accumulate});
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {DType::kBF16, DType::kF32, DType::kF8E4M3},
                    .outs = {272, 17, 300},
                    .rows = rows,
                    .in = 512,
                    .strided = true,
                    .accumulate = accumulate});
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {DType::kF16, DType::kF32, DType::kBF16},
                    .outs = {16, 16, 5},
                    .rows = rows,
                    .in = 256,
                    .strided = true,
                    .accumulate = accumulate});
      }
    }
  });
}

// AMX prepares x for one offset of the weight rows from a 64-byte boundary: products at different
// offsets run one by one (still right); at one offset (any) they share the preparation.
TEST_P(OptLinearGroupTest, WeightsAtDifferentOffsetsFromALine) {
  WithAndWithoutAmx([&] {
    for (const std::vector<int64_t>& offsets :
         {std::vector<int64_t>{0, 16}, {48, 8}, {8, 8}, {56, 56}, {0, 0}}) {
      SCOPED_TRACE(absl::StrCat("offsets ", absl::StrJoin(offsets, ", ")));
      for (int64_t rows : {1, 8}) {
        CheckGroup(*opt_, *ref_, rng_,
                   {.dtypes = {DType::kBF16, DType::kBF16},
                    .outs = {384, 288},
                    .rows = rows,
                    .offsets = offsets});
      }
    }
  });
}

// Which groups the optimized path shares one preparation and one parallel loop for, and which it
// leaves to Linear on each product.
TEST_P(OptLinearGroupTest, SharesThePreparationOnlyWhereItCan) {
  const cpu::SimdKernels& k = cpu::KernelsFor(GetParam());
  const std::vector<float> x(40 * 1024, 0.5f);
  std::vector<float> y(40 * 2048, 0.0f);
  const GroupWeight a = MakeWeight(rng_, DType::kBF16, 384, 1024, 16);
  const GroupWeight b = MakeWeight(rng_, DType::kBF16, 288, 1024, 16);
  const GroupWeight shifted = MakeWeight(rng_, DType::kBF16, 288, 1024, 0);
  const GroupWeight narrow = MakeWeight(rng_, DType::kBF16, 288, 512, 16);
  const GroupWeight fp8 = MakeWeight(rng_, DType::kF8E4M3, 288, 1024, 16);
  const auto group = [&](int64_t rows, const GroupWeight& first, const GroupWeight& second) {
    return std::vector<LinearParams>{
        {.x = x.data(), .rows = rows, .weight = first.view, .y = y.data()},
        {.x = x.data(), .rows = rows, .weight = second.view, .y = y.data() + 40 * 1024}};
  };
  EXPECT_TRUE(cpu::OptLinearGroup(k, group(8, a, b)));
  EXPECT_TRUE(cpu::OptLinearGroup(k, group(1, a, shifted)));  // no AMX at one row
  EXPECT_TRUE(cpu::OptLinearGroup(k, group(8, a, fp8)));
  EXPECT_FALSE(cpu::OptLinearGroup(k, group(8, a, narrow)));             // x read at another width
  EXPECT_FALSE(cpu::OptLinearGroup(k, group(cpu::kGemmMinRows, a, b)));  // the GEMM's
  EXPECT_FALSE(cpu::OptLinearGroup(k, group(0, a, b)));
  const bool amx = GetParam() == CpuIsa::kAvx512 && cpu::AmxBf16Usable();
  EXPECT_EQ(cpu::OptLinearGroup(k, group(8, a, shifted)), !amx);  // two AMX leads
  EXPECT_TRUE(cpu::OptLinearGroup(k, {}));
}

TEST(LinearGroupContractTest, EveryCpuBackendRefusesProductsThatDoNotShareX) {
  std::mt19937 rng(7);
  const GroupWeight w = MakeWeight(rng, DType::kBF16, 32, 64, 0);
  std::vector<float> x(4 * 64, 1.0f), other(4 * 64, 1.0f), y(4 * 64, 0.0f);
  const LinearParams good{.x = x.data(), .rows = 4, .weight = w.view, .y = y.data()};
  struct Bad {
    std::string field;
    LinearParams second;
  };
  std::vector<Bad> bad(5, Bad{"", good});
  bad[0].field = "products[1].batch";
  bad[0].second.batch = 2;
  bad[1].field = "products[1].weight_transposed";
  bad[1].second.weight_transposed = true;
  bad[2].field = "products[1].x ";
  bad[2].second.x = other.data();
  bad[3].field = "products[1].x_stride";
  bad[3].second.x_stride = 65;
  bad[4].field = "products[1].rows";
  bad[4].second.rows = 3;
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(MakeCpuReferenceBackend());
  backends.push_back(MakeCheckedMemoryBackend());
  for (CpuIsa isa : SupportedIsas()) backends.push_back(*std::move(MakeCpuOptimizedBackend(isa)));
  for (const auto& backend : backends) {
    SCOPED_TRACE(backend->name());
    for (const Bad& b : bad) {
      const LinearParams products[] = {good, b.second};
      const absl::Status s = backend->LinearGroup(products);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_NE(s.message().find("LinearGroup: " + b.field), std::string::npos) << s;
    }
    EXPECT_TRUE(backend->LinearGroup({}).ok());
  }
}

// A product's own error (what Linear refuses) comes back naming the product, with Linear's code;
// the reference and the optimized backends agree on it.
TEST(LinearGroupContractTest, AProductsLinearErrorNamesTheProduct) {
  std::mt19937 rng(8);
  const GroupWeight w = MakeWeight(rng, DType::kBF16, 32, 64, 0);
  GroupWeight no_scale = MakeWeight(rng, DType::kF8E4M3, 32, 64, 0);
  no_scale.view.scale_inv = TensorView{};
  std::vector<float> x(4 * 64, 1.0f), y(4 * 64, 0.0f);
  const LinearParams products[] = {
      {.x = x.data(), .rows = 4, .weight = w.view, .y = y.data()},
      {.x = x.data(), .rows = 4, .weight = no_scale.view, .y = y.data() + 4 * 32}};
  std::unique_ptr<Backend> ref = MakeCpuReferenceBackend();
  const absl::Status want = ref->Linear(products[1]);
  ASSERT_FALSE(want.ok());
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(MakeCpuReferenceBackend());
  for (CpuIsa isa : SupportedIsas()) backends.push_back(*std::move(MakeCpuOptimizedBackend(isa)));
  for (const auto& backend : backends) {
    SCOPED_TRACE(backend->name());
    const absl::Status s = backend->LinearGroup(products);
    EXPECT_EQ(s.code(), want.code()) << s;
    EXPECT_NE(s.message().find("LinearGroup: products[1]: "), std::string::npos) << s;
    EXPECT_NE(s.message().find(want.message()), std::string::npos) << s;
  }
}

// The checked-memory backend checks each product's memory as Linear does.
TEST(LinearGroupContractTest, CheckedMemoryChecksEveryProductsMemory) {
  std::unique_ptr<Backend> backend = MakeCheckedMemoryBackend();
  std::mt19937 rng(9);
  const GroupWeight host = MakeWeight(rng, DType::kBF16, 32, 64, 0);
  const size_t x_bytes = 4 * 64 * 4, y_bytes = 2 * 4 * 32 * 4, w_bytes = 32 * 64 * 2;
  auto x = backend->Allocate(x_bytes), y = backend->Allocate(y_bytes),
       w = backend->Allocate(w_bytes);
  ASSERT_TRUE(x.ok() && y.ok() && w.ok());
  ASSERT_TRUE(backend->Zero(*x, x_bytes).ok());
  ASSERT_TRUE(backend->CopyToBackend(*w, host.view.weight.data, w_bytes).ok());
  WeightView device = host.view;
  device.weight.data = *w;
  auto* xf = static_cast<float*>(*x);
  auto* yf = static_cast<float*>(*y);
  LinearParams products[] = {{.x = xf, .rows = 4, .weight = device, .y = yf},
                             {.x = xf, .rows = 4, .weight = device, .y = yf + 4 * 32}};
  EXPECT_TRUE(backend->LinearGroup(products).ok());
  products[1].weight = host.view;  // host memory
  const absl::Status s = backend->LinearGroup(products);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("products[1]: Linear: weight is not backend memory"),
            std::string::npos)
      << s;
  for (void* p : {*x, *y, *w}) backend->Free(p);
}

INSTANTIATE_TEST_SUITE_P(EverySupportedIsa, OptLinearGroupTest,
                         ::testing::ValuesIn(SupportedIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

}  // namespace
}  // namespace r2

// The packed GEMM of the optimized CPU backend (kernels/cpu/opt_gemm.h) on every instruction set
// this machine supports: the packers exactly (a panel holds the weights widened to float32, zero
// past the panel's outputs), the micro-kernel sweep and Linear through the GEMM against the
// reference on random odd shapes (row tails, partial panels, column blocks, strides, accumulate,
// strided batches, every weight dtype). Bound: max |opt - ref| / max |ref| < 2e-5 (float32
// products, column order per output; only the reference's own summation order differs).
#include "kernels/cpu/opt_gemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
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

constexpr double kGemmBound = 2e-5;

int64_t Uniform(std::mt19937& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

class OptGemmTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    auto made = MakeCpuOptimizedBackend(GetParam());
    ASSERT_TRUE(made.ok()) << made.status();
    opt_ = *std::move(made);
  }
  const cpu::GemmKernels& g() const { return cpu::GemmKernelsFor(GetParam()); }
  std::unique_ptr<Backend> opt_;
  std::unique_ptr<Backend> ref_ = MakeCpuReferenceBackend();
  std::mt19937 rng_{20261128};
};

TEST_P(OptGemmTest, KernelsAreTheRequestedInstructionSet) {
  EXPECT_EQ(g().isa, GetParam());
  EXPECT_GE(g().tile_rows, 1);
  EXPECT_GE(g().panel, 8);
}

TEST_P(OptGemmTest, PackersWidenAndTransposeExactly) {
  const int64_t nr = g().panel;
  for (int64_t n : {int64_t{1}, nr / 2 + 1, nr - 1, nr}) {
    for (int64_t kc : {1, 2, 7, 64, 257}) {
      SCOPED_TRACE("n " + std::to_string(n) + " kc " + std::to_string(kc));
      const int64_t stride = kc + 3;  // row stride in elements, past the packed columns
      StoredTensor bf = Store(RandomFloats(rng_, n * stride), DType::kBF16, {n, stride});
      std::vector<float> f32 = RandomFloats(rng_, n * stride);
      std::vector<float> got(kc * nr, 7.0f), got32(kc * nr, 7.0f);
      // Start one column in: an odd element offset, as a column block of an odd-width weight.
      g().pack_bf16(bf.bytes.data() + 2, 2 * stride, n, kc, got.data());
      g().pack_f32(f32.data() + 1, stride, n, kc, got32.data());
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t o = 0; o < nr; ++o) {
          const float want_bf = o < n ? bf.decoded[o * stride + 1 + k] : 0.0f;
          const float want_32 = o < n ? f32[o * stride + 1 + k] : 0.0f;
          ASSERT_EQ(got[k * nr + o], want_bf) << "bf16 k " << k << " o " << o;
          ASSERT_EQ(got32[k * nr + o], want_32) << "f32 k " << k << " o " << o;
        }
      }
    }
  }
}

TEST_P(OptGemmTest, PanelRowsMatchesDoubleSumsAndLeavesOtherOutputs) {
  const int64_t nr = g().panel, mr = g().tile_rows;
  for (int trial = 0; trial < 24; ++trial) {
    const int64_t rows = Uniform(rng_, 1, 3 * mr + 2), kc = Uniform(rng_, 0, 300);
    const int64_t k0 = Uniform(rng_, 0, 9), in = k0 + kc + Uniform(rng_, 0, 4);
    const int64_t n = trial % 3 == 0 ? nr : Uniform(rng_, 1, nr);
    const int64_t ys = nr + Uniform(rng_, 0, 5);
    const bool load_y = trial % 2 == 1;
    SCOPED_TRACE("rows " + std::to_string(rows) + " k0 " + std::to_string(k0) + " kc " +
                 std::to_string(kc) + " n " + std::to_string(n));
    std::vector<float> x = RandomFloats(rng_, rows * in);
    std::vector<float> panel = RandomFloats(rng_, kc * nr + 1);
    std::vector<float> y0 = RandomFloats(rng_, rows * ys), y = y0;
    g().panel_rows(x.data() + k0, in, rows, panel.data(), kc, n, y.data(), ys, load_y);
    std::vector<double> want(rows * n);
    std::vector<float> got(rows * n);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < ys; ++o) {
        if (o >= n) {
          ASSERT_EQ(y[r * ys + o], y0[r * ys + o]) << "row " << r << " output " << o;
          continue;
        }
        double s = load_y ? y0[r * ys + o] : 0.0;
        for (int64_t k = 0; k < kc; ++k) s += double{x[r * in + k0 + k]} * panel[k * nr + o];
        want[r * n + o] = s;
        got[r * n + o] = y[r * ys + o];
      }
    }
    EXPECT_LT(RelativeError(got, want), kGemmBound);
  }
}

struct Case {
  DType dtype;
  int64_t rows, in, out;
  bool strided = false, accumulate = false;
  int64_t batch = 1;
  int64_t block_out = 128, block_in = 128;
};

void CheckLinear(Backend& opt, Backend& ref, std::mt19937& rng, const Case& c) {
  SCOPED_TRACE(std::string(DTypeName(c.dtype)) + " rows " + std::to_string(c.rows) + " in " +
               std::to_string(c.in) + " out " + std::to_string(c.out) + " batch " +
               std::to_string(c.batch) + (c.strided ? " strided" : "") +
               (c.accumulate ? " accumulate" : ""));
  const int64_t x_row = c.strided ? c.in + 3 : c.in, y_row = c.strided ? c.out + 5 : c.out;
  const int64_t x_batch = c.rows * x_row + 7, y_batch = c.rows * y_row + 2;
  const int64_t w_batch = c.in * c.out + 11;
  std::vector<float> x = RandomFloats(rng, c.batch * x_batch);
  StoredTensor w = Store(RandomFloats(rng, c.batch * w_batch, 0.5f), c.dtype, {c.out, c.in});
  StoredTensor scale;
  WeightView view{.weight = w.view, .block_out = c.block_out, .block_in = c.block_in};
  if (c.dtype == DType::kF8E4M3) {
    const int64_t so = (c.out + c.block_out - 1) / c.block_out;
    const int64_t si = (c.in + c.block_in - 1) / c.block_in;
    std::vector<float> scales(so * si);
    for (float& s : scales) s = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng);
    scale = Store(scales, DType::kF32, {so, si});
    view.scale_inv = scale.view;
  }
  std::vector<float> y0 = RandomFloats(rng, c.batch * y_batch);
  std::vector<float> y_opt = y0, y_ref = y0;
  LinearParams p{.x = x.data(),
                 .x_stride = c.strided ? x_row : 0,
                 .rows = c.rows,
                 .weight = view,
                 .y_stride = c.strided ? y_row : 0,
                 .accumulate = c.accumulate,
                 .batch = c.batch,
                 .x_batch_stride = x_batch,
                 .y_batch_stride = y_batch,
                 .weight_batch_stride = w_batch};
  p.y = y_ref.data();
  ASSERT_TRUE(ref.Linear(p).ok());
  p.y = y_opt.data();
  ASSERT_TRUE(opt.Linear(p).ok());
  EXPECT_LT(RelativeError(y_opt, y_ref), kGemmBound);
  // Everything outside the products' outputs (row padding, batch gaps) is untouched.
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < y_batch; ++i) {
      const int64_t r = i / y_row, o = i % y_row;
      if (r < c.rows && o < c.out) continue;
      ASSERT_EQ(y_opt[b * y_batch + i], y0[b * y_batch + i]) << "batch " << b << " at " << i;
    }
  }
}

TEST_P(OptGemmTest, LinearOnManyRowsMatchesReferenceOnRandomShapes) {
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16, DType::kF8E4M3}) {
    for (int trial = 0; trial < 8; ++trial) {
      Case c{.dtype = dtype,
             .rows = Uniform(rng_, cpu::kGemmMinRows, 70),
             .in = Uniform(rng_, 1, 600),  // past one packed column block (256)
             .out = Uniform(rng_, 1, 150),
             .strided = trial % 2 == 1,
             .accumulate = trial % 3 == 0};
      if (dtype == DType::kF8E4M3) {
        c.block_out = Uniform(rng_, 1, 40);
        c.block_in = trial % 4 == 0 ? 128 : Uniform(rng_, 1, 70);
      }
      CheckLinear(*opt_, *ref_, rng_, c);
    }
  }
}

TEST_P(OptGemmTest, LinearOnManyRowsMatchesReferenceOnModelShapes) {
  // Threaded, several row passes (512 rows each) and column blocks, partial last panel.
  CheckLinear(*opt_, *ref_, rng_,
              {.dtype = DType::kBF16, .rows = 531, .in = 300, .out = 97, .accumulate = true});
  CheckLinear(*opt_, *ref_, rng_, {.dtype = DType::kBF16, .rows = 64, .in = 1024, .out = 384});
  CheckLinear(*opt_, *ref_, rng_, {.dtype = DType::kBF16, .rows = 48, .in = 128, .out = 1024});
  CheckLinear(*opt_, *ref_, rng_,
              {.dtype = DType::kF8E4M3, .rows = 40, .in = 515, .out = 260, .strided = true});
  CheckLinear(*opt_, *ref_, rng_, {.dtype = DType::kF16, .rows = 17, .in = 777, .out = 65});
}

TEST_P(OptGemmTest, LinearStridedBatchOnManyRowsMatchesReference) {
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16}) {
    CheckLinear(*opt_, *ref_, rng_,
                {.dtype = dtype, .rows = 19, .in = 67, .out = 33, .strided = true, .batch = 5});
    CheckLinear(*opt_, *ref_, rng_,
                {.dtype = dtype, .rows = 32, .in = 128, .out = 64, .accumulate = true, .batch = 4});
  }
}

TEST_P(OptGemmTest, EmptyInputWritesZerosOrKeepsY) {
  // in_features 0: every sum is empty (y = 0, or y unchanged when accumulating), as the reference.
  for (bool accumulate : {false, true}) {
    Case c{.dtype = DType::kBF16, .rows = 20, .in = 0, .out = 40, .accumulate = accumulate};
    CheckLinear(*opt_, *ref_, rng_, c);
  }
}

TEST_P(OptGemmTest, GemmBlockComputesItsOutputRangeOnly) {
  // One caller-chosen block of outputs (not panel-aligned), as the MoE experts op runs it.
  auto made = MakeCpuOptimizedBackend(GetParam());
  ASSERT_TRUE(made.ok());
  const cpu::SimdKernels& k = cpu::KernelsFor(GetParam());
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16, DType::kF8E4M3}) {
    for (int trial = 0; trial < 4; ++trial) {
      const int64_t rows = Uniform(rng_, 1, 60), in = Uniform(rng_, 1, 400);
      const int64_t out = Uniform(rng_, 2, 130), o0 = Uniform(rng_, 0, out - 1);
      const int64_t o1 = Uniform(rng_, o0 + 1, out), ys = o1 - o0 + 3;
      const bool accumulate = trial % 2 == 1;
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " rows " + std::to_string(rows) + " in " +
                   std::to_string(in) + " outputs [" + std::to_string(o0) + ", " +
                   std::to_string(o1) + ")");
      std::vector<float> x = RandomFloats(rng_, rows * in);
      StoredTensor w = Store(RandomFloats(rng_, out * in, 0.5f), dtype, {out, in});
      WeightView view{.weight = w.view, .block_out = 16, .block_in = 48};
      StoredTensor scale;
      if (dtype == DType::kF8E4M3) {
        std::vector<float> scales(((out + 15) / 16) * ((in + 47) / 48));
        for (float& v : scales) v = std::uniform_real_distribution<float>(0.01f, 2.0f)(rng_);
        scale = Store(scales, DType::kF32, {(out + 15) / 16, (in + 47) / 48});
        view.scale_inv = scale.view;
      }
      ASSERT_TRUE(cpu::GemmSupports(view));
      std::vector<float> full(rows * out);
      ASSERT_TRUE(
          ref_->Linear({.x = x.data(), .rows = rows, .weight = view, .y = full.data()}).ok());
      std::vector<float> y0 = RandomFloats(rng_, rows * ys), y = y0;
      cpu::GemmBlock(k, x.data(), in, rows, view, o0, o1, y.data(), ys, accumulate);
      std::vector<float> got, want;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < ys; ++j) {
          if (j >= o1 - o0) {
            ASSERT_EQ(y[r * ys + j], y0[r * ys + j]) << "row " << r << " column " << j;
            continue;
          }
          got.push_back(y[r * ys + j]);
          want.push_back(full[r * out + o0 + j] + (accumulate ? y0[r * ys + j] : 0.0f));
        }
      }
      EXPECT_LT(RelativeError(got, want), kGemmBound);
    }
  }
}

// Prefill attention through the GEMM kernels against the reference: sequences with and without a
// cached prefix (more keys than queries), query blocks crossing 48, keys crossing 256, odd dims.
void CheckPrefillAttention(const cpu::SimdKernels& k, Backend& ref, std::mt19937& rng,
                           int64_t heads, int64_t nope, int64_t rope, int64_t v_dim,
                           const std::vector<int32_t>& q_lens, const std::vector<int32_t>& k_lens) {
  SCOPED_TRACE("heads " + std::to_string(heads) + " nope " + std::to_string(nope) + " rope " +
               std::to_string(rope) + " v " + std::to_string(v_dim));
  const int64_t dq = nope + rope;
  std::vector<int32_t> cu_q = {0}, cu_k = {0};
  for (size_t b = 0; b < q_lens.size(); ++b) {
    cu_q.push_back(cu_q.back() + q_lens[b]);
    cu_k.push_back(cu_k.back() + k_lens[b]);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back();
  std::vector<float> q = RandomFloats(rng, tq * heads * dq + 3);
  std::vector<float> kv = RandomFloats(rng, tk * heads * (nope + v_dim));
  std::vector<float> k_pe = RandomFloats(rng, tk * (rope + 2));
  std::vector<float> out0 = RandomFloats(rng, tq * heads * (v_dim + 1));
  std::vector<float> out_ref = out0, out_opt = out0;
  MlaPrefillParams p{.q = q.data(),
                     .q_token_stride = heads * dq,
                     .q_head_stride = dq,
                     .k_nope = kv.data(),
                     .k_nope_token_stride = heads * (nope + v_dim),
                     .k_nope_head_stride = nope + v_dim,
                     .k_pe = k_pe.data(),
                     .k_pe_token_stride = rope + 2,
                     .v = kv.data() + nope,
                     .v_token_stride = heads * (nope + v_dim),
                     .v_head_stride = nope + v_dim,
                     .out_token_stride = heads * (v_dim + 1),
                     .out_head_stride = v_dim + 1,
                     .cu_seqlens_q = cu_q.data(),
                     .cu_seqlens_k = cu_k.data(),
                     .num_seqs = static_cast<int64_t>(q_lens.size()),
                     .heads = heads,
                     .nope_dim = nope,
                     .rope_dim = rope,
                     .v_dim = v_dim,
                     .softmax_scale = 0.3f};
  p.out = out_ref.data();
  ASSERT_TRUE(ref.MlaPrefillAttention(p).ok());
  p.out = out_opt.data();
  ASSERT_TRUE(cpu::GemmMlaPrefillAttention(k, p).ok());
  EXPECT_LT(RelativeError(out_opt, out_ref), 1e-5);
  for (size_t i = 0; i < out0.size(); ++i) {
    if (i % (v_dim + 1) == static_cast<size_t>(v_dim)) {
      ASSERT_EQ(out_opt[i], out0[i]) << "padding at " << i;  // between heads: untouched
    }
  }
}

TEST_P(OptGemmTest, PrefillAttentionMatchesReference) {
  const cpu::SimdKernels& k = cpu::KernelsFor(GetParam());
  CheckPrefillAttention(k, *ref_, rng_, 5, 19, 7, 13, {1, 9, 4, 17}, {1, 9, 11, 30});
  CheckPrefillAttention(k, *ref_, rng_, 3, 64, 32, 64, {100, 60}, {100, 333});
  CheckPrefillAttention(k, *ref_, rng_, 2, 0, 5, 33, {49}, {49});
}

TEST_P(OptGemmTest, PrefillAttentionRejectsWhatTheReferenceRejects) {
  const cpu::SimdKernels& k = cpu::KernelsFor(GetParam());
  std::vector<float> buf(64);
  const std::vector<int32_t> cu_q = {0, 4}, cu_k = {0, 2};  // more queries than keys
  MlaPrefillParams p{.q = buf.data(),
                     .k_nope = buf.data(),
                     .k_pe = buf.data(),
                     .v = buf.data(),
                     .out = buf.data(),
                     .cu_seqlens_q = cu_q.data(),
                     .cu_seqlens_k = cu_k.data(),
                     .num_seqs = 1,
                     .heads = 1,
                     .nope_dim = 2,
                     .rope_dim = 2,
                     .v_dim = 2};
  const absl::Status got = cpu::GemmMlaPrefillAttention(k, p);
  EXPECT_EQ(got.code(), absl::StatusCode::kInvalidArgument) << got;
  EXPECT_EQ(got, ref_->MlaPrefillAttention(p));
}

INSTANTIATE_TEST_SUITE_P(Isas, OptGemmTest, ::testing::ValuesIn(SupportedIsas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& info) {
                           return std::string(CpuIsaName(info.param));
                         });

}  // namespace
}  // namespace r2

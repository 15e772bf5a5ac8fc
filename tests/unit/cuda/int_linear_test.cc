// CUDA Linear with integer weights (kernels/cuda/linear_int.cu) against the CPU reference
// (kernels/cpu/reference_quant.cc) on random inputs, plus MoeExperts with integer expert views and
// the tiny model converted to int8 / int4 end to end. Skips without a device.
//
// Bounds (relative L2 over every output element; NaN where the reference has a number, or the
// reverse, fails: outputs and their row padding start as NaN):
//   W8A8 (I8): 1e-6. The activation rows are quantized with the reference's formula (same int8
//     values and scales), the int32 sums are exact, and y = acc * s_x * s_w (+ y) is rounded as
//     the reference rounds it: only float32 rounding can differ.
//   W4A16 (U4) GEMV (1-4 rows on "cuda", 5-8 rows where the tensor-core kernel does not take the
//     shape, every row count on "cuda-fp32"): 2e-5 (float32 summation order). The bf16 paths on
//     "cuda": 1e-2 (5-64 rows on the tensor-core kernel with x rounded to bf16: in_features and
//     group size multiples of 128, 16-byte aligned weight; from 9 rows otherwise, bf16 weight
//     tiles and bf16 x through cuBLASLt).
// Not yet run on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/quantize_checkpoint.h"
#include "engine/model/tiny_model.h"
#include "kernels/backend.h"
#include "kernels/quant_format.h"
#include "tests/unit/cuda/cuda_test_util.h"
#include "tests/unit/model/model_test_util.h"

namespace r2 {
namespace {

using cudatest::DeviceBuffer;
using cudatest::ExpectClose;
using cudatest::RandomFloats;

constexpr double kI8Bound = 1e-6;
constexpr double kU4GemvBound = 2e-5;
constexpr double kU4Bf16Bound = 1e-2;
// kernels/cuda/linear_int.cu: kU4MmaMinRows, kU4MmaMaxRows, kU4LtMinRows.
constexpr int64_t kU4MmaMinRows = 5, kU4MmaMaxRows = 64, kU4LtMinRows = 9;

struct IntCase {
  DType dtype = DType::kI8;  // kI8 or kU4
  int64_t out = 0, in = 0;
  int64_t group = 0;  // U4: columns per scale (0: in, one group per row)
  int64_t group_size() const { return dtype == DType::kI8 || group == 0 ? in : group; }
  bool zeros = false;
  DType scale_dtype = DType::kF32;
  bool unaligned = false;  // device weight at an odd address (the scalar kernels)
};

std::string Describe(const IntCase& c) {
  return absl::StrCat(c.dtype == DType::kI8 ? "i8" : "u4", " out ", c.out, " in ", c.in, " group ",
                      c.group, c.zeros ? " zeros" : "", " scale ",
                      std::string(DTypeName(c.scale_dtype)), c.unaligned ? " unaligned" : "");
}

// An integer weight on the host (for the reference) and the same bytes on the device.
struct IntWeight {
  std::vector<uint8_t> data, scale, zero;
  DeviceBuffer d_data, d_scale, d_zero;
  WeightView host, dev;
};

class CudaIntLinearTest : public cudatest::CudaTest {
 protected:
  void MakeWeight(const IntCase& c, IntWeight& w) {
    const int64_t group = c.group_size();
    const int64_t groups = QuantGroups(c.in, group);
    // I8: the whole byte range, -128 included (the converter writes [-127, 127]; the format and
    // the kernels take any byte).
    std::uniform_int_distribution<int32_t> q8(-128, 127), q4(-8, 7);
    std::uniform_real_distribution<float> sd(0.004f, 0.02f);
    if (c.dtype == DType::kI8) {
      w.data.resize(c.out * c.in);
      for (auto& b : w.data) b = static_cast<uint8_t>(static_cast<int8_t>(q8(rng_)));
    } else {
      const int64_t row_bytes = PackedU4RowBytes(c.in);
      w.data.assign(c.out * row_bytes, 0);
      for (int64_t o = 0; o < c.out; ++o) {
        for (int64_t j = 0; j < c.in; ++j) PackU4(w.data.data() + o * row_bytes, j, q4(rng_));
      }
    }
    std::vector<float> scales(c.out * groups);
    for (float& s : scales) s = sd(rng_);
    w.scale = cudatest::Encode(scales, c.scale_dtype);
    TensorView zv;
    if (c.zeros) {
      const int64_t zrows = (c.out + 7) / 8;
      std::vector<int32_t> words(zrows * groups, 0);
      for (int64_t o = 0; o < c.out; ++o) {
        for (int64_t g = 0; g < groups; ++g) {
          const auto nibble = static_cast<uint32_t>(q4(rng_) + 8);
          auto& word = reinterpret_cast<uint32_t&>(words[(o / 8) * groups + g]);
          word |= nibble << (4 * (o % 8));
        }
      }
      w.zero.resize(words.size() * 4);
      std::memcpy(w.zero.data(), words.data(), w.zero.size());
    }
    // Device copies; an unaligned weight starts one byte into its buffer.
    const size_t offset = c.unaligned ? 1 : 0;
    w.d_data = Alloc(w.data.size() + 16);
    std::vector<uint8_t> shifted(w.data.size() + offset, 0);
    std::copy(w.data.begin(), w.data.end(), shifted.begin() + offset);
    w.d_data.Write(shifted.data(), shifted.size());
    w.d_scale = Upload(w.scale);
    if (c.zeros) w.d_zero = Upload(w.zero);

    const std::vector<int64_t> shape = {c.out, c.in};
    const std::vector<int64_t> scale_shape = {c.out, groups};
    for (bool device : {false, true}) {
      WeightView& v = device ? w.dev : w.host;
      v.weight = TensorView{
          c.dtype, shape,
          device ? static_cast<const void*>(static_cast<const uint8_t*>(w.d_data.get()) + offset)
                 : w.data.data()};
      v.scale = TensorView{c.scale_dtype, scale_shape, device ? w.d_scale.get() : w.scale.data()};
      if (c.zeros) {
        v.zero_point = TensorView{
            DType::kI32, {(c.out + 7) / 8, groups}, device ? w.d_zero.get() : w.zero.data()};
      }
      v.group_size = group;
    }
    // Another backend on the device (cuda-fp32) runs on its own stream: the copies must be done.
    ASSERT_TRUE(gpu().Synchronize().ok());
  }

  // One Linear on `backend` (a CUDA backend) against the reference; x and y padded by extra
  // columns, y poisoned (or random when accumulating, the same on both sides).
  // special_rows: row 0 of x all zeros (W8A8: scale 0, every code 0) and, when there is a row 1,
  // row 1 made of 127 and exact halves -9.5 .. 9.5 (W8A8: scale 1, every other code a tie that
  // the reference rounds to even).
  void Check(Backend& backend, const IntCase& c, const IntWeight& w, int64_t rows, bool accumulate,
             int64_t x_extra, int64_t y_extra, bool special_rows = false) {
    const std::string what =
        absl::StrCat(std::string(backend.name()), " ", Describe(c), " rows ", rows,
                     accumulate ? " acc" : "", " xs+", x_extra, " ys+", y_extra);
    SCOPED_TRACE(what);
    const int64_t xs = c.in + x_extra, ys = c.out + y_extra;
    std::vector<float> x = RandomFloats(rng_, rows * xs);
    if (special_rows) {
      std::fill(x.begin(), x.begin() + c.in, 0.0f);
      if (rows > 1) {
        float* tie = x.data() + xs;
        tie[0] = 127.0f;
        for (int64_t j = 1; j < c.in; ++j) tie[j] = static_cast<float>(j % 20) - 9.5f;
      }
    }
    std::vector<float> y = accumulate ? RandomFloats(rng_, rows * ys) : cudatest::NaNs(rows * ys);
    if (accumulate) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = c.out; o < ys; ++o) y[r * ys + o] = NAN;  // padding stays NaN
      }
    }
    DeviceBuffer d_x(&backend, x.size() * 4), d_y(&backend, y.size() * 4);
    d_x.Write(x.data(), x.size() * 4);
    d_y.Write(y.data(), y.size() * 4);
    const LinearParams hp{.x = x.data(),
                          .x_stride = xs,
                          .rows = rows,
                          .weight = w.host,
                          .y = y.data(),
                          .y_stride = ys,
                          .accumulate = accumulate};
    LinearParams dp = hp;
    dp.x = d_x.f32();
    dp.weight = w.dev;
    dp.y = d_y.f32();
    ASSERT_TRUE(cpu().Linear(hp).ok());
    const absl::Status s = backend.Linear(dp);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE(backend.Synchronize().ok());
    double bound = kI8Bound;
    if (c.dtype == DType::kU4) bound = U4UsesBf16(backend, c, rows) ? kU4Bf16Bound : kU4GemvBound;
    ExpectClose(d_y.Floats(y.size()), y, bound, what);
  }

  // Whether a U4 Linear of `rows` rows takes a bf16 path (linear_int.cu's dispatch) rather than
  // the float32 GEMV.
  static bool U4UsesBf16(const Backend& backend, const IntCase& c, int64_t rows) {
    if (backend.name() != "cuda") return false;
    const bool mma = rows >= kU4MmaMinRows && rows <= kU4MmaMaxRows && c.in % 128 == 0 &&
                     c.group_size() % 128 == 0 && !c.unaligned;
    return mma || rows >= kU4LtMinRows;
  }

  // The fp32-activation backend, or null (with a test failure) when it cannot be made.
  Backend* Fp32() {
    if (!fp32_) {
      auto made = MakeBackend("cuda-fp32");
      EXPECT_TRUE(made.ok()) << made.status();
      if (made.ok()) fp32_ = *std::move(made);
    }
    return fp32_.get();
  }

 private:
  std::unique_ptr<Backend> fp32_;
};

const int64_t kRowGrid[] = {1, 2, 3, 4, 5, 8, 9, 17, 33, 64, 65, 67};

TEST_F(CudaIntLinearTest, W8A8MatchesTheReference) {
  const IntCase cases[] = {
      {.dtype = DType::kI8, .out = 37, .in = 64},
      {.dtype = DType::kI8, .out = 130, .in = 464, .scale_dtype = DType::kBF16},
      {.dtype = DType::kI8, .out = 257, .in = 1008, .scale_dtype = DType::kF16},
      {.dtype = DType::kI8, .out = 129, .in = 100},  // in % 16 != 0: scalar kernels
      {.dtype = DType::kI8, .out = 19, .in = 7},
      {.dtype = DType::kI8, .out = 70, .in = 256, .unaligned = true},
  };
  for (const IntCase& c : cases) {
    IntWeight w;
    MakeWeight(c, w);
    for (int64_t rows : kRowGrid) {
      Check(gpu(), c, w, rows, /*accumulate=*/rows % 2 == 1, /*x_extra=*/rows % 3, rows % 4);
    }
  }
}

TEST_F(CudaIntLinearTest, W8A8AccumulateOnAndOffManyRowsAZeroRowAndTies) {
  const IntCase c{.dtype = DType::kI8, .out = 200, .in = 320};
  IntWeight w;
  MakeWeight(c, w);
  for (bool acc : {false, true}) {
    for (int64_t rows : {1, 7, 64, 300}) {
      Check(gpu(), c, w, rows, acc, 0, 0, /*special_rows=*/true);
    }
  }
}

TEST_F(CudaIntLinearTest, W4A16MatchesTheReference) {
  // out, in, group (0: in), zero points, scale dtype, unaligned weight.
  auto u4 = [](int64_t out, int64_t in, int64_t group, bool zeros, DType scale = DType::kF32,
               bool unaligned = false) {
    return IntCase{.dtype = DType::kU4,
                   .out = out,
                   .in = in,
                   .group = group,
                   .zeros = zeros,
                   .scale_dtype = scale,
                   .unaligned = unaligned};
  };
  const IntCase cases[] = {
      u4(37, 128, 128, false),
      u4(130, 512, 128, true, DType::kBF16),
      u4(67, 384, 64, true),
      u4(41, 256, 0, false, DType::kF16),
      u4(70, 512, 256, true, DType::kF16),  // tensor cores: two 128-column chunks a group
      u4(300, 2048, 128, true, DType::kBF16),
      // Not multiples of 32 (or group not): the scalar kernels, partial last groups.
      u4(29, 200, 128, true),
      u4(33, 100, 48, false, DType::kBF16),
      u4(9, 13, 128, true),
      u4(50, 256, 128, false, DType::kF32, /*unaligned=*/true),
  };
  for (const IntCase& c : cases) {
    IntWeight w;
    MakeWeight(c, w);
    for (int64_t rows : kRowGrid) {
      Check(gpu(), c, w, rows, rows % 2 == 1, rows % 3, rows % 4);
    }
  }
}

TEST_F(CudaIntLinearTest, W4A16OnFp32ActivationsIsGemvAtEveryRowCount) {
  Backend* fp32 = Fp32();
  ASSERT_NE(fp32, nullptr);
  // The weights live in the "cuda" backend's memory: the same device, usable by both.
  const IntCase c{.dtype = DType::kU4, .out = 96, .in = 256, .group = 128, .zeros = true};
  IntWeight w;
  MakeWeight(c, w);
  for (int64_t rows : {1, 9, 33, 67}) Check(*fp32, c, w, rows, rows % 2 == 1, 0, 1);
  const IntCase c8{.dtype = DType::kI8, .out = 96, .in = 256};
  IntWeight w8;
  MakeWeight(c8, w8);
  for (int64_t rows : {1, 9, 67}) Check(*fp32, c8, w8, rows, false, 1, 0);
}

TEST_F(CudaIntLinearTest, BadArgumentsAreErrors) {
  const IntCase c{.dtype = DType::kI8, .out = 16, .in = 32};
  IntWeight w;
  MakeWeight(c, w);
  DeviceBuffer x = Alloc(4 * 64 * 2), y = Alloc(4 * 16 * 2);
  LinearParams p{.x = x.f32(), .rows = 1, .weight = w.dev, .y = y.f32()};
  p.batch = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(gpu().Linear(p)));
  p.batch = 1;
  WeightView bad = w.dev;
  bad.scale.shape = {16, 2};
  p.weight = bad;
  EXPECT_TRUE(absl::IsInvalidArgument(gpu().Linear(p)));
  bad = w.dev;
  bad.weight.shape = {1, 200000};  // int32 sums would overflow; rejected before any launch
  bad.scale.shape = {1, 1};
  bad.group_size = 200000;
  p.weight = bad;
  const absl::Status s = gpu().Linear(p);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("in_features"), std::string::npos) << s;
  EXPECT_TRUE(gpu().Synchronize().ok());
}

// ---- MoeExperts with integer expert views ----

TEST_F(CudaIntLinearTest, MoeExpertsWithIntegerExpertViews) {
  const int64_t hidden = 256, width = 96, experts = 6, top_k = 3;
  for (DType dtype : {DType::kI8, DType::kU4}) {
    std::vector<IntWeight> weights(3 * experts);
    std::vector<WeightView> host_views, dev_views;
    for (int64_t i = 0; i < 3 * experts; ++i) {
      const bool down = i >= 2 * experts;
      IntCase c{.dtype = dtype,
                .out = down ? hidden : width,
                .in = down ? width : hidden,
                .group = dtype == DType::kU4 ? 32 : 0,
                .zeros = dtype == DType::kU4 && i % 2 == 0,
                .scale_dtype = DType::kBF16};
      MakeWeight(c, weights[i]);
      host_views.push_back(weights[i].host);
      dev_views.push_back(weights[i].dev);
    }
    for (int64_t rows : {1, 2, 5}) {
      SCOPED_TRACE(absl::StrCat(std::string(DTypeName(dtype)), " rows ", rows));
      const int64_t hs = hidden + 3;
      std::vector<float> x = RandomFloats(rng_, rows * hidden);
      std::vector<float> h = RandomFloats(rng_, rows * hs);
      for (int64_t t = 0; t < rows; ++t) {
        for (int64_t o = hidden; o < hs; ++o) h[t * hs + o] = NAN;
      }
      std::vector<int32_t> ids(rows * top_k);
      std::vector<float> ew = RandomFloats(rng_, rows * top_k, 0.5f);
      for (int64_t t = 0; t < rows; ++t) {
        std::vector<int32_t> perm(experts);
        for (int64_t e = 0; e < experts; ++e) perm[e] = static_cast<int32_t>(e);
        std::shuffle(perm.begin(), perm.end(), rng_);
        for (int64_t j = 0; j < top_k; ++j) ids[t * top_k + j] = perm[j];
      }
      ids[0] = -1;  // an out-of-range id contributes nothing
      // Expected: each pair through the reference Linear (integer formats) in order.
      std::vector<float> want = h;
      std::vector<float> gate(width), up(width), yv(hidden);
      for (int64_t t = 0; t < rows; ++t) {
        std::vector<float> acc(hidden, 0.0f);
        for (int64_t j = 0; j < top_k; ++j) {
          const int32_t e = ids[t * top_k + j];
          if (e < 0) continue;
          const float* xt = x.data() + t * hidden;
          ASSERT_TRUE(
              cpu().Linear({.x = xt, .rows = 1, .weight = host_views[e], .y = gate.data()}).ok());
          ASSERT_TRUE(
              cpu()
                  .Linear({.x = xt, .rows = 1, .weight = host_views[experts + e], .y = up.data()})
                  .ok());
          for (int64_t i = 0; i < width; ++i)
            gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
          ASSERT_TRUE(cpu()
                          .Linear({.x = gate.data(),
                                   .rows = 1,
                                   .weight = host_views[2 * experts + e],
                                   .y = yv.data()})
                          .ok());
          for (int64_t o = 0; o < hidden; ++o) acc[o] += ew[t * top_k + j] * yv[o];
        }
        for (int64_t o = 0; o < hidden; ++o) want[t * hs + o] += acc[o];
      }
      DeviceBuffer d_x = Upload(x), d_h = Upload(h), d_ids = Upload(ids), d_w = Upload(ew);
      MoeExpertsParams p{.x = d_x.f32(),
                         .rows = rows,
                         .hidden = hidden,
                         .width = width,
                         .num_experts = experts,
                         .top_k = top_k,
                         .expert_ids = d_ids.i32(),
                         .expert_weights = d_w.f32(),
                         .dtype = dtype,
                         .h = d_h.f32(),
                         .h_stride = hs,
                         .expert_views = dev_views.data()};
      const absl::Status s = gpu().MoeExperts(p);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_TRUE(gpu().Synchronize().ok());
      // int8: a value of the SwiGLU product that rounds the other way in float32 moves its
      // int8 code by one step (1/127 of the row's largest value): 2e-3 relative.
      ExpectClose(d_h.Floats(h.size()), want, dtype == DType::kI8 ? 2e-3 : 1e-4, "MoeExperts");
    }
  }
}

// ---- the tiny model converted to int8 / int4, end to end ----

struct ModelCase {
  const char* format;  // "int8", "int4", "int4-zp"
  const char* backend;
  double bound;  // median over the logits rows of max |logit - cpu| / max |cpu|
};

class CudaIntModelTest : public ::testing::TestWithParam<ModelCase> {};

// A prompt of 12 tokens (prefill rows 12: the int8 tensor-core kernel and, on "cuda", the int4
// bf16 tile path) and 3 single-token decode steps (GEMVs): every logits row.
std::vector<std::vector<float>> RunSteps(model::DeepseekModel& m, const std::vector<int32_t>& ids) {
  auto cache = model::testing::MakeCache(m, 4, 8);
  const std::vector<int32_t> table = {2, 0, 3, 1};
  std::vector<std::vector<float>> rows;
  int64_t pos = 0;
  for (int64_t n : {12, 1, 1, 1}) {
    model::SequenceInput seq{.token_ids = absl::MakeConstSpan(ids.data() + pos, n),
                             .start_pos = pos,
                             .block_table = table};
    auto out = m.Forward({&seq, 1}, model::LogitsMode::kAll, *cache);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    for (int64_t r = 0; r < n; ++r) {
      const absl::Span<const float> row = out->logits_row(r);
      rows.emplace_back(row.begin(), row.end());
    }
    pos += n;
  }
  return rows;
}

TEST_P(CudaIntModelTest, ConvertedTinyModelAgreesWithTheCpu) {
  const ModelCase mc = GetParam();
  const std::string reason = model::testing::BackendUnavailable(mc.backend);
  if (!reason.empty()) GTEST_SKIP() << mc.backend << " unavailable: " << reason;
  auto options = model::TinyModelPreset("tiny");
  ASSERT_TRUE(options.ok()) << options.status();
  const std::string tag = std::string("int-cuda-") + mc.format;
  const std::string dir = r2::testing::MakeTempDir(tag);
  ASSERT_TRUE(model::WriteTinyModel(*options, dir).ok());
  model::QuantizeOptions q;
  q.format =
      std::string(mc.format) == "int8" ? model::QuantFormat::kInt8 : model::QuantFormat::kInt4;
  q.group_size = 32;
  q.symmetric = std::string(mc.format) != "int4-zp";
  q.quantize_dense_mlp = true;  // every linear layer of the blocks integer
  q.attention_output = model::AttentionOutput::kQuantize;  // o_proj too (int8 keeps it BF16)
  const std::string out = r2::testing::MakeTempDir(tag + "-q");
  auto summary = model::QuantizeCheckpoint(dir, out, q);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_GT(summary->quantized_tensors, 0);

  auto ref_backend = MakeCpuReferenceBackend();
  auto gpu_backend = MakeBackend(mc.backend);
  ASSERT_TRUE(gpu_backend.ok()) << gpu_backend.status();
  auto ref = model::DeepseekModel::Load(out, ref_backend.get());
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto gpu = model::DeepseekModel::Load(out, gpu_backend->get());
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::mt19937 rng(5);
  const std::vector<int32_t> ids =
      model::testing::RandomTokens(rng, 15, (*ref)->config().vocab_size);
  const auto want = RunSteps(**ref, ids);
  const auto got = RunSteps(**gpu, ids);
  ASSERT_EQ(want.size(), 15u);
  ASSERT_EQ(got.size(), want.size());
  std::vector<double> diffs;
  for (size_t i = 0; i < want.size(); ++i) {
    for (float v : got[i]) ASSERT_TRUE(std::isfinite(v)) << "row " << i;
    diffs.push_back(model::testing::RelativeDiff(got[i], want[i]));
  }
  std::sort(diffs.begin(), diffs.end());
  const double median = diffs[diffs.size() / 2];
  std::printf("IntModel %s on %s: logits diff to the cpu median %.3g, worst %.3g (bound %.3g)\n",
              mc.format, mc.backend, median, diffs.back(), mc.bound);
  EXPECT_LE(median, mc.bound);
}

// int8 on cuda-fp32: the activation codes equal the reference's except where a value that
// float32 summation order moved sits on a rounding boundary (one step of 1/127); int4 on
// cuda-fp32: summation order only. On "cuda" the bf16 operands of the float layers (and of the
// int4 tiles at 12 rows) add the serving mode's 3e-2 (model_test_util.h LogitsBound).
INSTANTIATE_TEST_SUITE_P(
    Formats, CudaIntModelTest,
    ::testing::Values(ModelCase{"int8", "cuda-fp32", 1e-2}, ModelCase{"int4", "cuda-fp32", 1e-3},
                      ModelCase{"int4-zp", "cuda-fp32", 1e-3}, ModelCase{"int8", "cuda", 5e-2},
                      ModelCase{"int4", "cuda", 3e-2}, ModelCase{"int4-zp", "cuda", 3e-2}),
    [](const ::testing::TestParamInfo<ModelCase>& info) {
      std::string name = std::string(info.param.format) + "_" + info.param.backend;
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

}  // namespace
}  // namespace r2

// The CUDA backend's memory API and dense ops (everything but attention) against the CPU
// reference, on fresh random inputs over a grid of shapes with odd sizes, tails and strided
// views. Outputs start as NaN on both sides, so an element the kernel fails to write (or writes
// outside its region) fails the comparison. Error bounds (relative L2 over the output):
//   Embedding, GatherRows, ScatterAddRows (distinct rows), MoeRoute ids: exact
//   RmsNorm, Rope, SiluMul, Add, ScatterAddRows, MoeRoute weights: 1e-5 (float32 rounding order)
//   Linear: 2e-5 on the GEMV path (rows <= 2; <= 8 for f16 weights) and for f32 weights;
//           1e-2 where activations are rounded to bf16 (cuBLASLt; fp8 tensor-core kernel).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "tests/unit/cuda/cuda_test_util.h"

namespace r2 {
namespace {

using cudatest::DeviceBuffer;
using cudatest::ExpectClose;
using cudatest::MirroredTensor;
using cudatest::NaNs;
using cudatest::RandomFloats;
using cudatest::RandomInts;

class CudaOpsTest : public cudatest::CudaTest {};

std::string Name(DType d) { return std::string(DTypeName(d)); }

constexpr DType kFloatDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status _s = (expr);              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s; \
  } while (0)

#define EXPECT_INVALID(expr)                                                         \
  do {                                                                               \
    const absl::Status _s = (expr);                                                  \
    EXPECT_EQ(_s.code(), absl::StatusCode::kInvalidArgument) << #expr << ": " << _s; \
  } while (0)

// ---- memory --------------------------------------------------------------------------------

TEST_F(CudaOpsTest, NameAndMemorySpace) {
  EXPECT_EQ(gpu().name(), "cuda");
  EXPECT_FALSE(gpu().host_memory());
  absl::StatusOr<MemoryInfo> info = gpu().QueryMemory();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_GT(info->total_bytes, 0);
  EXPECT_GT(info->free_bytes, 0);
  EXPECT_LE(info->free_bytes, info->total_bytes);
}

TEST_F(CudaOpsTest, CopiesRoundTripSmallAndStaged) {
  // 40 MB + 3 bytes goes through the pinned staging buffers in several chunks.
  for (size_t bytes : {size_t{1}, size_t{4097}, (size_t{40} << 20) + 3}) {
    std::vector<uint8_t> host(bytes);
    std::mt19937 rng(static_cast<uint32_t>(bytes));
    for (auto& b : host) b = static_cast<uint8_t>(rng());
    DeviceBuffer a = Alloc(bytes), b = Alloc(bytes);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(a.get()) % 256, 0u);
    ASSERT_OK(gpu().CopyToBackend(a.get(), host.data(), bytes));
    ASSERT_OK(gpu().CopyWithin(b.get(), a.get(), bytes));
    EXPECT_EQ(b.Read<uint8_t>(bytes), host) << bytes;
    ASSERT_OK(gpu().Zero(a.get(), bytes));
    EXPECT_EQ(a.Read<uint8_t>(bytes), std::vector<uint8_t>(bytes, 0)) << bytes;
  }
  ASSERT_OK(gpu().Synchronize());
}

TEST_F(CudaOpsTest, CopyWithinOverlappingIsMemmove) {
  std::vector<uint8_t> host(1000);
  std::iota(host.begin(), host.end(), 0);
  DeviceBuffer a = Upload(host);
  auto* p = static_cast<uint8_t*>(a.get());
  ASSERT_OK(gpu().CopyWithin(p + 10, p, 900));  // forward overlap
  std::vector<uint8_t> want = host;
  std::memmove(want.data() + 10, want.data(), 900);
  EXPECT_EQ(a.Read<uint8_t>(1000), want);
  ASSERT_OK(gpu().CopyWithin(p, p + 7, 900));  // backward overlap
  std::memmove(want.data(), want.data() + 7, 900);
  EXPECT_EQ(a.Read<uint8_t>(1000), want);
}

TEST_F(CudaOpsTest, AllocateTooMuchIsResourceExhausted) {
  absl::StatusOr<void*> p = gpu().Allocate(size_t{1} << 50);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted) << p.status();
  // The failure leaves the backend usable.
  DeviceBuffer ok = Alloc(256);
  ASSERT_OK(gpu().Zero(ok.get(), 256));
  ASSERT_OK(gpu().Synchronize());
}

// ---- row ops -------------------------------------------------------------------------------

TEST_F(CudaOpsTest, Embedding) {
  for (DType dt : kFloatDTypes) {
    for (int64_t dim : {1, 7, 64, 576, 2048}) {
      for (int64_t rows : {1, 3, 17, 100}) {
        for (int64_t extra : {0, 3}) {
          const int64_t vocab = 129, os = dim + extra;
          MirroredTensor table = Mirror(RandomFloats(rng_, vocab * dim), dt, {vocab, dim});
          const std::vector<int32_t> ids = RandomInts(rng_, rows, 0, vocab - 1);
          DeviceBuffer d_ids = Upload(ids), d_out = Poisoned(rows * os);
          std::vector<float> ref = NaNs(rows * os);
          ASSERT_OK(cpu().Embedding({.table = table.host_view,
                                     .ids = ids.data(),
                                     .rows = rows,
                                     .out = ref.data(),
                                     .out_stride = extra ? os : 0}));
          ASSERT_OK(gpu().Embedding({.table = table.device_view,
                                     .ids = d_ids.i32(),
                                     .rows = rows,
                                     .out = d_out.f32(),
                                     .out_stride = extra ? os : 0}));
          ExpectClose(d_out.Floats(rows * os), ref, 0.0,
                      absl::StrCat("Embedding ", Name(dt), " dim ", dim, " rows ", rows));
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, RmsNorm) {
  for (DType dt : kFloatDTypes) {
    for (int64_t dim : {1, 7, 64, 129, 576, 2048, 7168}) {
      for (int64_t rows : {1, 3, 16, 17, 100}) {
        for (int mode = 0; mode < 3; ++mode) {  // packed, strided, in place
          const int64_t xs = mode == 1 ? dim + 5 : dim, ys = mode == 1 ? dim + 2 : dim;
          MirroredTensor w = Mirror(RandomFloats(rng_, dim), dt, {dim});
          std::vector<float> x = RandomFloats(rng_, rows * xs, 3.0f);
          DeviceBuffer d_x = Upload(x);
          DeviceBuffer d_y = Poisoned(rows * ys);
          std::vector<float> ref = mode == 2 ? x : NaNs(rows * ys);
          const float* cx = mode == 2 ? ref.data() : x.data();
          ASSERT_OK(cpu().RmsNorm({.x = cx,
                                   .x_stride = xs,
                                   .y = ref.data(),
                                   .y_stride = ys,
                                   .rows = rows,
                                   .dim = dim,
                                   .weight = w.host_view,
                                   .eps = 1e-6f}));
          float* gy = mode == 2 ? d_x.f32() : d_y.f32();
          ASSERT_OK(gpu().RmsNorm({.x = d_x.f32(),
                                   .x_stride = xs,
                                   .y = gy,
                                   .y_stride = ys,
                                   .rows = rows,
                                   .dim = dim,
                                   .weight = w.device_view,
                                   .eps = 1e-6f}));
          ExpectClose(
              (mode == 2 ? d_x : d_y).Floats(rows * ys), ref, 1e-5,
              absl::StrCat("RmsNorm ", Name(dt), " dim ", dim, " rows ", rows, " mode ", mode));
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, Rope) {
  const int64_t max_pos = 300;
  for (int64_t rope_dim : {2, 64}) {
    const int64_t half = rope_dim / 2;
    std::vector<float> cos(max_pos * half), sin(max_pos * half);
    for (int64_t p = 0; p < max_pos; ++p) {
      for (int64_t i = 0; i < half; ++i) {
        const double a = p * std::pow(10000.0, -2.0 * i / rope_dim);
        cos[p * half + i] = static_cast<float>(std::cos(a));
        sin[p * half + i] = static_cast<float>(std::sin(a));
      }
    }
    DeviceBuffer d_cos = Upload(cos), d_sin = Upload(sin);
    for (int64_t heads : {1, 3, 16}) {
      for (int64_t rows : {1, 3, 17, 100}) {
        // q-like rows: [heads][nope 5 + rope] plus 3 spare columns per token.
        const int64_t head_stride = 5 + rope_dim, token_stride = heads * head_stride + 3;
        std::vector<float> x = RandomFloats(rng_, rows * token_stride);
        const std::vector<int32_t> pos = RandomInts(rng_, rows, 0, max_pos - 1);
        DeviceBuffer d_x = Upload(x), d_pos = Upload(pos);
        RopeParams p{.rows = rows,
                     .heads = heads,
                     .token_stride = token_stride,
                     .head_stride = head_stride,
                     .rope_dim = rope_dim,
                     .max_positions = max_pos};
        RopeParams pc = p, pg = p;
        pc.x = x.data() + 5;
        pc.positions = pos.data();
        pc.cos = cos.data();
        pc.sin = sin.data();
        pg.x = d_x.f32() + 5;
        pg.positions = d_pos.i32();
        pg.cos = d_cos.f32();
        pg.sin = d_sin.f32();
        ASSERT_OK(cpu().Rope(pc));
        ASSERT_OK(gpu().Rope(pg));
        ExpectClose(d_x.Floats(x.size()), x, 1e-6,
                    absl::StrCat("Rope dim ", rope_dim, " heads ", heads, " rows ", rows));
      }
    }
  }
}

TEST_F(CudaOpsTest, SiluMulAndAdd) {
  for (int64_t dim : {1, 7, 64, 129, 2048}) {
    for (int64_t rows : {1, 3, 17, 100}) {
      for (int mode = 0; mode < 3; ++mode) {  // packed, strided (gate|up in one row), aliased
        const int64_t w = mode == 1 ? 2 * dim + 1 : dim;
        std::vector<float> g = RandomFloats(rng_, rows * w, 3.0f);
        std::vector<float> u = RandomFloats(rng_, rows * w);
        DeviceBuffer d_g = Upload(g), d_u = Upload(u), d_o = Poisoned(rows * w);
        const int64_t off = mode == 1 ? dim : 0;  // up starts after gate in the wide row
        // SiluMul.
        std::vector<float> ref = mode == 2 ? g : NaNs(rows * w);
        const float* cu = mode == 1 ? g.data() + off : u.data();
        const float* gu = mode == 1 ? d_g.f32() + off : d_u.f32();
        const float* cg = mode == 2 ? ref.data() : g.data();
        ASSERT_OK(cpu().SiluMul({.gate = cg,
                                 .gate_stride = w,
                                 .up = cu,
                                 .up_stride = w,
                                 .out = ref.data(),
                                 .out_stride = w,
                                 .rows = rows,
                                 .dim = dim}));
        float* go = mode == 2 ? d_g.f32() : d_o.f32();
        ASSERT_OK(gpu().SiluMul({.gate = d_g.f32(),
                                 .gate_stride = w,
                                 .up = gu,
                                 .up_stride = w,
                                 .out = go,
                                 .out_stride = w,
                                 .rows = rows,
                                 .dim = dim}));
        ExpectClose((mode == 2 ? d_g : d_o).Floats(rows * w), ref, 1e-6,
                    absl::StrCat("SiluMul dim ", dim, " rows ", rows, " mode ", mode));
        // Add (out aliases b in mode 2).
        std::vector<float> a = RandomFloats(rng_, rows * w), b = RandomFloats(rng_, rows * w);
        DeviceBuffer d_a = Upload(a), d_b = Upload(b), d_s = Poisoned(rows * w);
        std::vector<float> sum = mode == 2 ? b : NaNs(rows * w);
        ASSERT_OK(cpu().Add({.a = a.data(),
                             .a_stride = w,
                             .b = mode == 2 ? sum.data() : b.data(),
                             .b_stride = w,
                             .out = sum.data(),
                             .out_stride = w,
                             .rows = rows,
                             .dim = dim}));
        ASSERT_OK(gpu().Add({.a = d_a.f32(),
                             .a_stride = w,
                             .b = d_b.f32(),
                             .b_stride = w,
                             .out = mode == 2 ? d_b.f32() : d_s.f32(),
                             .out_stride = w,
                             .rows = rows,
                             .dim = dim}));
        ExpectClose((mode == 2 ? d_b : d_s).Floats(rows * w), sum, 0.0,
                    absl::StrCat("Add dim ", dim, " rows ", rows, " mode ", mode));
      }
    }
  }
}

TEST_F(CudaOpsTest, GatherRows) {
  for (int64_t dim : {1, 7, 129, 2048}) {
    for (int64_t rows : {1, 3, 17, 100}) {
      for (bool identity : {false, true}) {
        const int64_t x_rows = identity ? rows + 2 : 37, xs = dim + 3, os = dim + 1;
        std::vector<float> x = RandomFloats(rng_, x_rows * xs);
        const std::vector<int32_t> index = RandomInts(rng_, rows, 0, x_rows - 1);
        DeviceBuffer d_x = Upload(x), d_i = Upload(index), d_o = Poisoned(rows * os);
        std::vector<float> ref = NaNs(rows * os);
        ASSERT_OK(cpu().GatherRows({.x = x.data(),
                                    .x_stride = xs,
                                    .x_rows = x_rows,
                                    .index = identity ? nullptr : index.data(),
                                    .rows = rows,
                                    .dim = dim,
                                    .out = ref.data(),
                                    .out_stride = os}));
        ASSERT_OK(gpu().GatherRows({.x = d_x.f32(),
                                    .x_stride = xs,
                                    .x_rows = x_rows,
                                    .index = identity ? nullptr : d_i.i32(),
                                    .rows = rows,
                                    .dim = dim,
                                    .out = d_o.f32(),
                                    .out_stride = os}));
        ExpectClose(d_o.Floats(rows * os), ref, 0.0,
                    absl::StrCat("GatherRows dim ", dim, " rows ", rows, " id ", identity));
      }
    }
  }
}

TEST_F(CudaOpsTest, ScatterAddRows) {
  for (int64_t dim : {1, 7, 129, 2048}) {
    for (int64_t rows : {1, 5, 16, 17, 100, 1000}) {
      for (int64_t out_rows : {1, 3, 64, 1500}) {
        for (bool scaled : {false, true}) {
          const bool distinct = rows <= out_rows;
          const int64_t xs = dim + 2, os = dim + 5;
          std::vector<float> x = RandomFloats(rng_, rows * xs);
          std::vector<float> scale = RandomFloats(rng_, rows);
          std::vector<int32_t> index;
          if (distinct) {  // a random injection: every destination at most once
            std::vector<int32_t> all(out_rows);
            std::iota(all.begin(), all.end(), 0);
            std::shuffle(all.begin(), all.end(), rng_);
            index.assign(all.begin(), all.begin() + rows);
          } else {
            index = RandomInts(rng_, rows, 0, out_rows - 1);
          }
          std::vector<float> out = RandomFloats(rng_, out_rows * os);
          for (int64_t r = 0; r < out_rows; ++r) {
            for (int64_t j = dim; j < os; ++j) out[r * os + j] = NAN;  // gaps stay untouched
          }
          DeviceBuffer d_x = Upload(x), d_s = Upload(scale), d_i = Upload(index), d_o = Upload(out);
          ASSERT_OK(cpu().ScatterAddRows({.x = x.data(),
                                          .x_stride = xs,
                                          .index = index.data(),
                                          .scale = scaled ? scale.data() : nullptr,
                                          .rows = rows,
                                          .dim = dim,
                                          .out = out.data(),
                                          .out_stride = os,
                                          .out_rows = out_rows}));
          ASSERT_OK(gpu().ScatterAddRows({.x = d_x.f32(),
                                          .x_stride = xs,
                                          .index = d_i.i32(),
                                          .scale = scaled ? d_s.f32() : nullptr,
                                          .rows = rows,
                                          .dim = dim,
                                          .out = d_o.f32(),
                                          .out_stride = os,
                                          .out_rows = out_rows}));
          ExpectClose(d_o.Floats(out.size()), out, distinct ? 0.0 : 1e-6,
                      absl::StrCat("ScatterAddRows dim ", dim, " rows ", rows, " out_rows ",
                                   out_rows, " scaled ", scaled));
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, ScatterAddRowsManyRowsAndDestinations) {
  // rows * out_rows above 2^24: the sorted path (the grid above covers the others).
  const int64_t rows = 20000, out_rows = 1000, dim = 3;
  std::vector<float> x = RandomFloats(rng_, rows * dim), scale = RandomFloats(rng_, rows);
  const std::vector<int32_t> index = RandomInts(rng_, rows, 0, out_rows - 1);
  std::vector<float> out = RandomFloats(rng_, out_rows * dim);
  DeviceBuffer d_x = Upload(x), d_s = Upload(scale), d_i = Upload(index), d_o = Upload(out);
  ASSERT_OK(cpu().ScatterAddRows({.x = x.data(),
                                  .index = index.data(),
                                  .scale = scale.data(),
                                  .rows = rows,
                                  .dim = dim,
                                  .out = out.data(),
                                  .out_rows = out_rows}));
  ASSERT_OK(gpu().ScatterAddRows({.x = d_x.f32(),
                                  .index = d_i.i32(),
                                  .scale = d_s.f32(),
                                  .rows = rows,
                                  .dim = dim,
                                  .out = d_o.f32(),
                                  .out_rows = out_rows}));
  ExpectClose(d_o.Floats(out.size()), out, 1e-6, "ScatterAddRows sorted path");
}

TEST_F(CudaOpsTest, ScatterAddRowsIsDeterministic) {
  const int64_t rows = 4096, dim = 256, out_rows = 7;
  std::vector<float> x = RandomFloats(rng_, rows * dim, 100.0f);
  const std::vector<int32_t> index = RandomInts(rng_, rows, 0, out_rows - 1);
  DeviceBuffer d_x = Upload(x), d_i = Upload(index);
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    DeviceBuffer d_o = Upload(std::vector<float>(out_rows * dim, 0.0f));
    ASSERT_OK(gpu().ScatterAddRows({.x = d_x.f32(),
                                    .index = d_i.i32(),
                                    .rows = rows,
                                    .dim = dim,
                                    .out = d_o.f32(),
                                    .out_rows = out_rows}));
    std::vector<float> got = d_o.Floats(out_rows * dim);
    if (run == 0) {
      first = got;
    } else {
      EXPECT_EQ(std::memcmp(got.data(), first.data(), 4 * got.size()), 0) << "run " << run;
    }
  }
}

// ---- Linear --------------------------------------------------------------------------------

double LinearBound(DType dt, int64_t rows) {
  if (dt == DType::kF32) return 2e-5;
  return rows <= (dt == DType::kF16 ? 8 : 2) ? 2e-5 : 1e-2;
}

struct LinearCase {
  DType dtype;
  int64_t in, out, rows;
  int64_t x_extra = 0, y_extra = 0;  // stride padding
  bool accumulate = false;
  int64_t block = 128;  // fp8 block size (both dims)
};

class LinearTest : public CudaOpsTest {
 protected:
  void Run(const LinearCase& c) {
    const std::string what = absl::StrCat("Linear ", Name(c.dtype), " in ", c.in, " out ", c.out,
                                          " rows ", c.rows, " xs+", c.x_extra, " ys+", c.y_extra,
                                          " acc ", c.accumulate, " block ", c.block);
    SCOPED_TRACE(what);
    const int64_t xs = c.in + c.x_extra, ys = c.out + c.y_extra;
    std::vector<float> wv =
        RandomFloats(rng_, c.in * c.out, c.dtype == DType::kF8E4M3 ? 60.0f : 1.0f);
    MirroredTensor w = Mirror(wv, c.dtype, {c.out, c.in});
    MirroredTensor s;
    WeightView hw{.weight = w.host_view}, dw{.weight = w.device_view};
    if (c.dtype == DType::kF8E4M3) {
      const int64_t so = (c.out + c.block - 1) / c.block, si = (c.in + c.block - 1) / c.block;
      std::vector<float> sv(so * si);
      std::uniform_real_distribution<float> u(0.002f, 0.03f);
      for (float& v : sv) v = u(rng_);
      s = Mirror(sv, DType::kF32, {so, si});
      hw.scale_inv = s.host_view;
      dw.scale_inv = s.device_view;
      hw.block_out = hw.block_in = dw.block_out = dw.block_in = c.block;
    }
    std::vector<float> x = RandomFloats(rng_, c.rows * xs);
    std::vector<float> y = c.accumulate ? RandomFloats(rng_, c.rows * ys) : NaNs(c.rows * ys);
    if (c.accumulate) {
      for (int64_t r = 0; r < c.rows; ++r) {
        for (int64_t j = c.out; j < ys; ++j) y[r * ys + j] = NAN;
      }
    }
    DeviceBuffer d_x = Upload(x), d_y = Upload(y);
    ASSERT_OK(cpu().Linear({.x = x.data(),
                            .x_stride = c.x_extra ? xs : 0,
                            .rows = c.rows,
                            .weight = hw,
                            .y = y.data(),
                            .y_stride = c.y_extra ? ys : 0,
                            .accumulate = c.accumulate}));
    ASSERT_OK(gpu().Linear({.x = d_x.f32(),
                            .x_stride = c.x_extra ? xs : 0,
                            .rows = c.rows,
                            .weight = dw,
                            .y = d_y.f32(),
                            .y_stride = c.y_extra ? ys : 0,
                            .accumulate = c.accumulate}));
    ExpectClose(d_y.Floats(y.size()), y, LinearBound(c.dtype, c.rows), what);
  }
};

TEST_F(LinearTest, AllDtypesShapesAndRowCounts) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1},   {7, 3},    {64, 129},
                                                {129, 7}, {576, 64}, {2048, 96}};
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    for (auto [in, out] : shapes) {
      for (int64_t rows : {1, 3, 8, 9, 16, 17, 33, 100}) {
        Run({.dtype = dt, .in = in, .out = out, .rows = rows});
      }
    }
  }
}

TEST_F(LinearTest, StridesAndAccumulate) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3}) {
    for (int64_t rows : {1, 5, 17, 40}) {
      // +4 keeps 16-byte aligned rows (vector loads); +1 forces the unaligned path.
      for (int64_t x_extra : {int64_t{4}, int64_t{1}}) {
        for (bool acc : {false, true}) {
          Run({.dtype = dt,
               .in = 256,
               .out = 77,
               .rows = rows,
               .x_extra = x_extra,
               .y_extra = 3,
               .accumulate = acc});
        }
      }
    }
  }
}

TEST_F(LinearTest, Fp8PartialEdgeBlocksAndOtherBlockSizes) {
  for (int64_t rows : {1, 4, 8, 31, 64}) {
    Run({.dtype = DType::kF8E4M3, .in = 300, .out = 200, .rows = rows});   // edges
    Run({.dtype = DType::kF8E4M3, .in = 7168, .out = 130, .rows = rows});  // long rows
    Run({.dtype = DType::kF8E4M3, .in = 96, .out = 50, .rows = rows, .block = 32});
    Run({.dtype = DType::kF8E4M3, .in = 100, .out = 50, .rows = rows, .block = 24});
  }
}

TEST_F(LinearTest, StridedBatch) {
  // Per-head projections: x rows hold `batch` heads of `in` values, y rows `batch` heads of
  // `out`; weight b starts b * out * in elements in. The reference runs one product per head.
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t rows : {1, 3, 17, 64}) {
      for (auto [in, out] : {std::pair<int64_t, int64_t>{128, 64}, {33, 17}}) {
        const int64_t batch = 3, xs = batch * in + 4, ys = batch * out + 2;
        SCOPED_TRACE(absl::StrCat("batch ", Name(dt), " rows ", rows, " in ", in));
        std::vector<float> wv = RandomFloats(rng_, batch * out * in);
        MirroredTensor w = Mirror(wv, dt, {batch * out, in});
        std::vector<float> x = RandomFloats(rng_, rows * xs);
        std::vector<float> y = NaNs(rows * ys);
        DeviceBuffer d_x = Upload(x), d_y = Upload(y);
        const size_t esize = DTypeSize(dt);
        for (int64_t b = 0; b < batch; ++b) {
          TensorView hv{dt, {out, in}, w.host.data() + b * out * in * esize};
          ASSERT_OK(cpu().Linear({.x = x.data() + b * in,
                                  .x_stride = xs,
                                  .rows = rows,
                                  .weight = {.weight = hv},
                                  .y = y.data() + b * out,
                                  .y_stride = ys}));
        }
        TensorView dv{dt, {out, in}, w.device.get()};
        ASSERT_OK(gpu().Linear({.x = d_x.f32(),
                                .x_stride = xs,
                                .rows = rows,
                                .weight = {.weight = dv},
                                .y = d_y.f32(),
                                .y_stride = ys,
                                .batch = batch,
                                .x_batch_stride = in,
                                .y_batch_stride = out,
                                .weight_batch_stride = out * in}));
        ExpectClose(d_y.Floats(y.size()), y, LinearBound(dt, rows), "batched Linear");
      }
    }
  }
}

// Transposed weights are a CPU layout (the model keeps [out, in] on this backend): refused by name.
TEST_F(LinearTest, RefusesATransposedWeight) {
  EXPECT_FALSE(gpu().SupportsTransposedLinear());
  std::vector<float> wv = RandomFloats(rng_, 4 * 8);
  MirroredTensor w = Mirror(wv, DType::kBF16, {4, 8});
  DeviceBuffer d_x = Upload(RandomFloats(rng_, 8)), d_y = Upload(NaNs(4));
  const absl::Status st =
      gpu().Linear({.x = d_x.f32(),
                    .rows = 1,
                    .weight = {.weight = TensorView{DType::kBF16, {4, 8}, w.device.get()}},
                    .y = d_y.f32(),
                    .weight_transposed = true});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_NE(st.message().find("transposed"), std::string::npos) << st;
}

TEST_F(LinearTest, DeepSeekShapes) {
  // Decode-sized and prefill-sized rows on real projection shapes (kept small enough for the
  // CPU reference).
  for (int64_t rows : {1, 4, 64}) {
    Run({.dtype = DType::kBF16, .in = 7168, .out = 512, .rows = rows});
    Run({.dtype = DType::kF8E4M3, .in = 7168, .out = 384, .rows = rows});
    Run({.dtype = DType::kF8E4M3, .in = 2048, .out = 7168 / 8, .rows = rows});
  }
  // Weights larger than one 16 MB dequantization tile (several tiles, a partial last one).
  Run({.dtype = DType::kF8E4M3, .in = 7168, .out = 1300, .rows = 40});
  Run({.dtype = DType::kF16, .in = 2048, .out = 4200, .rows = 40, .accumulate = true});
}

// ---- MoeRoute ------------------------------------------------------------------------------

struct RouteCase {
  int64_t experts, n_group, topk_group, top_k;
  MoeScoring scoring;
  MoeGroupScore group_score;
  bool bias, norm;
  float scaling;
};

class MoeRouteTest : public CudaOpsTest {
 protected:
  void Run(const RouteCase& c, int64_t rows, bool ties) {
    std::mt19937& rng = rng_;
    const std::string what =
        absl::StrCat("MoeRoute E ", c.experts, " groups ", c.n_group, "/", c.topk_group, " top_k ",
                     c.top_k, " rows ", rows, " ties ", ties);
    SCOPED_TRACE(what);
    const int64_t ls = c.experts + 3;
    std::vector<float> logits = RandomFloats(rng, rows * ls, 2.0f);
    std::vector<float> bias = RandomFloats(rng, c.experts, 0.1f);
    if (ties) {  // few distinct, well separated values: many exact ties, decided by expert id
      for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
      for (float& v : bias) v = 0.0f;
    }
    DeviceBuffer d_l = Upload(logits), d_b = Upload(bias);
    DeviceBuffer d_ids = Upload(std::vector<int32_t>(rows * c.top_k, -7));
    DeviceBuffer d_w = Poisoned(rows * c.top_k);
    std::vector<int32_t> ids(rows * c.top_k, -7);
    std::vector<float> w = NaNs(rows * c.top_k);
    MoeRouteParams p{.logits_stride = ls,
                     .rows = rows,
                     .num_experts = c.experts,
                     .scoring = c.scoring,
                     .group_score = c.group_score,
                     .n_group = c.n_group,
                     .topk_group = c.topk_group,
                     .top_k = c.top_k,
                     .norm_topk_prob = c.norm,
                     .scaling_factor = c.scaling};
    MoeRouteParams pc = p, pg = p;
    pc.logits = logits.data();
    pc.bias = c.bias ? bias.data() : nullptr;
    pc.expert_ids = ids.data();
    pc.expert_weights = w.data();
    pg.logits = d_l.f32();
    pg.bias = c.bias ? d_b.f32() : nullptr;
    pg.expert_ids = d_ids.i32();
    pg.expert_weights = d_w.f32();
    ASSERT_TRUE(cpu().MoeRoute(pc).ok());
    const absl::Status s = gpu().MoeRoute(pg);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(d_ids.Read<int32_t>(ids.size()), ids);
    ExpectClose(d_w.Floats(w.size()), w, 1e-5, what);
  }
};

TEST_F(MoeRouteTest, MatchesReference) {
  const RouteCase cases[] = {
      // DeepSeek-V3: sigmoid, bias, 8 groups keep 4 by top-2 sums, 8 experts, scaled.
      {256, 8, 4, 8, MoeScoring::kSigmoid, MoeGroupScore::kTop2Sum, true, true, 2.5f},
      // DeepSeek-V2: softmax, max group score, no renormalisation.
      {160, 8, 3, 6, MoeScoring::kSoftmax, MoeGroupScore::kMax, false, false, 16.0f},
      // Small and odd: one group, all experts eligible.
      {7, 1, 1, 3, MoeScoring::kSigmoid, MoeGroupScore::kTop2Sum, true, true, 1.0f},
      {64, 4, 2, 6, MoeScoring::kSoftmax, MoeGroupScore::kTop2Sum, true, true, 1.0f},
      {8, 8, 3, 3, MoeScoring::kSigmoid, MoeGroupScore::kMax, false, true, 1.0f},
      {1, 1, 1, 1, MoeScoring::kSoftmax, MoeGroupScore::kMax, false, true, 1.0f},
  };
  for (const RouteCase& c : cases) {
    for (int64_t rows : {1, 3, 100}) {
      for (bool ties : {false, true}) Run(c, rows, ties);
    }
  }
}

// ---- bad arguments -------------------------------------------------------------------------

TEST_F(CudaOpsTest, BadArgumentsAreInvalidArgument) {
  DeviceBuffer buf = Poisoned(4096);
  DeviceBuffer ids = Upload(std::vector<int32_t>(16, 0));
  float* f = buf.f32();
  std::vector<uint8_t> w8(64 * 64, 0x38);
  DeviceBuffer d_w8 = Upload(w8);
  const TensorView w_bf16{DType::kBF16, {8, 8}, f};
  const TensorView w_i32{DType::kI32, {8, 8}, f};
  const TensorView w_zero{DType::kBF16, {0, 8}, f};
  const TensorView vec_i8{DType::kI8, {8}, f};
  const TensorView vec_f32{DType::kF32, {8}, f};

  // Linear: dtype, zero dims, rows, missing scales, batch with fp8, null pointers, strides.
  EXPECT_INVALID(gpu().Linear({.x = f, .rows = 1, .weight = {.weight = w_i32}, .y = f}));
  EXPECT_INVALID(gpu().Linear({.x = f, .rows = 1, .weight = {.weight = w_zero}, .y = f}));
  EXPECT_INVALID(gpu().Linear({.x = f, .rows = -1, .weight = {.weight = w_bf16}, .y = f}));
  EXPECT_INVALID(gpu().Linear({.x = nullptr, .rows = 2, .weight = {.weight = w_bf16}, .y = f}));
  EXPECT_INVALID(
      gpu().Linear({.x = f, .x_stride = 4, .rows = 2, .weight = {.weight = w_bf16}, .y = f}));
  EXPECT_INVALID(
      gpu().Linear({.x = f, .rows = 1, .weight = {.weight = w_bf16}, .y = f, .batch = 0}));
  const TensorView w_f8{DType::kF8E4M3, {64, 64}, d_w8.get()};
  EXPECT_INVALID(gpu().Linear({.x = f, .rows = 1, .weight = {.weight = w_f8}, .y = f}));
  const TensorView bad_scale{DType::kF32, {2, 2}, f};
  EXPECT_INVALID(gpu().Linear(
      {.x = f, .rows = 1, .weight = {.weight = w_f8, .scale_inv = bad_scale}, .y = f}));
  const TensorView scale{DType::kF32, {1, 1}, f};
  EXPECT_INVALID(gpu().Linear(
      {.x = f, .rows = 1, .weight = {.weight = w_f8, .scale_inv = scale}, .y = f, .batch = 2}));
  EXPECT_INVALID(
      gpu().Linear({.x = f, .rows = 1, .weight = {.weight = w_bf16, .scale_inv = scale}, .y = f}));

  EXPECT_INVALID(gpu().Embedding({.table = w_i32, .ids = ids.i32(), .rows = 1, .out = f}));
  EXPECT_INVALID(gpu().Embedding({.table = w_zero, .ids = ids.i32(), .rows = 1, .out = f}));
  EXPECT_INVALID(gpu().Embedding({.table = w_bf16, .ids = nullptr, .rows = 1, .out = f}));
  EXPECT_INVALID(gpu().RmsNorm({.x = f, .y = f, .rows = 1, .dim = 0, .weight = vec_f32}));
  EXPECT_INVALID(gpu().RmsNorm({.x = f, .y = f, .rows = 1, .dim = 8, .weight = vec_i8}));
  EXPECT_INVALID(gpu().RmsNorm({.x = f, .y = f, .rows = 1, .dim = 7, .weight = vec_f32}));
  EXPECT_INVALID(gpu().Rope({.x = f,
                             .rows = 1,
                             .rope_dim = 3,
                             .positions = ids.i32(),
                             .cos = f,
                             .sin = f,
                             .max_positions = 4}));
  EXPECT_INVALID(gpu().SiluMul({.gate = f, .up = f, .out = f, .rows = 1, .dim = 0}));
  EXPECT_INVALID(gpu().Add({.a = f, .b = f, .out = f, .rows = 1, .dim = 0}));
  EXPECT_INVALID(gpu().Add({.a = f, .b = nullptr, .out = f, .rows = 1, .dim = 4}));
  EXPECT_INVALID(gpu().GatherRows({.x = f, .x_rows = 1, .rows = 1, .dim = 0, .out = f}));
  EXPECT_INVALID(gpu().GatherRows({.x = f, .x_rows = 1, .rows = 2, .dim = 4, .out = f}));
  EXPECT_INVALID(gpu().ScatterAddRows(
      {.x = f, .index = ids.i32(), .rows = 1, .dim = 0, .out = f, .out_rows = 1}));
  EXPECT_INVALID(gpu().ScatterAddRows(
      {.x = f, .index = nullptr, .rows = 1, .dim = 4, .out = f, .out_rows = 1}));
  int32_t* id_out = ids.i32();
  EXPECT_INVALID(gpu().MoeRoute({.logits = f,
                                 .rows = 1,
                                 .num_experts = 10,
                                 .n_group = 3,
                                 .expert_ids = id_out,
                                 .expert_weights = f}));
  EXPECT_INVALID(gpu().MoeRoute({.logits = f,
                                 .rows = 1,
                                 .num_experts = 8,
                                 .n_group = 4,
                                 .topk_group = 1,
                                 .top_k = 3,
                                 .expert_ids = id_out,
                                 .expert_weights = f}));
  EXPECT_INVALID(gpu().MoeRoute({.logits = f, .rows = 1, .num_experts = 0}));
  // Nothing above reached the device with bad arguments.
  ASSERT_OK(gpu().Synchronize());
}

TEST_F(CudaOpsTest, ZeroRowsIsANoOp) {
  const TensorView w{DType::kBF16, {8, 8}, nullptr};
  DeviceBuffer wb = Poisoned(64);
  const TensorView wv{DType::kBF16, {8, 8}, wb.get()};
  ASSERT_OK(gpu().Linear({.rows = 0, .weight = {.weight = wv}}));
  ASSERT_OK(gpu().SiluMul({.rows = 0, .dim = 4}));
  ASSERT_OK(gpu().Add({.rows = 0, .dim = 4}));
  ASSERT_OK(gpu().GatherRows({.rows = 0, .dim = 4}));
  ASSERT_OK(gpu().ScatterAddRows({.rows = 0, .dim = 4}));
  ASSERT_OK(gpu().Synchronize());
  (void)w;
}

}  // namespace
}  // namespace r2

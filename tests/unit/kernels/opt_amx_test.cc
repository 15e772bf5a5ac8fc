// The AMX-BF16 Linear path of the optimized CPU backend (kernels/cpu/opt_amx.h): the activation
// split is exact, the tile block matches float64 sums on odd row counts, output groups and
// strides, and the backend's bf16 Linear with AMX matches the reference wherever the path takes
// the shape (tail outputs and the strided batch included). Skipped where the machine or the build
// has no AMX. Bound: max |opt - ref| / max |ref| < 2e-5, as for every float32 Linear.
#include "kernels/cpu/opt_amx.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/opt_backend.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace r2 {
namespace {

using testing::RandomFloats;
using testing::RelativeError;
using testing::Store;
using testing::StoredTensor;

constexpr double kLinearBound = 2e-5;

float FromBf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

class OptAmxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu::AmxBf16Usable()) GTEST_SKIP() << "no AMX-BF16 on this machine or build";
  }
  std::mt19937 rng_{20261129};
};

TEST(OptAmxSwitchTest, SetAmxAllowedTurnsThePathOffAndBackOn) {
  const bool before = cpu::AmxBf16Usable();
  const bool was = cpu::SetAmxAllowed(false);
  EXPECT_FALSE(cpu::AmxBf16Usable());
  EXPECT_FALSE(cpu::SetAmxAllowed(was));
  EXPECT_EQ(cpu::AmxBf16Usable(), before);
}

TEST(OptAmxSwitchTest, TakesOnlyDecodeRowsAndWholeChunksOfWideInputs) {
  EXPECT_FALSE(cpu::AmxTakes(cpu::kAmxMinRows - 1, 1024, 1024));
  EXPECT_TRUE(cpu::AmxTakes(cpu::kAmxMinRows, 1024, 1024));
  EXPECT_TRUE(cpu::AmxTakes(15, 2816, 1024));
  EXPECT_FALSE(cpu::AmxTakes(cpu::kAmxMaxRows + 1, 1024, 1024));
  EXPECT_FALSE(cpu::AmxTakes(8, 1000, 1024));                 // not whole chunks of 32
  EXPECT_FALSE(cpu::AmxTakes(8, cpu::kAmxMinIn - 32, 1024));  // too narrow
  EXPECT_FALSE(cpu::AmxTakes(8, 1024, cpu::kAmxMinOut - 1));  // too few outputs
}

// The three bf16 parts of every prepared value add up to it exactly (magnitudes over a wide
// range, both signs), in the pairs layout (chunk, part, column pair, row, element of the pair),
// the chunks in the order a weight with `lead` columns before its first 64-byte boundary takes:
// columns [lead, in - 32 + lead), then [0, lead) and [in - 32 + lead, in).
TEST_F(OptAmxTest, PreparedPartsAddUpToEveryActivationExactly) {
  const int64_t rows = 7, in = 96;
  std::vector<float> x(rows * (in + 5));
  std::uniform_real_distribution<float> mantissa(-2.0f, 2.0f);
  std::uniform_int_distribution<int> exponent(-60, 60);
  for (float& v : x) v = std::ldexp(mantissa(rng_), exponent(rng_));
  x[3] = 0.0f;
  for (int64_t lead : {0, 1, 4, 31}) {
    SCOPED_TRACE("lead " + std::to_string(lead));
    std::vector<uint16_t> prepared(cpu::AmxPreparedElems(rows, in));
    cpu::AmxPrepareRows(x.data(), in + 5, rows, in, lead, prepared.data());
    const int64_t main = in - (lead > 0 ? 32 : 0);  // columns of the aligned chunks
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < in; ++i) {  // position in chunk order, of column j
        const int64_t j = i < main ? lead + i : (i - main < lead ? i - main : i);
        double sum = 0;
        for (int part = 0; part < 3; ++part) {
          const int64_t chunk = i / 32, pair = (i % 32) / 2;
          sum += FromBf16(prepared[((chunk * 3 + part) * 16 + pair) * rows * 2 + r * 2 + i % 2]);
        }
        ASSERT_EQ(sum, static_cast<double>(x[r * (in + 5) + j])) << "row " << r << " column " << j;
      }
    }
  }
}

// Preparing disjoint ranges of chunks (as threads do) writes exactly what one call writes, for
// every lead (the edge chunk last) and ranges that split anywhere.
TEST_F(OptAmxTest, PreparingByChunkRangesEqualsOneCall) {
  const int64_t rows = 8, in = 256, chunks = in / 32;
  std::vector<float> x = RandomFloats(rng_, rows * (in + 3), 2.0f);
  for (int64_t lead : {0, 3, 31}) {
    std::vector<uint16_t> whole(cpu::AmxPreparedElems(rows, in), 0);
    cpu::AmxPrepareRows(x.data(), in + 3, rows, in, lead, whole.data());
    for (int64_t split = 1; split < chunks; split += 3) {
      SCOPED_TRACE("lead " + std::to_string(lead) + " split " + std::to_string(split));
      std::vector<uint16_t> parts(whole.size(), 0xffff);
      cpu::AmxPrepareRows(x.data(), in + 3, rows, in, lead, parts.data(), split, chunks);
      cpu::AmxPrepareRows(x.data(), in + 3, rows, in, lead, parts.data(), 0, split);
      ASSERT_EQ(parts, whole);
    }
  }
}

// The block against float64 sums of the bf16 weights times the float32 activations.
TEST_F(OptAmxTest, BlockMatchesFloat64SumsOnOddShapes) {
  struct Case {
    int64_t rows, in, outs;
    bool accumulate;
  };
  // The first weight row `shift` bytes past a 64-byte boundary: 0, and 8, 48, 56 as the small
  // model's tensors, 2 and 62 (lead 31 and 1).
  const int64_t shifts[] = {0, 8, 48, 56, 2, 62, 0};
  int64_t trial = 0;
  for (const Case& c : {Case{5, 256, 16, false}, Case{8, 1024, 48, true}, Case{16, 288, 32, false},
                        Case{11, 2816, 80, true}, Case{15, 512, 144, false}, Case{8, 256, 32, true},
                        Case{6, 320, 16, false}}) {
    const int64_t shift = shifts[trial++];
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " outs " +
                 std::to_string(c.outs) + " shift " + std::to_string(shift));
    const int64_t xs = c.in + 3, ys = c.outs + 7, row_bytes = 2 * c.in + 64;
    std::vector<float> x = RandomFloats(rng_, c.rows * xs);
    const StoredTensor w =
        Store(RandomFloats(rng_, c.outs * c.in, 0.5f), DType::kBF16, {c.outs, c.in});
    // Weight rows row_bytes apart, with NaN bits (never read) around and between them.
    std::vector<uint8_t> buffer(c.outs * row_bytes + 128, 0xff);
    uint8_t* padded =
        buffer.data() + (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) + shift;
    for (int64_t o = 0; o < c.outs; ++o) {
      std::memcpy(padded + o * row_bytes, static_cast<const uint8_t*>(w.view.data) + o * 2 * c.in,
                  2 * c.in);
    }
    const int64_t lead = cpu::AmxLead(padded);
    ASSERT_EQ(lead, (64 - shift) % 64 / 2);
    std::vector<float> y = RandomFloats(rng_, c.rows * ys);
    std::vector<double> want(c.rows * c.outs);
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t o = 0; o < c.outs; ++o) {
        double s = c.accumulate ? y[r * ys + o] : 0.0;
        for (int64_t j = 0; j < c.in; ++j) {
          s += static_cast<double>(x[r * xs + j]) * w.decoded[o * c.in + j];
        }
        want[r * c.outs + o] = s;
      }
    }
    const std::vector<float> y0 = y;
    std::vector<uint16_t> prepared(cpu::AmxPreparedElems(c.rows, c.in));
    cpu::AmxPrepareRows(x.data(), xs, c.rows, c.in, lead, prepared.data());
    cpu::AmxLinearBlock(prepared.data(), c.rows, c.in, lead, padded, row_bytes, c.outs, y.data(),
                        ys, c.accumulate);
    std::vector<float> got(c.rows * c.outs);
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t o = 0; o < c.outs; ++o) got[r * c.outs + o] = y[r * ys + o];
      for (int64_t o = c.outs; o < ys; ++o) ASSERT_EQ(y[r * ys + o], y0[r * ys + o]);
    }
    EXPECT_LT(RelativeError(got, want), kLinearBound);
  }
}

// Through the backend: every row count the path takes, outputs with a tail after the last whole
// group of 16, strided rows, accumulation and a strided batch.
TEST_F(OptAmxTest, BackendLinearMatchesReferenceWithAndWithoutAmx) {
  auto opt = MakeCpuOptimizedBackend(CpuIsa::kAvx512);
  ASSERT_TRUE(opt.ok()) << opt.status();
  std::unique_ptr<Backend> ref = MakeCpuReferenceBackend();
  struct Case {
    int64_t rows, in, out, batch;
    bool strided, accumulate;
  };
  for (const Case& c : {Case{5, 256, 256, 1, false, false}, Case{8, 1024, 1031, 1, true, true},
                        Case{12, 384, 1536, 1, false, false}, Case{15, 1024, 271, 1, true, false},
                        Case{8, 256, 256, 4, false, false}, Case{9, 2816, 1024, 1, false, true}}) {
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " +
                 std::to_string(c.out) + " batch " + std::to_string(c.batch));
    ASSERT_TRUE(cpu::AmxTakes(c.rows, c.in, c.out));
    const int64_t xs = c.strided ? c.in + 3 : 0, ys = c.strided ? c.out + 5 : 0;
    const int64_t x_row = xs ? xs : c.in, y_row = ys ? ys : c.out;
    const int64_t x_batch = c.rows * x_row + 7, y_batch = c.rows * y_row + 2;
    const int64_t w_batch = c.in * c.out + 32;  // 64 bytes: every product at the same lead
    std::vector<float> x = RandomFloats(rng_, c.batch * x_batch);
    const StoredTensor w =
        Store(RandomFloats(rng_, c.batch * w_batch, 0.5f), DType::kBF16, {c.out, c.in});
    const std::vector<float> y0 = RandomFloats(rng_, c.batch * y_batch);
    LinearParams p{.x = x.data(),
                   .x_stride = xs,
                   .rows = c.rows,
                   .weight = {.weight = w.view},
                   .y_stride = ys,
                   .accumulate = c.accumulate,
                   .batch = c.batch,
                   .x_batch_stride = x_batch,
                   .y_batch_stride = y_batch,
                   .weight_batch_stride = w_batch};
    std::vector<float> y_ref = y0;
    p.y = y_ref.data();
    ASSERT_TRUE(ref->Linear(p).ok());
    for (bool amx : {true, false}) {
      SCOPED_TRACE(amx ? "amx" : "register tiles");
      const bool was = cpu::SetAmxAllowed(amx);
      std::vector<float> y = y0;
      p.y = y.data();
      ASSERT_TRUE((*opt)->Linear(p).ok());
      cpu::SetAmxAllowed(was);
      EXPECT_LT(RelativeError(y, y_ref), kLinearBound);
      for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t r = 0; r < c.rows; ++r) {
          for (int64_t o = c.out; o < y_row; ++o) {
            ASSERT_EQ(y[b * y_batch + r * y_row + o], y0[b * y_batch + r * y_row + o]);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace r2

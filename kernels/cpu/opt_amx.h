#pragma once
// Linear on AMX tiles (Intel Advanced Matrix Extensions, AMX-BF16) for bf16 weights and a few
// rows of float32 activations: decode batches of kAmxMinRows-15 rows, where the AVX-512 register
// tiles are bound by their multiply-adds (about 100 GFLOP/s per core, so 8 rows of a 1024-wide
// weight compute as long as a core takes to stream it) and AMX's 16 x 16 x 32 tile products are
// not. Activations stay float32-exact: each x is split into three bf16 parts, x = hi + mid + lo
// (exact for normal floats: 3 x 8 significant bits), every part times a bf16 weight is exact in
// float32, and the tiles accumulate in float32 (as the FMA kernels do, in another order; inputs
// below float32's normal range count as zero, as AMX treats denormals).
//
// Layout: for C = W x^T the weight rows are the A tiles, loaded straight from the weight (16
// output rows x 32 columns per tile); the prepared activations are the B tiles (per 32-column
// chunk and part: 16 column pairs x `rows` tokens x 2 bf16, the pairs layout AMX multiplies).
// A tile row that straddles two cache lines loads about five times slower, and checkpoint tensors
// sit wherever the file put them (the small model's at 8, 48 or 56 bytes past a line), so the
// chunks start at the weight's first 64-byte boundary: `lead` = AmxLead(w) columns before it and
// the 32 - lead after the last whole chunk form one more chunk, gathered per group of outputs
// into an aligned tile (and prepared last in x's layout).
//
//   if (AmxBf16Usable() && AmxTakes(rows, in, out)) {
//     AmxPrepareRows(x, x_stride, rows, in, prepared);   // AmxPreparedElems(rows, in) uint16_t
//     AmxLinearBlock(prepared, rows, in, w, w_row_bytes, outs, y, y_stride, accumulate);
//   }
#include <cstdint>

namespace r2::cpu {

// Row counts the AMX path takes: from kAmxMinRows (below, the register tiles stream the weights
// as fast as memory gives them) to 16.
inline constexpr int64_t kAmxMinRows = 5;
inline constexpr int64_t kAmxMaxRows = 16;
inline constexpr int64_t kAmxChunk = 32;  // columns per tile product (bf16 pairs x 16)
// Fewest input columns: with fewer, the per-group work around the few tile products (config,
// result stores and their transposition into y) costs more than the register tiles (8 rows x 64
// in x 256 out: ~26 against ~80 GFLOP/s; x 256 in x 64 out: ~52 against ~43).
inline constexpr int64_t kAmxMinIn = 256;
// Fewest output features per product: below, the serial preparation of x and the per-group work
// outweigh what the tiles save (the model's router, 64 x 1024, and shared-expert gate/up, 128 x
// 1024, ran slower on the tiles at 8 rows).
inline constexpr int64_t kAmxMinOut = 256;

// Whether this process can run AMX-BF16 tiles: the CPU has AMX-TILE and AMX-BF16, the build has
// the kernel, the OS granted the tile data state (asked once), and neither R2_CPU_AMX=0 in the
// environment nor SetAmxAllowed(false) turned it off.
bool AmxBf16Usable();
// Turns the AMX path off (false) or back on where the machine has it; for tests and benchmarks
// that compare both paths in one process. Returns the previous setting.
bool SetAmxAllowed(bool allowed);

// Whether `rows` x `in` activations against `out` weight rows go to the AMX path (the caller checks
// AmxBf16Usable, that the weights are bf16 at an even address, and that every weight row it
// passes starts at the same offset from a 64-byte boundary: rows of in % 32 == 0 bf16 values do).
inline bool AmxTakes(int64_t rows, int64_t in, int64_t out) {
  return rows >= kAmxMinRows && rows <= kAmxMaxRows && in >= kAmxMinIn && in % kAmxChunk == 0 &&
         out >= kAmxMinOut;
}

// Columns of a bf16 weight row at w before its first 64-byte boundary (w even).
inline int64_t AmxLead(const void* w) {
  return static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(w) % 64) % 64) / 2;
}

// uint16_t elements of prepared activations for `rows` x `in`.
inline int64_t AmxPreparedElems(int64_t rows, int64_t in) { return 3 * rows * in; }

// x (rows x in float32, row stride x_stride; rows <= kAmxMaxRows, in a multiple of kAmxChunk,
// 0 <= lead < kAmxChunk) -> `out` in the B tile layout for weights with that lead: the chunks of
// columns [lead + 32 c, lead + 32 c + 32), then (lead > 0) columns [0, lead) and
// [in - 32 + lead, in). Only where AmxBf16Usable() was ever true (it uses AVX-512). With a chunk
// range, only chunks [chunk_begin, chunk_end) of that order are written (threads preparing
// disjoint ranges of one `out` write disjoint bytes).
void AmxPrepareRows(const float* x, int64_t x_stride, int64_t rows, int64_t in, int64_t lead,
                    uint16_t* out, int64_t chunk_begin = 0, int64_t chunk_end = -1);

// y[r * y_stride + o] (+)= sum_j x[r][j] * w_o[j] for r < rows, o < outs, where weight row o
// (bf16, `in` values) starts at w + o * w_row_bytes (a multiple of 64), lead = AmxLead(w) and
// outs is a multiple of 16. `prepared` is AmxPrepareRows' output for the same rows, in and lead.
// Runs on the calling thread.
void AmxLinearBlock(const uint16_t* prepared, int64_t rows, int64_t in, int64_t lead,
                    const uint8_t* w, int64_t w_row_bytes, int64_t outs, float* y, int64_t y_stride,
                    bool accumulate);

}  // namespace r2::cpu

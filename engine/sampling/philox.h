#pragma once
// Philox4x32-10, the counter-based generator of Salmon et al., "Parallel Random Numbers: As Easy
// as 1, 2, 3" (SC 2011): a keyed bijection of a 128-bit counter, so draw number c of stream k is
// computed directly, with no state to carry, save or replay. The sampler's draws are:
//
//   seeded request, choice i, output token t:  key = seed (low word, high word),
//                                              counter = (t low, t high, i, 0)
//   unseeded request, the engine's draw d:     key = the engine seed,
//                                              counter = (d low, d high, 0, 1)
//
// and a draw becomes a double in [0, 1) as (((uint64)x1 << 32 | x0) >> 11) * 2^-53, with x0, x1
// the first two output words. Because a seeded draw depends only on (seed, i, t), a seeded
// request samples the same tokens whatever else is in the batch, in whatever order, and also
// after preemption and recompute.
#include <array>
#include <cstdint>

namespace r2::sampling {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds of Philox4x32 (the multipliers and Weyl key increments of the paper).
constexpr PhiloxCounter Philox4x32(PhiloxCounter counter, PhiloxKey key) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    const uint64_t product0 = uint64_t{kMul0} * counter[0];
    const uint64_t product1 = uint64_t{kMul1} * counter[2];
    counter = {static_cast<uint32_t>(product1 >> 32) ^ counter[1] ^ key[0],
               static_cast<uint32_t>(product1),
               static_cast<uint32_t>(product0 >> 32) ^ counter[3] ^ key[1],
               static_cast<uint32_t>(product0)};
  }
  return counter;
}

// The documented conversion of a Philox output to a uniform double in [0, 1) (53 random bits).
constexpr double PhiloxToUnitDouble(const PhiloxCounter& out) {
  const uint64_t bits = (uint64_t{out[1]} << 32) | out[0];
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

constexpr PhiloxKey PhiloxKeyFromSeed(uint64_t seed) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
}

// The uniform for output token `step` of choice `choice_index` of a request seeded with `seed`.
constexpr double SeededUniform(int64_t seed, uint32_t choice_index, uint64_t step) {
  const PhiloxCounter counter = {static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                                 choice_index, 0};
  return PhiloxToUnitDouble(Philox4x32(counter, PhiloxKeyFromSeed(static_cast<uint64_t>(seed))));
}

// The uniform for the engine generator's draw number `draw` (unseeded requests).
constexpr double EngineUniform(uint64_t engine_seed, uint64_t draw) {
  const PhiloxCounter counter = {static_cast<uint32_t>(draw), static_cast<uint32_t>(draw >> 32), 0,
                                 1};
  return PhiloxToUnitDouble(Philox4x32(counter, PhiloxKeyFromSeed(engine_seed)));
}

}  // namespace r2::sampling

#pragma once
// The vector arithmetic under the sampler's O(V) passes (ExpNonPositive, BlockSum, Max, ArgMax,
// ...) is kernels/cpu/sampling_simd.h, shared with the SampleRows reference; these are its names
// in the engine.
#include "kernels/cpu/sampling_simd.h"

namespace r2::sampling::simd {

using cpu::sampling_simd::AnyLane;
using cpu::sampling_simd::ArgMax;
using cpu::sampling_simd::BlockSum;
using cpu::sampling_simd::Broadcast;
using cpu::sampling_simd::BroadcastInt;
using cpu::sampling_simd::CountLanes;
using cpu::sampling_simd::ExpNonPositive;
using cpu::sampling_simd::F4;
using cpu::sampling_simd::FirstIndexOf;
using cpu::sampling_simd::I4;
using cpu::sampling_simd::kBlock;
using cpu::sampling_simd::kLanes;
using cpu::sampling_simd::Load;
using cpu::sampling_simd::LoadPartial;
using cpu::sampling_simd::Max;
using cpu::sampling_simd::Store;
using cpu::sampling_simd::SumLanes;
using cpu::sampling_simd::Unfused;

}  // namespace r2::sampling::simd

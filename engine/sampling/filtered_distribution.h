#pragma once
// FilteredDistribution: the probability distribution one token is drawn from, built from a row of
// processed logits (after LogitsProcessor) by temperature, top_k, top_p and min_p, in that order
// (vLLM's), and the draw itself.
//
// The implementation is kernels/cpu/host_sampling.h (its header states the definitions of
// candidates, weights, top_p, min_p and the draw, and the costs); these are its names in the
// engine. The SampleRows reference (kernels/cpu/reference_sampling.cc) runs the same code, so the
// Sampler and the reference give the same tokens bit for bit. Scratch is reused across rows; one
// instance per thread.
#include "kernels/cpu/host_sampling.h"

namespace r2::sampling {

using FilterParams = cpu::FilterParams;
using FilteredDistribution = cpu::FilteredDistribution;

}  // namespace r2::sampling

#include "engine/model/rope_frequencies.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace r2::model {
namespace {

// The rotary dimension whose wavelength fits `rotations` times into the original context.
double CorrectionDim(double rotations, double dim, double base, double original_max) {
  return dim * std::log(original_max / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(base));
}

double GetMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

}  // namespace

std::vector<double> RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t dim = config.qk_rope_head_dim, half = dim / 2;
  const double base = config.rope_theta;
  std::vector<double> freq(half);
  for (int64_t i = 0; i < half; ++i) {
    freq[i] = 1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim));
  }
  if (!config.rope_scaling.has_value()) return freq;
  const RopeScaling& s = *config.rope_scaling;
  const double original = static_cast<double>(s.original_max_position_embeddings);
  const double low = std::max(std::floor(CorrectionDim(s.beta_fast, dim, base, original)), 0.0);
  double high = std::min(std::ceil(CorrectionDim(s.beta_slow, dim, base, original)),
                         static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    freq[i] = freq[i] / s.factor * ramp + freq[i] * (1.0 - ramp);
  }
  return freq;
}

double RopeAttentionFactor(const ModelConfig& config) {
  if (!config.rope_scaling.has_value()) return 1.0;
  const RopeScaling& s = *config.rope_scaling;
  if (s.mscale != 0.0 && s.mscale_all_dim != 0.0) {
    return GetMscale(s.factor, s.mscale) / GetMscale(s.factor, s.mscale_all_dim);
  }
  return GetMscale(s.factor, 1.0);
}

}  // namespace r2::model

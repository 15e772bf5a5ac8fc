// YaRN frequencies and the attention factor against the values worked out in spec 2.3-2.4.
#include "engine/model/rope_frequencies.h"

#include <gtest/gtest.h>

#include <cmath>

namespace r2::model {
namespace {

ModelConfig V3Config() {
  ModelConfig c;  // defaults are DeepSeek-V3's shapes
  c.rope_scaling = RopeScaling{.type = "yarn",
                               .factor = 40,
                               .original_max_position_embeddings = 4096,
                               .beta_fast = 32,
                               .beta_slow = 1,
                               .mscale = 1.0,
                               .mscale_all_dim = 1.0};
  return c;
}

TEST(RopeFrequenciesTest, V3YarnMatchesSpecValues) {
  const std::vector<double> f = RopeInverseFrequencies(V3Config());
  ASSERT_EQ(f.size(), 32u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_NEAR(f[1], 0.749894, 1e-6);
  EXPECT_NEAR(f[31] / 3.3338e-6, 1.0, 1e-4);
  // Below the ramp (i <= low = 10) frequencies are kept; above it (i >= high = 23) divided by 40.
  for (int i = 0; i <= 10; ++i) EXPECT_DOUBLE_EQ(f[i], std::pow(10000.0, -2.0 * i / 64));
  for (int i = 23; i < 32; ++i) {
    EXPECT_NEAR(f[i], std::pow(10000.0, -2.0 * i / 64) / 40, 1e-15);
  }
  EXPECT_DOUBLE_EQ(RopeAttentionFactor(V3Config()), 1.0);
  EXPECT_NEAR(V3Config().softmax_scale(), 0.1352338, 1e-6);
}

TEST(RopeFrequenciesTest, PlainRopeWithoutScaling) {
  ModelConfig c;
  c.qk_rope_head_dim = 16;
  const std::vector<double> f = RopeInverseFrequencies(c);
  ASSERT_EQ(f.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(f[i], std::pow(10000.0, -2.0 * i / 16));
  EXPECT_DOUBLE_EQ(RopeAttentionFactor(c), 1.0);
}

TEST(RopeFrequenciesTest, AttentionFactorFollowsTransformersRule) {
  ModelConfig c = V3Config();
  c.rope_scaling->mscale = 0.707;
  c.rope_scaling->mscale_all_dim = 1.0;
  const double m = [](double s, double k) { return 0.1 * k * std::log(s) + 1; }(40, 0.707);
  EXPECT_NEAR(RopeAttentionFactor(c), m / (0.1 * std::log(40.0) + 1), 1e-12);
  c.rope_scaling->mscale_all_dim = 0.0;  // absent: the generic 0.1 ln(s) + 1
  EXPECT_NEAR(RopeAttentionFactor(c), 0.1 * std::log(40.0) + 1, 1e-12);
}

}  // namespace
}  // namespace r2::model

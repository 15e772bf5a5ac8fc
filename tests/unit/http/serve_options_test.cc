#include "server/http/serve_options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/auth.h"
#include "server/http/cors.h"
#include "server/http/metrics.h"

namespace r2::server::http {
namespace {

TEST(ParseByteSize, Suffixes) {
  EXPECT_EQ(*ParseByteSize("4096", "x"), 4096);
  EXPECT_EQ(*ParseByteSize("4K", "x"), 4096);
  EXPECT_EQ(*ParseByteSize("64m", "x"), 64 << 20);
  EXPECT_EQ(*ParseByteSize("2G", "x"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("1.5GiB", "x"), int64_t{3} << 29);
  for (const char* bad : {"", "G", "-1", "1X", "abc", "1e300G"}) {
    EXPECT_FALSE(ParseByteSize(bad, "x").ok()) << bad;
  }
}

TEST(RepeatedFlagValues, CollectsEveryForm) {
  const char* argv[] = {"serve", "--api-key", "a", "--api_key=b,c", "-api-key=d", "--other", "e"};
  EXPECT_THAT(RepeatedFlagValues(7, const_cast<char**>(argv), "api_key"),
              ::testing::ElementsAre("a", "b,c", "d"));
}

TEST(ApiKeys, ListsFilesAndBearer) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromFlagValues({"a, b", "c"});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(keys->Allows("Bearer b", ""));
  EXPECT_TRUE(keys->Allows("bearer c", ""));
  EXPECT_TRUE(keys->Allows("", "a"));
  EXPECT_FALSE(keys->Allows("Bearer ab", ""));
  EXPECT_FALSE(keys->Allows("b", ""));
  EXPECT_FALSE(keys->Allows("", ""));
  EXPECT_FALSE(ApiKeys::FromFlagValues({"@/nonexistent/keys"}).ok());
  EXPECT_TRUE(ApiKeys().Allows("", ""));  // no keys: open
}

TEST(ApiKeys, DigestCompareIsExact) {
  auto a = cache::Sha256::Hash("x");
  auto b = cache::Sha256::Hash("y");
  EXPECT_TRUE(DigestsEqual(a, a));
  EXPECT_FALSE(DigestsEqual(a, b));
}

TEST(CorsPolicy, AllowList) {
  CorsPolicy off;
  EXPECT_FALSE(off.enabled());
  EXPECT_EQ(off.AllowOrigin("http://a"), "");
  CorsPolicy list("http://a, http://b");
  EXPECT_EQ(list.AllowOrigin("http://b"), "http://b");
  EXPECT_EQ(list.AllowOrigin("http://c"), "");
  EXPECT_EQ(CorsPolicy("*").AllowOrigin("http://c"), "*");
}

TEST(Metrics, RendersVllmNames) {
  ServerMetrics metrics("m\"x");
  metrics.ObserveTimeToFirstToken(0.003);
  metrics.CountHttpRequest("GET", "/health", 200);
  engine::EngineStats stats;
  stats.kv_blocks_total = 10;
  stats.kv_blocks_used = 5;
  stats.requests_finished_stop = 2;
  const std::string text = metrics.Render(&stats, true);
  using ::testing::HasSubstr;
  EXPECT_THAT(text, HasSubstr("vllm:kv_cache_usage_perc{model_name=\"m\\\"x\"} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("vllm:request_success_total{model_name=\"m\\\"x\","
                              "finished_reason=\"stop\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("vllm:time_to_first_token_seconds_count{model_name=\"m\\\"x\"} 1"));
  EXPECT_THAT(text, HasSubstr("le=\"+Inf\"} 1"));
  EXPECT_THAT(text, HasSubstr("r2serve_http_requests_total{model_name=\"m\\\"x\",method=\"GET\","
                              "route=\"/health\",status=\"200\"} 1"));
}

}  // namespace
}  // namespace r2::server::http

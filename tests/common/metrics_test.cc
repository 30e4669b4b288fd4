#include "common/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "tests/testing/process.h"

namespace paft {
namespace {

using ::testing::HasSubstr;

TEST(MetricsServerTest, ServesTheRegistryAndAHealthEndpoint) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& counter =
      prometheus::BuildCounter().Name("paft_test_total").Help("a test").Register(*registry).Add({});
  auto server = MetricsServer::Start("127.0.0.1:0", "test", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  counter.Increment(3);
  auto metrics = testing::HttpGet((*server)->port(), "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_THAT(*metrics, HasSubstr("paft_test_total 3"));
  EXPECT_THAT(*metrics, HasSubstr("paft_build_info{component=\"test\""));
  EXPECT_THAT(*metrics, HasSubstr("# TYPE paft_test_total counter"));
  auto health = testing::HttpGet((*server)->port(), "/healthz");
  ASSERT_TRUE(health.has_value());
  EXPECT_EQ(*health, "ok\n");
  EXPECT_FALSE(testing::HttpGet((*server)->port(), "/nope").has_value());  // 404
}

TEST(MetricsServerTest, BadAddressesAreRefused) {
  auto registry = std::make_shared<prometheus::Registry>();
  EXPECT_EQ(MetricsServer::Start("no-port", "t", registry).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MetricsServer::Start("example.org:80", "t", registry).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = MetricsServer::Start("127.0.0.1:0", "t", registry);
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Start(absl::StrCat("127.0.0.1:", (*first)->port()), "t", registry);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);  // port taken
}

}  // namespace
}  // namespace paft

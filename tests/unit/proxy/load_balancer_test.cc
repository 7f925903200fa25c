#include "proxy/upstream/load_balancer.h"

#include <catch2/catch.hpp>
#include <set>

namespace {
skiff::upstream::Cluster ThreeEndpoints(skiff::v1::LoadBalancer::Policy policy) {
  skiff::upstream::Cluster c;
  c.name = "lb-test";
  c.policy = policy;
  c.state = skiff::upstream::ClusterStateRegistry::Default().Get("lb-test");
  for (int i = 0; i < 3; ++i) {
    skiff::upstream::Endpoint e;
    e.address = "10.0.0." + std::to_string(i + 1);
    e.port = 80;
    e.key = e.address + ":80";
    c.endpoints.push_back(e);
  }
  c.BuildRing();
  return c;
}
}  // namespace

TEST_CASE("load balancer: round robin visits every endpoint - a retry avoids the last one") {
  uint64_t r = 0;
  skiff::upstream::LoadBalancer lb([&r] { return r++; });
  auto c = ThreeEndpoints(skiff::v1::LoadBalancer::ROUND_ROBIN);
  std::set<std::string> seen;
  for (int i = 0; i < 3; ++i) {
    seen.insert(lb.Pick(c, {}, nullptr, 0)->key);
  }
  CHECK(seen.size() == 3);
  const auto* first = lb.Pick(c, {}, nullptr, 0);
  for (int i = 0; i < 5; ++i) {
    CHECK(lb.Pick(c, {}, first, 0) != first);
  }
}

TEST_CASE("load balancer: consistent hashing keeps a key on one endpoint") {
  skiff::upstream::LoadBalancer lb([] { return uint64_t{7}; });
  auto c = ThreeEndpoints(skiff::v1::LoadBalancer::CONSISTENT_HASH);
  const auto* e = lb.Pick(c, "user-42", nullptr, 0);
  for (int i = 0; i < 10; ++i) {
    CHECK(lb.Pick(c, "user-42", nullptr, 0) == e);
  }
  skiff::upstream::Cluster empty;
  CHECK(lb.Pick(empty, "x", nullptr, 0) == nullptr);
}

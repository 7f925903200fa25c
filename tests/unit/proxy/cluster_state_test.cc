#include "proxy/upstream/cluster_state.h"

#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>

#include "proxy/config/config.h"

using skiff::upstream::ClusterState;
using skiff::upstream::EndpointHealth;
using skiff::upstream::IsEjected;
using skiff::upstream::Outcome;
using skiff::upstream::OutcomeOfStatus;
using skiff::upstream::RecordOutcome;

namespace {
skiff::v1::OutlierDetection Config(uint32_t consecutive_5xx, uint32_t consecutive_gateway,
                                   int base_seconds, uint32_t max_percent) {
  skiff::v1::OutlierDetection od;
  od.set_consecutive_5xx_errors(consecutive_5xx);
  od.set_consecutive_gateway_errors(consecutive_gateway);
  od.mutable_base_ejection_time()->set_seconds(base_seconds);
  od.set_max_ejection_percent(max_percent);
  return od;
}
}  // namespace

TEST_CASE("outcomes of statuses") {
  CHECK(OutcomeOfStatus(200) == Outcome::kSuccess);
  CHECK(OutcomeOfStatus(404) == Outcome::kSuccess);
  CHECK(OutcomeOfStatus(500) == Outcome::kFiveXx);
  CHECK(OutcomeOfStatus(502) == Outcome::kGatewayError);
  CHECK(OutcomeOfStatus(503) == Outcome::kGatewayError);
  CHECK(OutcomeOfStatus(504) == Outcome::kGatewayError);
}

TEST_CASE("consecutive 5xx eject for the base time, then the endpoint comes back") {
  ClusterState cluster;
  EndpointHealth ep;
  auto od = Config(3, 0, 30, 100);
  int64_t now = 1'000'000;
  CHECK_FALSE(RecordOutcome(od, &cluster, &ep, 2, Outcome::kFiveXx, now));
  CHECK_FALSE(RecordOutcome(od, &cluster, &ep, 2, Outcome::kGatewayError, now));
  CHECK(RecordOutcome(od, &cluster, &ep, 2, Outcome::kFiveXx, now));
  CHECK(IsEjected(&cluster, &ep, now + 29'999));
  CHECK(cluster.ejections_active == 1);
  CHECK(cluster.outlier_ejections_enforced_total == 1);
  CHECK_FALSE(IsEjected(&cluster, &ep, now + 30'000));
  CHECK(cluster.ejections_active == 0);
  // A second ejection lasts twice as long (base x times ejected).
  now += 40'000;
  for (int i = 0; i < 3; ++i) {
    RecordOutcome(od, &cluster, &ep, 2, Outcome::kFiveXx, now);
  }
  CHECK(IsEjected(&cluster, &ep, now + 59'999));
  CHECK_FALSE(IsEjected(&cluster, &ep, now + 60'000));
}

TEST_CASE("a success resets the consecutive count") {
  ClusterState cluster;
  EndpointHealth ep;
  auto od = Config(2, 0, 10, 100);
  RecordOutcome(od, &cluster, &ep, 1, Outcome::kFiveXx, 0);
  RecordOutcome(od, &cluster, &ep, 1, Outcome::kSuccess, 0);
  CHECK_FALSE(RecordOutcome(od, &cluster, &ep, 1, Outcome::kFiveXx, 0));
  CHECK_FALSE(IsEjected(&cluster, &ep, 1));
}

TEST_CASE("consecutive gateway errors count only 502/503/504 and local failures") {
  ClusterState cluster;
  EndpointHealth ep;
  auto od = Config(0, 2, 10, 100);
  CHECK_FALSE(RecordOutcome(od, &cluster, &ep, 3, Outcome::kGatewayError, 0));
  CHECK_FALSE(RecordOutcome(od, &cluster, &ep, 3, Outcome::kFiveXx, 0));  // breaks the run
  CHECK_FALSE(RecordOutcome(od, &cluster, &ep, 3, Outcome::kGatewayError, 0));
  CHECK(RecordOutcome(od, &cluster, &ep, 3, Outcome::kGatewayError, 0));
}

TEST_CASE("max ejection percent bounds ejections, but one endpoint may always go") {
  ClusterState cluster;
  EndpointHealth a, b, c;
  auto od = Config(1, 0, 10, 10);  // 10% of 3 endpoints rounds to 0: still one
  CHECK(RecordOutcome(od, &cluster, &a, 3, Outcome::kFiveXx, 0));
  CHECK_FALSE(RecordOutcome(od, &cluster, &b, 3, Outcome::kFiveXx, 0));
  CHECK_FALSE(IsEjected(&cluster, &b, 1));
  auto half = Config(1, 0, 10, 67);  // 2 of 3
  ClusterState cluster2;
  EndpointHealth d, e, f;
  CHECK(RecordOutcome(half, &cluster2, &d, 3, Outcome::kFiveXx, 0));
  CHECK(RecordOutcome(half, &cluster2, &e, 3, Outcome::kFiveXx, 0));
  CHECK_FALSE(RecordOutcome(half, &cluster2, &f, 3, Outcome::kFiveXx, 0));
}

TEST_CASE("an endpoint removed while ejected no longer counts toward max ejection percent") {
  // Two configurations of one cluster (as two EDS or DNS updates): 10.0.0.1 is ejected in the
  // first and gone from the second, whose endpoints must still be ejectable (50 % of 2 = 1).
  auto build = [](const char* a, const char* b, bool valid = true) {
    skiff::v1::Snapshot snap;
    std::string json = std::string(valid ? "{" : R"({"routeTables":[{"name":"x"},{"name":"x"}],)") +
                       std::string(R"("clusters":[{"name":"prune-ejected","outlierDetection":
      {"consecutive5xxErrors":1,"maxEjectionPercent":50,"baseEjectionTime":"30s"}}],
      "endpoints":[{"clusterName":"prune-ejected","endpoints":[
        {"address":")") +
                       a + R"(","port":80,"healthy":true},
        {"address":")" +
                       b + R"(","port":80,"healthy":true}]}]})";
    REQUIRE(google::protobuf::util::JsonStringToMessage(json, &snap).ok());
    std::string error;
    auto cfg = skiff::proxy::Config::Build(std::move(snap), {}, 1, &error);
    INFO(error);
    REQUIRE((cfg != nullptr) == valid);
    return cfg;
  };
  auto first = build("10.0.0.1", "10.0.0.2");
  const auto* c1 = first->FindCluster("prune-ejected");
  REQUIRE(c1->endpoints.size() == 2);
  const auto& od = c1->proto->outlier_detection();
  int64_t now = skiff::upstream::SteadyNowMs();
  REQUIRE(c1->endpoints[0].address == "10.0.0.1");
  REQUIRE(
      RecordOutcome(od, c1->state.get(), c1->endpoints[0].health.get(), 2, Outcome::kFiveXx, now));
  CHECK(c1->state->ejections_active == 1);
  auto second = build("10.0.0.2", "10.0.0.3");  // (the first is still alive, as in a drain)
  const auto* c2 = second->FindCluster("prune-ejected");
  CHECK(c2->state->ejections_active == 0);
  CHECK(
      RecordOutcome(od, c2->state.get(), c2->endpoints[0].health.get(), 2, Outcome::kFiveXx, now));
  CHECK(c2->state->ejections_active == 1);
  // The endpoint that stayed keeps its state from one configuration to the next.
  auto third = build("10.0.0.2", "10.0.0.4");
  const auto* c3 = third->FindCluster("prune-ejected");
  CHECK(IsEjected(c3->state.get(), c3->endpoints[0].health.get(), now + 1));
  CHECK(c3->state->ejections_active == 1);
  // A configuration that is refused lets nothing go.
  build("10.0.0.5", "10.0.0.6", /*valid=*/false);
  CHECK(IsEjected(c3->state.get(), c3->endpoints[0].health.get(), now + 1));
  CHECK(c3->state->ejections_active == 1);
}

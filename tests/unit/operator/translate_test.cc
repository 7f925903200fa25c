#include "operator/translate/translate.h"

#include <google/protobuf/arena.h>

#include <catch2/catch.hpp>
#include <string>

using skiff::translate::ClusterName;
using skiff::translate::IntersectHosts;
using skiff::translate::ResolveHost;

TEST_CASE("short hosts resolve in the given namespace") {
  CHECK(ResolveHost("catalog", "shop") == "catalog.shop.svc.cluster.local");
  CHECK(ResolveHost("catalog.other", "shop") == "catalog.other");
  CHECK(ResolveHost("*", "shop") == "*");
}

TEST_CASE("cluster names follow Istio") {
  CHECK(ClusterName(80, "", "a.b.svc.cluster.local") == "outbound|80||a.b.svc.cluster.local");
  CHECK(ClusterName(8080, "v1", "a.b.svc.cluster.local") ==
        "outbound|8080|v1|a.b.svc.cluster.local");
}

TEST_CASE("host intersection with wildcards") {
  CHECK(IntersectHosts("a.example.com", "*") == "a.example.com");
  CHECK(IntersectHosts("*", "*.example.com") == "*.example.com");
  CHECK(IntersectHosts("a.example.com", "*.example.com") == "a.example.com");
  CHECK(IntersectHosts("*.example.com", "a.example.com") == "a.example.com");
  CHECK(IntersectHosts("*.a.example.com", "*.example.com") == "*.a.example.com");
  CHECK(IntersectHosts("*.example.com", "*.a.example.com") == "*.a.example.com");
  CHECK(IntersectHosts("a.example.org", "*.example.com").empty());
  CHECK(IntersectHosts("a.example.com", "b.example.com").empty());
  CHECK(IntersectHosts("example.com", "*.example.com").empty());
}

TEST_CASE("a snapshot arena holds many clusters, in large blocks") {
  google::protobuf::Arena arena(skiff::translate::SnapshotArenaOptions());
  auto* snapshot = google::protobuf::Arena::CreateMessage<skiff::v1::Snapshot>(&arena);
  for (int i = 0; i < 100000; ++i) {
    auto* c = snapshot->add_clusters();
    c->set_name(ClusterName(80, "v1", "svc" + std::to_string(i) + ".bench.svc.cluster.local"));
    c->set_port(80);
  }
  REQUIRE(snapshot->clusters_size() == 100000);
  CHECK(snapshot->clusters(99999).name() == "outbound|80|v1|svc99999.bench.svc.cluster.local");
  CHECK(arena.SpaceAllocated() > (size_t{4} << 20));  // 2 MiB blocks were mapped
}

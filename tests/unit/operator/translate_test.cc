#include "operator/translate/translate.h"

#include <catch2/catch.hpp>

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

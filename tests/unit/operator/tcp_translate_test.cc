// TCP routes on the operator side: VirtualService tcp: routes decoded, a Gateway TCP port
// translated into a listener with the destination of the first tcp: route bound to it
// (weights, match port / gateways / source labels), ports that mix TCP and HTTP servers,
// GRPC servers served as HTTP, and mesh tcp: routes on a captured sidecar's TCP ports.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "operator/api/decode.h"
#include "operator/translate/translate.h"

namespace {

std::vector<skiff::api::Object> Decode(const std::string& yaml) {
  auto d = skiff::api::DecodeDocuments(yaml, "test.yaml");
  REQUIRE(d.errors.empty());
  return std::move(d.objects);
}

const char* kGateway = R"(apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 27017, name: mongo, protocol: MONGO}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {name: tcp-echo, namespace: shop}
spec:
  ports: [{name: tcp, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  ports: [{name: mongo, port: 27017}]
)";

const skiff::v1::Listener* ListenerOn(const skiff::v1::Snapshot& snap, uint32_t port) {
  for (const auto& l : snap.listeners()) {
    if (l.port() == port) {
      return &l;
    }
  }
  return nullptr;
}

skiff::v1::Snapshot Build(const std::string& yaml,
                          skiff::api::Labels labels = {{"istio", "ingressgateway"}}) {
  skiff::translate::Translator t(Decode(yaml));
  skiff::translate::ProxyGroup group;
  group.namespace_ = "istio-system";
  group.labels = std::move(labels);
  return t.Build(group);
}

bool HasCluster(const skiff::v1::Snapshot& snap, const std::string& name) {
  for (const auto& c : snap.clusters()) {
    if (c.name() == name) {
      return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("decode: tcp routes are kept with their matches and weights; no 'not supported'") {
  auto d = skiff::api::DecodeDocuments(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 31400, sourceLabels: {app: a}, sourceNamespace: istio-system}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
)",
                                       "vs.yaml");
  REQUIRE(d.errors.empty());
  REQUIRE(d.objects.size() == 1);
  for (const auto& m : d.objects[0].messages) {
    CHECK(m.text.find("not supported") == std::string::npos);
  }
  const auto& vs = d.objects[0].As<skiff::api::VirtualService>();
  REQUIRE(vs.tcp.size() == 1);
  REQUIRE(vs.tcp[0].match.size() == 1);
  CHECK(vs.tcp[0].match[0].port == 31400);
  CHECK(vs.tcp[0].match[0].source_namespace == "istio-system");
  CHECK(vs.tcp[0].match[0].source_labels.count("app") == 1);
  REQUIRE(vs.tcp[0].route.size() == 2);
  CHECK(vs.tcp[0].route[0].weight == 80);
  CHECK(vs.tcp[0].route[1].destination.subset == "v2");
}

TEST_CASE("translate: a mesh tcp route sends a captured TCP port's connections by weight") {
  const char* yaml = R"(apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: tcp-ledger, port: 5000}, {name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ledger-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.31
  ports: [{name: tcp-ledger, port: 5000}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger]
  tcp:
  - match: [{port: 5000, sourceLabels: {app: other}}]
    route: [{destination: {host: ledger}}]
  - match: [{port: 5000}]
    route:
    - {destination: {host: ledger}, weight: 30}
    - {destination: {host: ledger-v2}, weight: 70}
)";
  auto d = skiff::api::DecodeDocuments(yaml, "vs.yaml");
  REQUIRE(d.errors.empty());
  for (const auto& o : d.objects) {
    for (const auto& m : o.messages) {
      CHECK(m.text.find("not served") == std::string::npos);
    }
  }
  skiff::translate::Translator t(std::move(d.objects));
  skiff::translate::ProxyGroup group;
  group.namespace_ = "shop";
  group.role = "sidecar";
  group.labels = {{"app", "apigateway"}};
  group.capture = true;
  auto snap = t.Build(group);
  REQUIRE(snap.listeners_size() >= 1);
  const auto& l = snap.listeners(0);
  bool tcp_port = false;
  bool http_port = false;
  for (const auto& cs : l.services()) {
    if (cs.address() == "10.96.0.30" && cs.port() == 5000) {
      tcp_port = true;
      CHECK(cs.tcp_cluster() == "outbound|5000||ledger.shop.svc.cluster.local");
      REQUIRE(cs.has_tcp_route());
      CHECK(cs.tcp_route().cluster() == "outbound|5000||ledger-v2.shop.svc.cluster.local");
      REQUIRE(cs.tcp_route().clusters_size() == 2);
      CHECK(cs.tcp_route().clusters(0).weight() == 30);
      CHECK(cs.tcp_route().clusters(1).cluster() ==
            "outbound|5000||ledger-v2.shop.svc.cluster.local");
    }
    if (cs.address() == "10.96.0.30" && cs.port() == 8080) {
      http_port = true;
      CHECK_FALSE(cs.has_tcp_route());  // HTTP: by the routes
    }
    if (cs.address() == "10.96.0.31") {
      CHECK_FALSE(cs.has_tcp_route());  // no VirtualService for ledger-v2
    }
  }
  CHECK(tcp_port);
  CHECK(http_port);
  // The TCP-only VirtualService leaves ledger's HTTP port its default route.
  bool default_route = false;
  for (const auto& rt : snap.route_tables()) {
    for (const auto& vh : rt.virtual_hosts()) {
      if (vh.name() == "ledger.shop.svc.cluster.local:8080") {
        default_route = vh.routes_size() == 1;
      }
    }
  }
  CHECK(default_route);
  CHECK(HasCluster(snap, "outbound|5000||ledger-v2.shop.svc.cluster.local"));
}

TEST_CASE("translate: a TCP server sends connections to the first bound tcp route, by weight") {
  auto snap = Build(std::string(kGateway) + R"(---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: other-port, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 27017}]
    route: [{destination: {host: db}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{port: 31400, sourceLabels: {istio: other}}]
    route: [{destination: {host: db}}]
  - match: [{port: 31400}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
  - route: [{destination: {host: db}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: shop}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
)");
  const auto* l = ListenerOn(snap, 31400);
  REQUIRE(l != nullptr);
  CHECK(l->name() == "0.0.0.0_31400");
  CHECK(l->protocol() == "TCP");
  CHECK(l->route_table().empty());
  REQUIRE(l->has_tcp_route());
  // The match for another proxy group's labels is skipped; the weighted one wins.
  CHECK(l->tcp_route().cluster() == "outbound|9000|v1|tcp-echo.shop.svc.cluster.local");
  REQUIRE(l->tcp_route().clusters_size() == 2);
  CHECK(l->tcp_route().clusters(0).cluster() == "outbound|9000|v1|tcp-echo.shop.svc.cluster.local");
  CHECK(l->tcp_route().clusters(0).weight() == 80);
  CHECK(l->tcp_route().clusters(1).cluster() == "outbound|9000|v2|tcp-echo.shop.svc.cluster.local");
  CHECK(l->tcp_route().clusters(1).weight() == 20);
  CHECK(HasCluster(snap, "outbound|9000|v1|tcp-echo.shop.svc.cluster.local"));
  CHECK(HasCluster(snap, "outbound|9000|v2|tcp-echo.shop.svc.cluster.local"));
  // The MONGO server is TCP too; its route is the other VirtualService's (port 27017).
  const auto* m = ListenerOn(snap, 27017);
  REQUIRE(m != nullptr);
  CHECK(m->protocol() == "TCP");
  CHECK(m->tcp_route().cluster() == "outbound|27017||db.shop.svc.cluster.local");
  CHECK(m->tcp_route().clusters_size() == 0);
  CHECK(snap.route_tables_size() == 0);
}

TEST_CASE("translate: a TCP server without a bound tcp route gets no listener") {
  auto snap = Build(std::string(kGateway) + R"(---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [another-gateway]
  tcp:
  - route: [{destination: {host: tcp-echo}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: subnets, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: tcp-echo}}]
)");
  CHECK(snap.listeners_size() == 0);
}

TEST_CASE("translate: a port's first server decides between TCP and HTTP; status names the rest") {
  const char* yaml = R"(apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
  - port: {number: 9000, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8080, name: grpc, protocol: GRPC}
    hosts: ["*"]
  - port: {number: 8080, name: tcp2, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{destination: {host: web}}]
  tcp:
  - route: [{destination: {host: tcp-echo}}]
)";
  skiff::translate::Translator t(Decode(yaml));
  skiff::translate::ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  auto snap = t.Build(group);
  const auto* tcp = ListenerOn(snap, 9000);
  REQUIRE(tcp != nullptr);
  CHECK(tcp->protocol() == "TCP");
  CHECK(tcp->tcp_route().cluster() == "outbound|9000||tcp-echo.shop.svc.cluster.local");
  // GRPC is served as HTTP (HTTP/2 by its preface): the routes of the http: section.
  const auto* grpc = ListenerOn(snap, 8080);
  REQUIRE(grpc != nullptr);
  CHECK(grpc->protocol() == "HTTP");
  CHECK(grpc->route_table() == "http.8080");
  CHECK_FALSE(grpc->has_tcp_route());
  const skiff::translate::ResourceStatus* gw = nullptr;
  for (const auto& st : t.Statuses()) {
    if (st.kind == skiff::api::Kind::kGateway) {
      gw = &st;
    }
  }
  REQUIRE(gw != nullptr);
  CHECK(gw->conditions[0].reason == "UnsupportedValue");
  const std::string& msg = gw->conditions[0].message;
  CHECK(msg.find("spec.servers[1]: port 9000 is served as TCP (spec.servers[0] comes first); "
                 "an HTTP server cannot share it, and is ignored") != std::string::npos);
  CHECK(msg.find("spec.servers[3]: port 8080 is served as HTTP (spec.servers[2] comes first); "
                 "a TCP server cannot share it, and is ignored") != std::string::npos);
  CHECK(msg.find("spec.servers[0]") == msg.find("spec.servers[0] comes first"));
  CHECK(msg.find("GRPC servers are not served") == std::string::npos);
}

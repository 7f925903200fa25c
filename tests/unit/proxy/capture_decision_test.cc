#include <catch2/catch.hpp>

#include "operator/api/decode.h"
#include "operator/source/file/load.h"
#include "operator/translate/translate.h"
#include "proxy/http/sniff.h"
#include "proxy/server/capture.h"
#include "tests/unit/proxy/fakes.h"

using skiff::proxy::CaptureDecision;
using Kind = skiff::proxy::CaptureDecision::Kind;

namespace {
std::shared_ptr<const skiff::proxy::Config> CaptureConfig(bool registry_only) {
  skiff::v1::Snapshot snap;
  std::string json = R"({"listeners":[
    {"name":"out","address":"0.0.0.0","port":15001,"routeTable":"outbound",
     "capture":"CAPTURE_OUTBOUND","registryOnly":)" +
                     std::string(registry_only ? "true" : "false") + R"(,
     "services":[{"address":"10.96.0.10","port":80,"protocol":"PROTOCOL_HTTP"},
                 {"address":"10.96.0.11","port":5432,"protocol":"PROTOCOL_TCP","tcpCluster":"db"},
                 {"address":"10.96.0.12","port":9000,"tcpCluster":"db"},
                 {"address":"10.96.0.13","port":5000,"protocol":"PROTOCOL_TCP","tcpCluster":"db",
                  "tcpRoute":{"cluster":"db2","clusters":[{"cluster":"db","weight":1},
                                                          {"cluster":"db2","weight":3}]}}]},
    {"name":"in","address":"0.0.0.0","port":15006,"capture":"CAPTURE_INBOUND",
     "inboundPorts":[{"port":8080,"protocol":"PROTOCOL_HTTP","routeTable":"in8080"}]}],
    "routeTables":[{"name":"outbound"},{"name":"in8080"}],
    "clusters":[{"name":"db"},{"name":"db2"}],
    "endpoints":[{"clusterName":"db","endpoints":[{"address":"10.1.0.5","port":5432,"healthy":true}]}]})";
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, &snap).ok());
  std::string error;
  auto cfg = skiff::proxy::Config::Build(std::move(snap), {}, 1, &error);
  INFO(error);
  REQUIRE(cfg != nullptr);
  return cfg;
}
}  // namespace

TEST_CASE("capture decision: outbound by the original destination") {
  auto cfg = CaptureConfig(false);
  const auto& out = cfg->listeners()[0];
  auto http = skiff::proxy::DecideCapture(out, "10.0.0.9", true, "10.96.0.10", 80);
  CHECK(http.kind == Kind::kHttp);
  CHECK(http.http.original_address == "10.96.0.10");
  auto tcp = skiff::proxy::DecideCapture(out, "10.0.0.9", true, "10.96.0.11", 5432);
  CHECK(tcp.kind == Kind::kTcp);
  REQUIRE(tcp.tcp.cluster != nullptr);
  CHECK(tcp.tcp.cluster->name == "db");
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "10.96.0.12", 9000).kind == Kind::kDetect);
  auto other = skiff::proxy::DecideCapture(out, "p", true, "93.184.216.34", 443);
  CHECK(other.kind == Kind::kTcp);
  CHECK(other.passthrough);
  CHECK(other.tcp.address == "93.184.216.34");
  CHECK(other.tcp.port == 443);
  // A client calling the listener itself uses it as its HTTP proxy.
  CHECK(skiff::proxy::DecideCapture(out, "p", false, "", 0).kind == Kind::kHttp);
}

TEST_CASE("capture decision: REGISTRY_ONLY refuses what is not a Service") {
  auto cfg = CaptureConfig(true);
  const auto& out = cfg->listeners()[0];
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "93.184.216.34", 443).kind == Kind::kRefuse);
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "10.96.0.10", 80).kind == Kind::kHttp);
}

TEST_CASE("capture decision: inbound to the app from 127.0.0.6 - undeclared ports pass through") {
  auto cfg = CaptureConfig(false);
  const auto& in = cfg->listeners()[1];
  auto http = skiff::proxy::DecideCapture(in, "10.0.0.9", true, "10.244.0.7", 8080);
  CHECK(http.kind == Kind::kHttp);
  CHECK(http.http.inbound);
  CHECK(http.http.route_table != nullptr);
  auto other = skiff::proxy::DecideCapture(in, "10.0.0.9", true, "10.244.0.7", 9999);
  CHECK(other.kind == Kind::kTcp);
  CHECK(other.tcp.address == "10.244.0.7");
  CHECK(other.tcp.source == "127.0.0.6");
}

// The operator's side of the contract: a captured sidecar's snapshot as the translator
// makes it (tests/golden/sidecar-capture) is accepted by the proxy with every reference
// checked, and its connections are decided as the Services' ports declare.
TEST_CASE("capture decision: the translator's captured sidecar snapshot") {
  auto loaded = skiff::source::LoadPath(std::string(SKIFF_SOURCE_DIR) +
                                        "/tests/golden/sidecar-capture/input.yaml");
  REQUIRE(loaded.errors.empty());
  skiff::translate::Translator translator(std::move(loaded.objects));
  skiff::translate::ProxyGroup group;
  group.role = "sidecar";
  group.namespace_ = "shop";
  group.labels = {{"app", "catalog"}, {"version", "v1"}};
  group.capture = true;
  std::string error;
  auto cfg = skiff::proxy::Config::Build(translator.Build(group), {}, 1, &error,
                                         /*strict_references=*/true);
  INFO(error);
  REQUIRE(cfg != nullptr);
  REQUIRE(cfg->listeners().size() == 2);
  const auto& out = cfg->listeners()[0];
  const auto& in = cfg->listeners()[1];
  REQUIRE(out.port == 15001);
  REQUIRE(in.port == 15006);
  // Outbound: HTTP to a ClusterIP (v4 and v6) by the routes; TCP and detection with the
  // port's cluster; a UDP port is not listed; anything else passes through.
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "10.96.0.10", 80).kind == Kind::kHttp);
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "fd00:10:96::a", 80).kind == Kind::kHttp);
  auto tcp = skiff::proxy::DecideCapture(out, "p", true, "10.96.0.10", 9100);
  CHECK(tcp.kind == Kind::kTcp);
  REQUIRE(tcp.tcp.cluster != nullptr);
  CHECK(tcp.tcp.cluster->name == "outbound|9100||catalog.shop.svc.cluster.local");
  CHECK(tcp.tcp.cluster->endpoints.size() == 2);
  auto grpc = skiff::proxy::DecideCapture(out, "p", true, "10.96.0.11", 7000);
  CHECK(grpc.kind == Kind::kHttp);  // grpc-admin: HTTP/2, routed
  auto unnamed = skiff::proxy::DecideCapture(out, "p", true, "10.96.0.11", 7001);
  CHECK(unnamed.kind == Kind::kDetect);
  CHECK(unnamed.tcp.cluster != nullptr);
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "10.96.0.20", 53).passthrough);
  CHECK(skiff::proxy::DecideCapture(out, "p", true, "10.0.0.9", 8080).passthrough);
  // The route table routes the ClusterIP as a Host.
  CHECK(out.route_table != nullptr);
  // Inbound: the pod's Service ports, HTTP by a route table, TCP to the app from 127.0.0.6.
  auto http_in = skiff::proxy::DecideCapture(in, "10.0.0.1", true, "10.0.0.5", 8080);
  CHECK(http_in.kind == Kind::kHttp);
  CHECK(http_in.http.inbound);
  CHECK(http_in.http.route_table != nullptr);
  // The grpc-admin port's target: HTTP (an h2c app), to an HTTP/2 inbound cluster.
  auto grpc_in = skiff::proxy::DecideCapture(in, "10.0.0.1", true, "10.0.0.5", 9090);
  CHECK(grpc_in.kind == Kind::kHttp);
  CHECK(grpc_in.http.inbound);
  const auto* grpc_cluster = cfg->FindCluster("inbound|9090||");
  REQUIRE(grpc_cluster != nullptr);
  CHECK(grpc_cluster->protocol == skiff::v1::Cluster::HTTP2);
  CHECK(grpc_cluster->original_destination);
  CHECK(skiff::proxy::DecideCapture(in, "10.0.0.1", true, "10.0.0.5", 7001).kind == Kind::kDetect);
  CHECK(skiff::proxy::DecideCapture(in, "10.0.0.1", true, "10.0.0.5", 5000).passthrough);
  const auto* inbound = cfg->FindCluster("inbound|8080||");
  REQUIRE(inbound != nullptr);
  CHECK(inbound->inbound);
  CHECK(inbound->original_destination);
  CHECK(inbound->source_address == "127.0.0.6");
}

TEST_CASE("capture decision: an uncaptured sidecar's snapshot has no capture") {
  auto loaded = skiff::source::LoadPath(std::string(SKIFF_SOURCE_DIR) +
                                        "/tests/golden/sidecar-capture/input.yaml");
  skiff::translate::Translator translator(std::move(loaded.objects));
  skiff::translate::ProxyGroup group;
  group.role = "sidecar";
  group.namespace_ = "shop";
  group.labels = {{"app", "catalog"}, {"version", "v1"}};
  auto snapshot = translator.Build(group);
  REQUIRE(snapshot.listeners_size() == 1);
  CHECK(snapshot.listeners(0).capture() == skiff::v1::CAPTURE_NONE);
  CHECK(snapshot.listeners(0).services_size() == 0);
}

TEST_CASE("protocol detection: HTTP/1 request lines and HTTP/2's preface") {
  using skiff::http::Sniffed;
  using skiff::http::SniffHttp1;
  CHECK(SniffHttp1("GET / HTTP/1.1\r\n") == Sniffed::kHttp1);
  CHECK(SniffHttp1("POS") == Sniffed::kNeedMore);
  CHECK(SniffHttp1("POST ") == Sniffed::kHttp1);
  CHECK(SniffHttp1("\x16\x03\x01") == Sniffed::kOther);  // a TLS ClientHello
  CHECK(SniffHttp1("PRI") == Sniffed::kNeedMore);
  CHECK(SniffHttp1("PRI * HTTP/2.0\r\n") == Sniffed::kNeedMore);
  CHECK(SniffHttp1(std::string_view("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) == Sniffed::kHttp2);
  CHECK(SniffHttp1(std::string_view("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", 28)) ==
        Sniffed::kHttp2);
  CHECK(SniffHttp1("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n") == Sniffed::kHttp1);  // not the preface
  CHECK(SniffHttp1("PRIX / HTTP/1.1\r\n") == Sniffed::kHttp1);               // an extension method
  CHECK(SniffHttp1("PRI /x HTTP/1.1\r\n") == Sniffed::kHttp1);
}

TEST_CASE("capture decision: a mesh tcp route picks a destination by weight") {
  auto cfg = CaptureConfig(false);
  const auto& out = cfg->listeners()[0];
  // Weights 1 and 3: the draw modulo 4 picks db for 0, db2 for 1..3.
  auto name = [&](uint64_t random) {
    auto d = skiff::proxy::DecideCapture(out, "p", true, "10.96.0.13", 5000, random);
    REQUIRE(d.kind == Kind::kTcp);
    REQUIRE(d.tcp.cluster != nullptr);
    return d.tcp.cluster->name;
  };
  CHECK(name(0) == "db");
  CHECK(name(1) == "db2");
  CHECK(name(3) == "db2");
  CHECK(name(4) == "db");
  // Without a route, the Service's own cluster.
  auto plain = skiff::proxy::DecideCapture(out, "p", true, "10.96.0.11", 5432, 1);
  REQUIRE(plain.tcp.cluster != nullptr);
  CHECK(plain.tcp.cluster->name == "db");
}

TEST_CASE("capture decision: a ServiceEntry host without addresses is routed by Host") {
  // Istio's egress tasks: httpbin.org by DNS, no addresses. A captured connection to any
  // address on port 80 is HTTP by Host; a Host nothing serves passes through (allow_any),
  // or gets 502 with REGISTRY_ONLY (block_all); a connection that is not HTTP passes
  // through, or is refused.
  for (bool registry_only : {false, true}) {
    INFO("registry_only " << registry_only);
    auto loaded = skiff::api::DecodeDocuments(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext, namespace: shop}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  location: MESH_EXTERNAL
)",
                                              "se.yaml");
    REQUIRE(loaded.errors.empty());
    skiff::translate::MeshConfig mesh;
    if (registry_only) {
      mesh.outbound_traffic_policy =
          skiff::translate::MeshConfig::OutboundTrafficPolicy::kRegistryOnly;
    }
    skiff::translate::Translator translator(std::move(loaded.objects), mesh);
    skiff::translate::ProxyGroup group;
    group.role = "sidecar";
    group.namespace_ = "shop";
    group.capture = true;
    std::string error;
    auto snap = translator.Build(group);
    for (const auto& c : snap.clusters()) {
      if (c.name() == "PassthroughCluster") {
        CHECK(c.protocol() == skiff::v1::Cluster::USE_DOWNSTREAM);  // h2c passes as h2c
      }
    }
    auto cfg = skiff::proxy::Config::Build(std::move(snap), {}, 1, &error,
                                           /*strict_references=*/false, /*allow_dns_names=*/true);
    INFO(error);
    REQUIRE(cfg != nullptr);
    const auto& out = cfg->listeners()[0];
    REQUIRE(out.port == 15001);
    auto d = skiff::proxy::DecideCapture(out, "p", true, "203.0.113.7", 80);
    CHECK(d.kind == Kind::kDetect);
    CHECK(d.http.host_routed);
    CHECK(d.refuse_tcp == registry_only);
    CHECK(d.tcp.address == "203.0.113.7");
    // Another port is not host routed.
    auto other = skiff::proxy::DecideCapture(out, "p", true, "203.0.113.7", 8443);
    CHECK(other.kind == (registry_only ? Kind::kRefuse : Kind::kTcp));
    // The Host is in the route table; another Host finds the fallback.
    REQUIRE(out.route_table != nullptr);
    CHECK(out.route_table->FindVirtualHost("httpbin.org") != nullptr);
    REQUIRE(out.fallback_route_table != nullptr);
    const auto* fb = out.fallback_route_table->FindVirtualHost("example.com");
    REQUIRE(fb != nullptr);
    REQUIRE(fb->routes.size() == 1);
    if (registry_only) {
      CHECK(fb->routes[0].proto->direct_response().status() == 502);
    } else {
      const auto* pc = cfg->FindCluster("PassthroughCluster");
      REQUIRE(pc != nullptr);
      CHECK(pc->original_destination);
    }
  }
}

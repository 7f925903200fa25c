// ServiceEntry: Istio's validation rules (errors and warnings, with field paths), and the
// translation of a valid one into clusters and endpoints for gateways and sidecars: STATIC
// endpoints with their ports and labels (subsets), DNS names (and DNS hosts) as endpoints for
// the proxy to resolve, workloadSelector Pods, addresses as captured VIPs, a Kubernetes
// Service winning a shared host, and statuses that name what is not served (NONE, wildcards).
#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "operator/api/decode.h"
#include "operator/translate/translate.h"

namespace {

using skiff::api::Message;
using skiff::api::Object;

Object One(const std::string& spec, const std::string& name = "ext") {
  auto d = skiff::api::DecodeDocuments(
      "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name +
          ", namespace: shop}\nspec:\n" + spec,
      "se.yaml");
  REQUIRE(d.errors.empty());
  REQUIRE(d.objects.size() == 1);
  return d.objects[0];
}

std::vector<std::string> Messages(const Object& o, Message::Level level) {
  std::vector<std::string> out;
  for (const auto& m : o.messages) {
    if (m.level == level) {
      out.push_back(m.Format());
    }
  }
  return out;
}
std::vector<std::string> Errors(const Object& o) { return Messages(o, Message::Level::kError); }
std::vector<std::string> Warnings(const Object& o) { return Messages(o, Message::Level::kWarning); }

bool Has(const std::vector<std::string>& texts, const std::string& part) {
  return std::any_of(texts.begin(), texts.end(),
                     [&](const std::string& t) { return t.find(part) != std::string::npos; });
}

std::vector<Object> Decode(const std::string& yaml) {
  auto d = skiff::api::DecodeDocuments(yaml, "test.yaml");
  REQUIRE(d.errors.empty());
  return std::move(d.objects);
}

skiff::v1::Snapshot Gateway(const skiff::translate::Translator& t) {
  skiff::translate::ProxyGroup group;
  group.namespace_ = "istio-system";
  group.labels = {{"istio", "ingressgateway"}};
  return t.Build(group);
}

const skiff::v1::ClusterLoadAssignment* EndpointsOf(const skiff::v1::Snapshot& snap,
                                                    const std::string& cluster) {
  for (const auto& e : snap.endpoints()) {
    if (e.cluster_name() == cluster) {
      return &e;
    }
  }
  return nullptr;
}

const skiff::translate::ResourceStatus* StatusOf(const skiff::translate::Translator& t,
                                                 const std::string& name) {
  for (const auto& s : t.Statuses()) {
    if (s.kind == skiff::api::Kind::kServiceEntry && s.name == name) {
      return &s;
    }
  }
  return nullptr;
}

const char* kGatewayAndRoute = R"(apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: shop}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /v1}}]
    route: [{destination: {host: api.example.com, subset: v1}}]
  - route: [{destination: {host: api.example.com, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: shop}
spec:
  host: api.example.com
  subsets:
  - {name: v1, labels: {version: v1}}
)";

}  // namespace

TEST_CASE("service entry: a valid STATIC entry decodes with Istio's defaults") {
  auto o = One(R"(  hosts: [api.example.com]
  ports:
  - {number: 80, name: http, protocol: http}
  - {number: 9000, name: tcp-data, targetPort: 9001}
  resolution: STATIC
  endpoints:
  - address: 10.1.2.3
    ports: {http: 8080}
    labels: {version: v1}
    weight: 3
)");
  CHECK(Errors(o).empty());
  CHECK(o.kind == skiff::api::Kind::kServiceEntry);
  const auto& se = o.As<skiff::api::ServiceEntry>();
  CHECK(se.location == "MESH_EXTERNAL");
  REQUIRE(se.ports.size() == 2);
  CHECK(se.ports[0].protocol == "HTTP");  // case-insensitive, kept upper case
  CHECK(se.ports[1].protocol.empty());    // unset: detected
  CHECK(se.ports[1].target_port == 9001);
  REQUIRE(se.endpoints.size() == 1);
  CHECK(se.endpoints[0].ports.at("http") == 8080);
  CHECK(se.endpoints[0].weight == 3);
  CHECK(One("  hosts: [a.example.com]\n").As<skiff::api::ServiceEntry>().resolution == "NONE");
}

TEST_CASE("service entry: Istio's errors, each with its field path") {
  CHECK(Has(Errors(One("  ports: [{number: 80, name: http}]\n")),
            "spec.hosts: at least one host is required"));
  CHECK(Has(Errors(One("  hosts: ['*']\n")), "spec.hosts[0]: invalid host \"*\""));
  CHECK(Has(Errors(One("  hosts: [foo*.com]\n")), "spec.hosts[0]: domain name \"foo*.com\""));
  CHECK(Has(Errors(One("  hosts: [1.2.3.4]\n")), "spec.hosts[0]"));  // all-numeric TLD
  CHECK(Errors(One("  hosts: [foo]\n")).empty());  // a short name is accepted as it is
  CHECK(Has(Warnings(One("  hosts: ['*foo.com']\n")), "partial wildcard"));
  CHECK(Has(Errors(One("  hosts: [a.com]\n  addresses: [10.0.0.0/33]\n")),
            "spec.addresses[0]: \"10.0.0.0/33\" is not an IP address or a CIDR"));
  CHECK(Has(Errors(One("  hosts: [a.com]\n  addresses: [300.1.1.1]\n")), "spec.addresses[0]"));
  CHECK(Errors(One("  hosts: [a.com]\n  addresses: [10.0.0.0/8, 2001:db8::/32, 10.1.1.1]\n"))
            .empty());
  CHECK(Has(Errors(One("  hosts: [a.com]\n  addresses: [10.0.0.0/8]\n  resolution: DNS\n")),
            "spec.addresses: CIDR addresses are allowed only with resolution NONE or STATIC"));
  auto ports = Errors(One(R"(  hosts: [a.com]
  ports:
  - {number: 0, name: http}
  - {number: 81, name: HTTP}
  - {number: 82, protocol: HTTP}
  - {number: 83, name: web, protocol: FOO}
  - {number: 83, name: web, targetPort: 70000}
)"));
  CHECK(Has(ports, "spec.ports[0].number: must be a port number between 1 and 65535 (got 0)"));
  CHECK(Has(ports, "spec.ports[1].name: invalid port name \"HTTP\""));
  CHECK(Has(ports, "spec.ports[2].name: required"));
  CHECK(Has(ports, "spec.ports[3].protocol: unsupported protocol \"FOO\""));
  CHECK(Has(ports, "spec.ports[4].number: port 83 is already defined"));
  CHECK(Has(ports, "spec.ports[4].name: port name \"web\" is already defined"));
  CHECK(Has(ports, "spec.ports[4].targetPort: must be a port number between 1 and 65535"));
  CHECK(Has(Errors(One("  hosts: [a.com]\n  resolution: MAGIC\n")),
            "spec.resolution: unsupported resolution type \"MAGIC\""));
  CHECK(Has(Errors(One("  hosts: [a.com]\n  location: MESH_NOWHERE\n")), "spec.location"));
}

TEST_CASE("service entry: what each resolution allows of endpoints") {
  const std::string base = "  hosts: [a.example.com]\n  ports: [{number: 80, name: http}]\n";
  CHECK(Has(Errors(One(base + "  endpoints: [{address: 1.1.1.1}]\n")),
            "spec.endpoints: no endpoints may be given with resolution NONE"));
  CHECK(Has(Warnings(One(base + "  workloadSelector: {labels: {app: vm}}\n")),
            "spec.workloadSelector: should not be set with resolution NONE"));
  auto stat = Errors(One(base + R"(  resolution: STATIC
  endpoints:
  - address: vm.example.com
  - {}
  - address: 1.1.1.1
    ports: {grpc: 9000}
  - address: unix://relative/path
)"));
  CHECK(Has(stat, "spec.endpoints[0].address: \"vm.example.com\" is not an IP address"));
  CHECK(Has(stat, "spec.endpoints[1].address: required"));
  CHECK(Has(stat, "spec.endpoints[2].ports.grpc: port \"grpc\" is not defined in spec.ports"));
  CHECK(Has(stat, "spec.endpoints[3].address: \"unix://relative/path\" is not an absolute path"));
  CHECK(Has(Warnings(One(base + "  resolution: STATIC\n  endpoints: [{network: net2}]\n")),
            "spec.endpoints[0].address: is unset with network \"net2\""));
  CHECK(Errors(One(base + "  resolution: STATIC\n  endpoints: [{address: 'unix:///run/a.sock'}]\n"))
            .empty());
  CHECK(Errors(One(base + "  resolution: STATIC\n")).empty());  // no endpoints (yet)
  CHECK(Has(Errors(One(base + "  resolution: STATIC\n  workloadSelector: {labels: {app: vm}}\n"
                              "  endpoints: [{address: 1.1.1.1}]\n")),
            "spec.endpoints: only one of workloadSelector and endpoints may be set"));
  auto dns = Errors(One(base + "  resolution: DNS\n  endpoints: [{address: 'bad name'}, "
                               "{address: 'unix:///a.sock'}]\n"));
  CHECK(Has(dns, "spec.endpoints[0].address: \"bad name\" is not an IP address or a valid DNS"));
  CHECK(Has(dns, "spec.endpoints[1].address"));
  CHECK(Errors(One(base + "  resolution: DNS\n  endpoints: [{address: db.internal}]\n")).empty());
  CHECK(Has(Errors(One("  hosts: ['*.example.com']\n  resolution: DNS\n")),
            "spec.hosts[0]: must be a DNS name when resolution DNS has no endpoints"));
  CHECK(Errors(One("  hosts: ['*.example.com']\n  resolution: DNS\n"
                   "  endpoints: [{address: 1.2.3.4}]\n"))
            .empty());
  CHECK(Has(Errors(One(base + "  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a.com}, "
                              "{address: b.com}]\n")),
            "resolution DNS_ROUND_ROBIN takes at most one endpoint (got 2)"));
}

TEST_CASE("service entry: DYNAMIC_DNS takes wildcard hosts, HTTP or TLS ports, no addresses") {
  auto ok = One(R"(  hosts: ['*.example.com', '*wiki.org']
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
  resolution: DYNAMIC_DNS
)");
  CHECK(Errors(ok).empty());
  CHECK(Warnings(ok).empty());  // a partial wildcard is no warning with DYNAMIC_DNS
  auto bad = Errors(One(R"(  hosts: ['*.example.com', api.example.com]
  addresses: [10.0.0.1]
  ports: [{number: 5432, name: pg, protocol: TCP}, {number: 81, name: other}]
  resolution: DYNAMIC_DNS
  endpoints: [{address: 1.2.3.4}]
)"));
  CHECK(Has(bad, "spec.hosts[1]: host must be wildcarded for resolution mode DYNAMIC_DNS"));
  CHECK(Has(bad, "spec.addresses: addresses cannot be set for resolution type DYNAMIC_DNS"));
  CHECK(Has(bad, "spec.endpoints: endpoints cannot be set for resolution type DYNAMIC_DNS"));
  CHECK(Has(bad,
            "spec.ports[0].protocol: only HTTP, TLS, GRPC and HTTP2 are supported for "
            "resolution type DYNAMIC_DNS (got TCP)"));
  CHECK(Has(bad,
            "spec.ports[1].protocol: only HTTP, TLS, GRPC and HTTP2 are supported for "
            "resolution type DYNAMIC_DNS (protocol unset)"));
  CHECK(Has(Errors(One("  hosts: ['*.a.com']\n  resolution: MAGIC\n")),
            "spec.resolution: unsupported resolution type \"MAGIC\" (NONE, STATIC, DNS, "
            "DNS_ROUND_ROBIN, DYNAMIC_DNS)"));
  // Valid, but not served: its status says so.
  skiff::translate::Translator t(Decode(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dyn, namespace: shop}
spec:
  hosts: ['*.example.com']
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DYNAMIC_DNS
)"));
  const auto* st = StatusOf(t, "dyn");
  REQUIRE(st != nullptr);
  CHECK(Has(st->warnings, "spec.resolution: DYNAMIC_DNS is not served by skiff yet"));
}

TEST_CASE("service entry: several hosts need HTTP or TLS ports unless resolution is NONE") {
  CHECK(Has(Errors(One("  hosts: [a.com, b.com]\n  ports: [{number: 5432, name: pg, protocol: "
                       "TCP}]\n  resolution: DNS\n")),
            "spec.hosts: more than one host with a non-HTTP, non-TLS port (pg: TCP)"));
  CHECK(Has(Errors(One("  hosts: [a.com, b.com]\n  ports: [{number: 5432, name: pg}]\n"
                       "  resolution: STATIC\n")),
            "(pg: protocol unset)"));
  CHECK(Errors(One("  hosts: [a.com, b.com]\n  ports: [{number: 443, name: tls, protocol: TLS}, "
                   "{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n"))
            .empty());
  CHECK(Errors(One("  hosts: [a.com, b.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n"))
            .empty());
  CHECK(Has(Errors(One("  hosts: [a.com]\n  exportTo: ['*', '.']\n")), "spec.exportTo"));
  CHECK(Has(Errors(One("  hosts: [a.com]\n  exportTo: ['~', shop]\n")),
            "spec.exportTo: \"~\" (no one) cannot be combined"));
  CHECK(Errors(One("  hosts: [a.com]\n  exportTo: ['~']\n")).empty());
}

TEST_CASE("service entry: a gateway routes to STATIC endpoints, by port name and subset") {
  skiff::translate::Translator t(Decode(std::string(kGatewayAndRoute) + R"(---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8000}
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    labels: {version: v1}
  - address: 10.0.0.2
    ports: {http: 9090}
    labels: {version: v2}
)"));
  auto snap = Gateway(t);
  const auto* all = EndpointsOf(snap, "outbound|80||api.example.com");
  REQUIRE(all != nullptr);
  REQUIRE(all->endpoints_size() == 2);
  CHECK(all->endpoints(0).address() == "10.0.0.1");
  CHECK(all->endpoints(0).port() == 8000);  // targetPort
  CHECK(all->endpoints(1).address() == "10.0.0.2");
  CHECK(all->endpoints(1).port() == 9090);  // the endpoint's own port of that name
  CHECK(all->endpoints(0).pod().empty());
  const auto* v1 = EndpointsOf(snap, "outbound|80|v1|api.example.com");
  REQUIRE(v1 != nullptr);
  REQUIRE(v1->endpoints_size() == 1);
  CHECK(v1->endpoints(0).address() == "10.0.0.1");
  for (const auto& c : snap.clusters()) {
    if (c.name() == "outbound|80||api.example.com") {
      CHECK(c.service_name() == "api.example.com");  // Istio's destination_service_name
      CHECK(c.service_namespace() == "shop");
    }
  }
  const auto* st = StatusOf(t, "ext");
  REQUIRE(st != nullptr);
  CHECK(st->Accepted());
  // The VirtualService's destinations resolve (no "does not match any Service").
  for (const auto& s : t.Statuses()) {
    if (s.kind == skiff::api::Kind::kVirtualService) {
      for (const auto& c : s.conditions) {
        if (c.type == "ResolvedRefs") {
          CHECK(c.status == "True");
        }
      }
    }
  }
}

TEST_CASE("service entry: workloadSelector endpoints are the selected Pods of its namespace") {
  skiff::translate::Translator t(Decode(std::string(kGatewayAndRoute) + R"(---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, targetPort: 8080}]
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
---
apiVersion: v1
kind: Pod
metadata: {name: vm-1, namespace: shop, labels: {app: vm, version: v1}}
status: {podIP: 10.2.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: vm-2, namespace: other, labels: {app: vm, version: v1}}
status: {podIP: 10.2.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
status: {podIP: 10.2.0.3, conditions: [{type: Ready, status: "True"}]}
)"));
  auto snap = Gateway(t);
  const auto* v1 = EndpointsOf(snap, "outbound|80|v1|api.example.com");
  REQUIRE(v1 != nullptr);
  REQUIRE(v1->endpoints_size() == 1);
  CHECK(v1->endpoints(0).address() == "10.2.0.1");
  CHECK(v1->endpoints(0).port() == 8080);
  CHECK(v1->endpoints(0).pod() == "shop/vm-1");
}

TEST_CASE("service entry: a Kubernetes Service keeps its host; the older entry wins a host") {
  skiff::translate::Translator t(Decode(std::string(kGatewayAndRoute) + R"(---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: newer, namespace: shop, creationTimestamp: "2026-01-02T00:00:00Z"}
spec:
  hosts: [api.example.com, catalog.shop.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: older, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.1.1.1}]
---
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
)"));
  auto snap = Gateway(t);
  const auto* all = EndpointsOf(snap, "outbound|80||api.example.com");
  REQUIRE(all != nullptr);
  REQUIRE(all->endpoints_size() == 1);
  CHECK(all->endpoints(0).address() == "10.1.1.1");
  const auto* st = StatusOf(t, "newer");
  REQUIRE(st != nullptr);
  CHECK(st->Accepted());
  CHECK(Has(st->warnings, "spec.hosts[0]: ServiceEntry shop/older (older) already has host"));
  CHECK(Has(st->warnings,
            "spec.hosts[1]: the Kubernetes Service shop/catalog already has host "
            "\"catalog.shop.svc.cluster.local\""));
  REQUIRE(StatusOf(t, "older") != nullptr);
  CHECK(StatusOf(t, "older")->warnings.empty());
}

TEST_CASE("service entry: the status names what skiff does not serve") {
  skiff::translate::Translator t(Decode(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: shop}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: DNS
  endpoints: [{address: db1.internal}, {address: 10.0.0.5}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: shop}
spec:
  hosts: ['*.googleapis.com']
  ports: [{number: 443, name: https, protocol: HTTPS}]
  exportTo: [.]
)"));
  const auto* dns = StatusOf(t, "dns");
  REQUIRE(dns != nullptr);
  CHECK(dns->Accepted());
  CHECK(dns->warnings.empty());  // DNS names are endpoints: the proxy resolves them
  const auto* none = StatusOf(t, "none");
  REQUIRE(none != nullptr);
  CHECK(Has(none->warnings, "spec.hosts[0]: wildcard hosts are not served"));
  CHECK(Has(none->warnings, "spec.resolution: NONE"));
  CHECK(Has(none->warnings, "spec.exportTo"));
  bool unsupported = false;
  for (const auto& c : none->conditions) {
    unsupported = unsupported || (c.type == "Accepted" && c.reason == "UnsupportedValue");
  }
  CHECK(unsupported);
  // Both endpoints of the DNS entry are served: the name as it is, for the proxy to resolve.
  skiff::translate::ProxyGroup group;
  group.role = "sidecar";
  group.namespace_ = "shop";
  group.capture = true;
  auto snap = t.Build(group);
  const auto* eps = EndpointsOf(snap, "outbound|5432||db.example.com");
  REQUIRE(eps != nullptr);
  REQUIRE(eps->endpoints_size() == 2);
  CHECK(eps->endpoints(0).address() == "10.0.0.5");
  CHECK(eps->endpoints(1).address() == "db1.internal");
  CHECK(eps->endpoints(1).port() == 5432);
}

TEST_CASE("service entry: a sidecar gets the host's virtual hosts and its addresses as VIPs") {
  skiff::translate::Translator t(Decode(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: shop}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.10/32]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 6379, name: redis, protocol: REDIS}
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
)"));
  skiff::translate::ProxyGroup group;
  group.role = "sidecar";
  group.namespace_ = "shop";
  group.capture = true;
  auto snap = t.Build(group);
  std::vector<std::string> domains;
  for (const auto& vh : snap.route_tables(0).virtual_hosts()) {
    if (vh.name() == "api.example.com:80") {
      domains.assign(vh.domains().begin(), vh.domains().end());
    }
  }
  CHECK(domains == std::vector<std::string>{"api.example.com:80", "api.example.com",
                                            "240.0.0.10:80", "240.0.0.10"});
  bool redis_vip = false;
  for (const auto& l : snap.listeners()) {
    for (const auto& s : l.services()) {
      if (s.address() == "240.0.0.10" && s.port() == 6379) {
        redis_vip = s.tcp_cluster() == "outbound|6379||api.example.com";
      }
    }
  }
  CHECK(redis_vip);
}

TEST_CASE("service entry: NONE hosts pass through, DNS hosts are endpoints; shared VIPs") {
  skiff::translate::Translator t(Decode(R"(apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: shop}
spec:
  hosts: [api.outside.example]
  addresses: [203.0.113.7]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: web, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-only, namespace: shop}
spec:
  hosts: [db.outside.example]
  addresses: [203.0.113.8]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shared, namespace: shop}
spec:
  hosts: [a.partner.example, b.partner.example]
  addresses: [240.0.0.20]
  ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: detected, namespace: shop}
spec:
  hosts: [raw.partner.example]
  addresses: [240.0.0.21]
  ports: [{number: 9000, name: tcp}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.10}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: outside, namespace: shop}
spec:
  hosts: [api.outside.example]
  http:
  - route: [{destination: {host: api.outside.example, port: {number: 80}}}]
)"));
  skiff::translate::ProxyGroup group;
  group.role = "sidecar";
  group.namespace_ = "shop";
  group.capture = true;
  auto snap = t.Build(group);
  std::vector<std::string> captured;
  for (const auto& l : snap.listeners()) {
    for (const auto& s : l.services()) {
      captured.push_back(s.address() + ":" + std::to_string(s.port()) + " " +
                         std::to_string(static_cast<int>(s.protocol())));
    }
  }
  auto has = [&](const std::string& prefix) {
    return std::any_of(captured.begin(), captured.end(),
                       [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
  };
  // NONE: not captured, so the connections pass through as before.
  CHECK_FALSE(has("203.0.113.7:"));
  // DNS without endpoints: the host itself is the endpoint (the proxy resolves it).
  CHECK(has("203.0.113.8:5432 "));
  const auto* dns_eps = EndpointsOf(snap, "outbound|5432||db.outside.example");
  REQUIRE(dns_eps != nullptr);
  REQUIRE(dns_eps->endpoints_size() == 1);
  CHECK(dns_eps->endpoints(0).address() == "db.outside.example");
  CHECK(dns_eps->endpoints(0).port() == 5432);
  // Two hosts on one VIP: HTTP is told apart by Host, TLS is not captured.
  CHECK(has("240.0.0.20:80 "));
  CHECK_FALSE(has("240.0.0.20:443"));
  // A port without a protocol is detected, not read from its name ("tcp").
  CHECK(
      has("240.0.0.21:9000 " + std::to_string(static_cast<int>(skiff::v1::PROTOCOL_UNSPECIFIED))));
  const auto* none = StatusOf(t, "passthrough");
  REQUIRE(none != nullptr);
  CHECK(Has(none->warnings,
            "spec.resolution: NONE is not served by skiff yet: routes to its "
            "hosts have no endpoints, and a captured sidecar's connections"));
  const auto* dns = StatusOf(t, "dns-only");
  REQUIRE(dns != nullptr);
  CHECK(dns->warnings.empty());
  const auto* shared = StatusOf(t, "shared");
  REQUIRE(shared != nullptr);
  CHECK(Has(shared->warnings, "spec.addresses: with several hosts, connections to port 443"));
  // A VirtualService to a NONE host refers to a known host: no "does not match any Service".
  for (const auto& s : t.Statuses()) {
    if (s.kind == skiff::api::Kind::kVirtualService) {
      for (const auto& c : s.conditions) {
        if (c.type == "ResolvedRefs") {
          CHECK(c.status == "True");
        }
      }
    }
  }
}

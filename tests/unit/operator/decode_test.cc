#include "operator/api/decode.h"

#include <catch2/catch.hpp>
#include <chrono>

#include "common/strings.h"

using skiff::api::DecodeDocuments;
using skiff::api::Kind;
using skiff::api::Object;

namespace {
std::vector<std::string> Errors(const Object& o) {
  std::vector<std::string> out;
  for (const auto& m : o.messages) {
    if (m.level == skiff::api::Message::Level::kError) {
      out.push_back(m.Format());
    }
  }
  return out;
}

Object One(const std::string& yaml) {
  auto r = DecodeDocuments(yaml, "test.yaml");
  REQUIRE(r.errors.empty());
  REQUIRE(r.objects.size() == 1);
  return r.objects[0];
}
}  // namespace

TEST_CASE("decodes a VirtualService in every served apiVersion") {
  for (const char* version : {"v1", "v1beta1", "v1alpha3"}) {
    auto o = One(std::string("apiVersion: networking.istio.io/") + version + R"(
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    retries: {attempts: 3, retryOn: 5xx, perTryTimeout: 2s}
)");
    CHECK(o.kind == Kind::kVirtualService);
    CHECK(o.Valid());
    const auto& vs = o.As<skiff::api::VirtualService>();
    REQUIRE(vs.http.size() == 1);
    CHECK(vs.http[0].retries->attempts == 3);
    CHECK(*vs.http[0].retries->per_try_timeout == std::chrono::seconds(2));
    CHECK(o.meta.namespace_ == "shop");
  }
}

TEST_CASE("a bad duration names the resource field path") {
  auto o = One(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    retries: {attempts: 3, perTryTimeout: 2x}
)");
  CHECK(Errors(o) ==
        std::vector<std::string>{"spec.http[0].retries.perTryTimeout: invalid duration \"2x\""});
  CHECK(o.Ref() == "VirtualService default/catalog");
}

TEST_CASE("a route timeout under 1ms is an error, as Istio's ValidateDuration") {
  // Istio refuses `timeout: 0s` (there is no "0 disables" for a route timeout; an unset
  // timeout is already none).
  for (const char* t : {"0s", "0ms"}) {
    auto o = One(std::string(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    timeout: )") +
                 t + "\n");
    CHECK(Errors(o) ==
          std::vector<std::string>{"spec.http[0].timeout: duration must be at least 1ms"});
  }
  auto ok = One(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    timeout: 1ms
)");
  CHECK(ok.Valid());
}

TEST_CASE("Istio fields the CRDs carry: mirror_percent, backendUtilization") {
  auto vs = One(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    mirror: {host: catalog-v2}
    mirror_percent: 30
)");
  CHECK(vs.Valid());
  const auto& route = vs.As<skiff::api::VirtualService>().http.at(0);
  REQUIRE(route.mirrors.size() == 1);
  CHECK(route.mirrors[0].percentage->value == 30);
  REQUIRE(vs.messages.size() == 1);
  CHECK(vs.messages[0].Format() ==
        "spec.http[0].mirror_percent: using deprecated setting \"mirror_percent\", use "
        "\"mirrorPercentage\" instead");

  auto dr = One(R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  trafficPolicy:
    loadBalancer:
      backendUtilization: {weightUpdatePeriod: 1s, errorUtilizationPenaltyPercent: 10}
)");
  CHECK(dr.Valid());
  REQUIRE(dr.messages.size() == 1);
  CHECK(dr.messages[0].Format() ==
        "spec.trafficPolicy.loadBalancer.backendUtilization: utilization-based load balancing is "
        "not supported by skiff yet; round robin is used");
  auto both = One(R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
      backendUtilization: {weightUpdatePeriod: 2x}
)");
  CHECK(Errors(both) ==
        std::vector<std::string>{
            "spec.trafficPolicy.loadBalancer.backendUtilization.weightUpdatePeriod: invalid "
            "duration \"2x\"",
            "spec.trafficPolicy.loadBalancer: only one of simple, consistentHash or "
            "backendUtilization can be set"});
}

TEST_CASE("tls routes for the mesh are warned about, also next to gateway ones") {
  // Istio's egress-gateway task: one VirtualService, bound to mesh and the egress gateway.
  auto warnings = [](const std::string& gateways, const std::string& match_gateways) {
    auto o = One(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-cnn}
spec:
  hosts: [edition.cnn.com]
  gateways: )" + gateways +
                 R"(
  tls:
  - match:
    - sniHosts: [edition.cnn.com]
      port: 443
      gateways: )" +
                 match_gateways + R"(
    route:
    - destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 443}}
)");
    std::vector<std::string> out;
    for (const auto& m : o.messages) {
      if (m.Format().find("for the mesh they are not served") != std::string::npos) {
        out.push_back(m.Format());
      }
    }
    return out.size();
  };
  CHECK(warnings("[istio-egressgateway, mesh]", "[mesh]") == 1);
  CHECK(warnings("[istio-egressgateway, mesh]", "[]") == 1);
  CHECK(warnings("[mesh]", "[]") == 1);
  CHECK(warnings("[istio-egressgateway, mesh]", "[istio-egressgateway]") == 0);
  CHECK(warnings("[istio-egressgateway]", "[]") == 0);
}

TEST_CASE("unknown fields are warnings, not errors") {
  auto o = One(R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  colour: blue
  subsets: [{name: v1, labels: {version: v1}, extra: 1}]
)");
  CHECK(o.Valid());
  REQUIRE(o.messages.size() == 2);
  CHECK(o.messages[0].Format() == "spec.subsets[0].extra: unknown field, ignored");
  CHECK(o.messages[1].Format() == "spec.colour: unknown field, ignored");
}

TEST_CASE("malformed YAML names the document and position, other documents survive") {
  auto r = DecodeDocuments(R"(apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b
spec: [
---
apiVersion: v1
kind: Service
metadata: {name: c}
)",
                           "dir/x.yaml");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].origin == "dir/x.yaml document 2");
  CHECK(r.errors[0].text.rfind("line ", 0) == 0);
  REQUIRE(r.objects.size() == 2);
  CHECK(r.objects[0].meta.name == "a");
  CHECK(r.objects[1].meta.name == "c");
}

TEST_CASE("a document that is not a map, or has no kind, is an error") {
  auto r = DecodeDocuments("- a\n- b\n---\nfoo: bar\n", "x.yaml");
  CHECK(r.errors.size() == 2);
  CHECK(r.objects.empty());
}

TEST_CASE("kinds skiff does not use are ignored and List documents are expanded") {
  auto r = DecodeDocuments(R"(apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: a}}
- {apiVersion: v1, kind: Pod, metadata: {name: p}, status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}}
)",
                           "x.yaml");
  CHECK(r.errors.empty());
  CHECK(r.ignored == 1);
  REQUIRE(r.objects.size() == 2);
  CHECK(r.objects[1].As<skiff::api::Pod>().ready);
  CHECK(r.objects[1].As<skiff::api::Pod>().pod_ip == "10.0.0.1");
}

TEST_CASE("wrong types are errors with the path") {
  auto o = One(R"(apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog}
spec:
  host: catalog
  subsets: [{name: v1, labels: {version: 1}}]
)");
  REQUIRE(Errors(o).size() == 1);
  CHECK(Errors(o)[0].rfind("spec.subsets[0].labels.version: expected a string", 0) == 0);
}

namespace {
// Decodes `text` the YAML way (no JSON fast path), as one document.
Object ViaYaml(const std::string& text) {
  Object o;
  REQUIRE(skiff::api::DecodeObject(skiff::api::YamlToJson(text), "test.json document 1", &o));
  return o;
}
}  // namespace

TEST_CASE("JSON documents decode exactly as the YAML parser would decode them") {
  // Numbers at the edges (beyond int64, floats that are integers, negative zero), unicode
  // escapes, deep unknown fields: the fast path must not differ.
  std::string json = R"({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "catalog", "namespace": "shop", "generation": 18446744073709551615,
                 "labels": {"app": "caf\u00e9"}},
    "spec": {"hosts": ["catalog", "catalog.example.com"],
      "x-extra": [[[[{"deep": [1, 2.5, -0, 1e2, -9223372036854775809, true, null]}]]]],
      "http": [{"route": [{"destination": {"host": "catalog", "port": {"number": 8.0e1}},
                           "weight": 1e2},
                          {"destination": {"host": "catalog", "port": {"number": 81}},
                           "weight": -0}],
                "retries": {"attempts": 9223372036854775807, "retryOn": "5xx"},
                "timeout": "10s"}]}})";
  auto r = DecodeDocuments(json, "test.json");
  REQUIRE(r.errors.empty());
  REQUIRE(r.objects.size() == 1);
  Object yaml = ViaYaml(json);
  CHECK(r.objects[0] == yaml);
  CHECK(r.objects[0].messages == yaml.messages);
  CHECK(!r.objects[0].messages.empty());  // the bad generation and the unknown field
}

TEST_CASE("documents that only look like JSON still decode as YAML, errors included") {
  // YAML flow style starts with '{' too.
  auto o = One("{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: 80}]}}");
  CHECK(o.kind == Kind::kService);
  CHECK(o.Valid());
  // A broken JSON document is reported as the YAML parser reports it.
  std::string broken = R"({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"})";
  auto r = DecodeDocuments(broken, "x.json");
  REQUIRE(r.errors.size() == 1);
  std::string yaml_error;
  try {
    skiff::api::YamlToJson(broken + "\n");  // a document ends with its line's end
  } catch (const std::exception& e) {
    yaml_error = e.what();
  }
  CHECK(!yaml_error.empty());
  CHECK(r.errors[0].text == yaml_error);
}

TEST_CASE("a YAML alias bomb is refused within milliseconds, the other documents load") {
  // Nine levels of ten aliases: 10^9 nodes if expanded.
  std::string bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n";
  bomb += "  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n";
  for (int i = 1; i <= 9; ++i) {
    std::string prev = "*a" + std::to_string(i - 1);
    bomb += "  a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
    for (int k = 0; k < 10; ++k) {
      bomb += (k ? "," : "") + prev;
    }
    bomb += "]\n";
  }
  std::string text = bomb + "---\napiVersion: v1\nkind: Service\nmetadata: {name: ok}\n";
  auto started = std::chrono::steady_clock::now();
  auto r = DecodeDocuments(text, "bomb.yaml");
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].origin == "bomb.yaml document 1");
  CHECK(r.errors[0].text.find("aliases expand to more than") != std::string::npos);
  CHECK(r.errors[0].text.rfind("line ", 0) == 0);
  REQUIRE(r.objects.size() == 1);
  CHECK(r.objects[0].meta.name == "ok");
  // Not a timing assertion on the test machine's speed: expanding the bomb would take
  // minutes and tens of GB; refusing it takes a bounded amount of work.
  CHECK(took < std::chrono::seconds(5));
}

TEST_CASE("aliases within the budget are expanded") {
  auto o = One(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route: &to-catalog
    - destination: {host: catalog}
    match: [{uri: {prefix: /a}}]
  - route: *to-catalog
)");
  CHECK(o.Valid());
  const auto& vs = o.As<skiff::api::VirtualService>();
  REQUIRE(vs.http.size() == 2);
  CHECK(vs.http[1].route.size() == 1);
  CHECK(vs.http[1].route[0].destination.host == "catalog");
}

TEST_CASE("a key twice in one mapping is an error naming the key and both lines") {
  auto r = DecodeDocuments(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog}
spec:
  hosts: [catalog]
  http:
  - route:
    - destination: {host: catalog}
    route:
    - destination: {host: other}
---
apiVersion: v1
kind: Service
metadata: {name: fine}
)",
                           "dup.yaml");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].Format() ==
        "dup.yaml document 1: line 9, column 5: duplicate key \"route\" in a mapping (first at "
        "line 7)");
  REQUIRE(r.objects.size() == 1);
  CHECK(r.objects[0].meta.name == "fine");
  // The same key in different mappings is fine, and so is JSON; a duplicate in JSON is
  // reported the same way (with its line).
  auto j = DecodeDocuments(
      "{\"apiVersion\": \"v1\", \"kind\": \"Service\",\n \"metadata\": {\"name\": \"a\"},\n"
      " \"kind\": \"Service\"}\n",
      "dup.json");
  REQUIRE(j.errors.size() == 1);
  CHECK(j.errors[0].text.find("duplicate key \"kind\"") != std::string::npos);
  CHECK(j.errors[0].text.rfind("line 3,", 0) == 0);
}

TEST_CASE("invalid UTF-8 in a string is an error with the field path") {
  auto r = DecodeDocuments(
      "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: catalog}\n"
      "spec:\n  hosts: [catalog]\n  http:\n  - name: \"caf\xc3\"\n    route:\n"
      "    - destination: {host: catalog}\n      headers: {request: {set: {x-\xff: a}}}\n---\n"
      "apiVersion: v1\nkind: Service\nmetadata: {name: fine}\n",
      "utf8.yaml");
  REQUIRE(r.errors.empty());
  REQUIRE(r.objects.size() == 2);
  const Object& vs = r.objects[0];
  CHECK(!vs.Valid());
  auto errors = Errors(vs);
  REQUIRE(errors.size() >= 2);
  CHECK(errors[0] == "spec.http[0].name: invalid UTF-8 in a string (byte 0xc3 at offset 3)");
  CHECK(errors[1] ==
        "spec.http[0].route[0].headers.request.set.x-\xef\xbf\xbd: invalid UTF-8 in a field name "
        "(byte 0xff at offset 2)");
  // What the object shows is valid UTF-8 (so that status and logs can carry it).
  CHECK(vs.As<skiff::api::VirtualService>().http[0].name == "caf\xef\xbf\xbd");
  for (const auto& m : vs.messages) {
    CHECK(skiff::IsValidUtf8(m.Format()));
  }
  CHECK(r.objects[1].Valid());
}

TEST_CASE("Istio kinds skiff does not serve are warnings - unknown kinds and versions errors") {
  auto r = DecodeDocuments(R"(apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny}
---
apiVersion: networking.istio.io/v1
kind: VirtualSevice
metadata: {name: typo}
---
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: future}
---
apiVersion: v1
kind: Servce
metadata: {name: typo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
)",
                           "kinds.yaml");
  REQUIRE(r.warnings.size() == 2);
  CHECK(r.warnings[0].Format() ==
        "kinds.yaml document 1: Sidecar shop/default: not served by skiff yet; ignored");
  CHECK(r.warnings[1].Format() ==
        "kinds.yaml document 2: AuthorizationPolicy default/deny: not served by skiff yet; "
        "ignored");
  REQUIRE(r.errors.size() == 3);
  CHECK(r.errors[0].Format() ==
        "kinds.yaml document 3: unknown kind \"VirtualSevice\" in networking.istio.io/v1 (did "
        "you mean VirtualService?)");
  CHECK(r.errors[1].Format() ==
        "kinds.yaml document 4: unknown apiVersion \"networking.istio.io/v2\" for kind "
        "\"VirtualService\" (networking.istio.io has networking.istio.io/v1, "
        "networking.istio.io/v1beta1, networking.istio.io/v1alpha3)");
  CHECK(r.errors[2].Format() ==
        "kinds.yaml document 5: unknown kind \"Servce\" in v1 (did you mean Service?)");
  CHECK(r.objects.empty());
  CHECK(r.ignored == 4);
}

TEST_CASE("a direct response body over 1 MiB is an error, over 100 KiB a warning") {
  auto vs = [](size_t size) {
    return One(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: big}\n"
        "spec:\n  hosts: [big.example.com]\n  http:\n  - directResponse:\n"
        "      status: 200\n      body: {string: \"" +
        std::string(size, 'a') + "\"}\n");
  };
  auto at_limit = vs(1024 * 1024);
  CHECK(at_limit.Valid());
  REQUIRE(at_limit.messages.size() == 1);
  CHECK(at_limit.messages[0].level == skiff::api::Message::Level::kWarning);
  CHECK(at_limit.messages[0].path == "spec.http[0].directResponse.body.string");
  auto over = vs(1024 * 1024 + 1);
  CHECK(Errors(over) == std::vector<std::string>{
                            "spec.http[0].directResponse.body.string: a direct response body must "
                            "be at most 1 MiB (it is 1048577 bytes)"});
  CHECK(vs(100 * 1024).messages.empty());
}

TEST_CASE("weights are int32 as Istio's and sum in 64 bits") {
  auto vs = [](const std::string& w1, const std::string& w2) {
    return One(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: w}\n"
        "spec:\n  hosts: [w.example.com]\n  http:\n  - route:\n"
        "    - {destination: {host: a}, weight: " +
        w1 + "}\n    - {destination: {host: b}, weight: " + w2 + "}\n");
  };
  CHECK(vs("2147483647", "2147483647").Valid());  // their sum overflows int32, not int64
  CHECK(Errors(vs("2147483648", "1")) ==
        std::vector<std::string>{
            "spec.http[0].route[0].weight: weight must be at most 2147483647 (got 2147483648)"});
  CHECK(Errors(vs("-1", "1")) ==
        std::vector<std::string>{
            "spec.http[0].route[0].weight: weight must not be negative (got -1)"});
  CHECK(!vs("0", "0").Valid());
}

TEST_CASE("messages escape control characters from the input") {
  auto o =
      One("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: crlf}\n"
          "spec:\n  hosts: [crlf.example.com]\n  http:\n  - rewrite: {uri: \"/a\\r\\nX: 1\"}\n"
          "    route: [{destination: {host: a}}]\n    headers: {request: {set: {\"x\\nb\": v}}}\n");
  auto errors = Errors(o);
  REQUIRE(errors.size() == 2);
  CHECK(errors[0] == "spec.http[0].rewrite.uri: must not contain CR, LF or NUL");
  CHECK(errors[1] == "spec.http[0].headers.request.set.x\\nb: invalid header name \"x\\nb\"");
}

TEST_CASE("tcp match destinationSubnets: an IP or a CIDR with a prefix length in range") {
  auto errors_for = [](const std::string& subnet) {
    return Errors(One(R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{destinationSubnets: [")" +
                      subnet + R"("]}]
    route: [{destination: {host: db}}]
)"));
  };
  for (const char* ok : {"10.0.0.0/8", "10.1.2.3", "2001:db8::/32", "0.0.0.0/0"}) {
    CHECK(errors_for(ok).empty());
  }
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "2001:db8::/129", "10.0.0.0/-1",
                          "10.0.0.0/08", "10.0.0/8", "host/8"}) {
    auto errors = errors_for(bad);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == std::string("spec.tcp[0].match[0].destinationSubnets: \"") + bad +
                           "\" is not an IP or CIDR");
  }
}

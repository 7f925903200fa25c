#include "operator/api/decode.h"

#include <catch2/catch.hpp>

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
  // escapes, a duplicate key, deep unknown fields: the fast path must not differ.
  std::string json = R"({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
    "metadata": {"name": "catalog", "namespace": "shop", "generation": 18446744073709551615,
                 "labels": {"app": "caf\u00e9"}},
    "spec": {"hosts": ["catalog"], "hosts": ["catalog", "catalog.example.com"],
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

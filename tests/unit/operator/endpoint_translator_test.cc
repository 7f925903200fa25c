// EndpointTranslator gives the endpoints Translator::Build gives: for every golden case and
// both roles, and after EndpointSlices and Pods change.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "operator/source/file/load.h"
#include "operator/translate/translate.h"

namespace fs = std::filesystem;

namespace {

using skiff::translate::EndpointTranslator;
using skiff::translate::ProxyGroup;
using skiff::translate::Translator;

std::string Endpoints(
    const google::protobuf::RepeatedPtrField<skiff::v1::ClusterLoadAssignment>& endpoints) {
  skiff::v1::Snapshot s;
  *s.mutable_endpoints() = endpoints;
  return skiff::translate::SnapshotToJson(s);
}

std::vector<ProxyGroup> Groups(const fs::path& dir) {
  ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  if (fs::exists(dir / "group.json")) {
    std::ifstream in(dir / "group.json");
    auto j = nlohmann::json::parse(in);
    group.role = j.value("role", group.role);
    group.namespace_ = j.value("namespace", group.namespace_);
    if (j.contains("labels")) {
      for (const auto& [key, value] : j["labels"].items()) {
        group.labels[key] = value.get<std::string>();
      }
    }
  }
  ProxyGroup other = group;
  other.role = group.role == "sidecar" ? "gateway" : "sidecar";
  return {group, other};
}

}  // namespace

TEST_CASE("endpoint translator: the same endpoints as a full translation, in every golden case") {
  int cases = 0;
  int with_endpoints = 0;
  for (const auto& entry : fs::directory_iterator(SKIFF_GOLDEN_DIR)) {
    if (!entry.is_directory()) {
      continue;
    }
    fs::path dir = entry.path();
    fs::path input = fs::exists(dir / "input") ? dir / "input" : dir / "input.yaml";
    auto loaded = skiff::source::LoadPath(input.string());
    Translator translator(loaded.objects);
    EndpointTranslator endpoints(loaded.objects);
    for (const auto& group : Groups(dir)) {
      INFO(dir.filename().string() << " as " << group.role);
      skiff::v1::Snapshot full = translator.Build(group);
      google::protobuf::RepeatedPtrField<skiff::v1::ClusterLoadAssignment> alone;
      endpoints.Build(full.clusters(), &alone);
      CHECK(Endpoints(alone) == Endpoints(full.endpoints()));
      for (const auto& cla : full.endpoints()) {
        with_endpoints += cla.endpoints_size() > 0 ? 1 : 0;
      }
    }
    ++cases;
  }
  CHECK(cases >= 50);
  CHECK(with_endpoints >= 20);  // the comparison saw real endpoints, not only empty ones
}

TEST_CASE("endpoint translator: new EndpointSlices and Pods for an unchanged translation") {
  auto load = [](const std::string& version_of_pod, int port) {
    std::string yaml = R"(apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - route: [{destination: {host: web, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web, version: )" +
                       version_of_pod + R"(}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: )" +
                       std::to_string(port) +
                       R"(}]
endpoints:
- addresses: [10.0.0.1]
  targetRef: {kind: Pod, name: web-1, namespace: shop}
)";
    return skiff::api::DecodeDocuments(yaml, "test.yaml").objects;
  };
  ProxyGroup sidecar;
  sidecar.role = "sidecar";
  sidecar.namespace_ = "shop";
  Translator before(load("v1", 8080));
  skiff::v1::Snapshot old_snapshot = before.Build(sidecar);
  for (const auto& [version, port] : {std::pair{"v2", 8080}, {"v2", 9090}, {"v1", 9090}}) {
    INFO("pod version " << version << ", port " << port);
    auto objects = load(version, port);
    skiff::v1::Snapshot full = Translator(objects).Build(sidecar);
    google::protobuf::RepeatedPtrField<skiff::v1::ClusterLoadAssignment> alone;
    EndpointTranslator(objects).Build(old_snapshot.clusters(), &alone);
    CHECK(Endpoints(alone) == Endpoints(full.endpoints()));
  }
  // The subset's endpoint appears with the Pod's label, on the slice's port.
  auto objects = load("v2", 9090);
  google::protobuf::RepeatedPtrField<skiff::v1::ClusterLoadAssignment> alone;
  EndpointTranslator(objects).Build(old_snapshot.clusters(), &alone);
  bool found = false;
  for (const auto& cla : alone) {
    if (cla.cluster_name() == "outbound|80|v2|web.shop.svc.cluster.local") {
      found = cla.endpoints_size() == 1 && cla.endpoints(0).port() == 9090;
    }
  }
  CHECK(found);
}

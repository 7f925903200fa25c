// Sidecar injection (operator/inject) and its AdmissionReview (operator/webhook/admission).
#include "operator/inject/inject.h"

#include <catch2/catch.hpp>
#include <string>

#include "common/strings.h"
#include "operator/api/decode.h"
#include "operator/webhook/admission.h"

using nlohmann::json;
using skiff::inject::InjectOptions;
using skiff::inject::InjectPod;
using skiff::inject::InjectResult;

namespace {

json Pod(const std::string& yaml) { return skiff::api::YamlToJson(yaml); }

const char* kPod = R"(apiVersion: v1
kind: Pod
metadata:
  name: catalog-v1-abc
  namespace: coolstore
  labels: {app: catalog, version: v1}
spec:
  initContainers:
  - {name: migrate, image: migrate:1}
  containers:
  - name: catalog
    image: coolstore-catalog:1
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /health, port: http, httpHeaders: [{name: x, value: "1"}]},
                     periodSeconds: 5, timeoutSeconds: 2}
    livenessProbe: {tcpSocket: {port: 8080}}
    startupProbe: {exec: {command: [true]}}
  - name: metrics
    image: exporter:1
    livenessProbe: {httpGet: {path: /, port: 9102, scheme: HTTPS}}
)";

const json* Find(const json& list, const std::string& name) {
  for (const auto& c : list) {
    if (c.value("name", "") == name) {
      return &c;
    }
  }
  return nullptr;
}

std::string Env(const json& container, const std::string& name) {
  for (const auto& e : container["env"]) {
    if (e.value("name", "") == name) {
      return e.contains("value") ? e["value"].get<std::string>()
                                 : e["valueFrom"]["fieldRef"]["fieldPath"].get<std::string>();
    }
  }
  return "<none>";
}

}  // namespace

TEST_CASE("inject: skiff-init first, skiff-proxy last, the pod's identity, annotations") {
  InjectOptions o;
  o.proxy_image = "registry.example/skiff-proxy:1.2";
  o.xds_address = "skiff-operator.skiff-system.svc:15010";
  InjectResult r = InjectPod(Pod(kPod), o);
  REQUIRE(r.outcome == InjectResult::Outcome::kInjected);
  const json& spec = r.pod["spec"];
  REQUIRE(spec["initContainers"].size() == 2);
  const json& init = spec["initContainers"][0];
  CHECK(init["name"] == "skiff-init");
  CHECK(spec["initContainers"][1]["name"] == "migrate");  // after skiff-init: captured too
  CHECK(init["image"] == "registry.example/skiff-proxy:1.2");
  CHECK(init["securityContext"]["runAsUser"] == 0);
  CHECK(init["securityContext"]["capabilities"]["add"] == json({"NET_ADMIN", "NET_RAW"}));
  CHECK(init["args"].dump().find("--annotations-file=/etc/skiff/pod/annotations") !=
        std::string::npos);
  REQUIRE(spec["containers"].size() == 3);
  const json& proxy = spec["containers"][2];
  CHECK(proxy["name"] == "skiff-proxy");
  CHECK(proxy["securityContext"]["runAsUser"] == 1337);
  CHECK(proxy["securityContext"]["runAsGroup"] == 1337);
  std::string args = proxy["args"].dump();
  for (const char* a : {"--xds=skiff-operator.skiff-system.svc:15010", "--role=sidecar",
                        "--interception-mode=REDIRECT"}) {
    CHECK(args.find(a) != std::string::npos);
  }
  CHECK(Env(proxy, "POD_NAME") == "metadata.name");
  CHECK(Env(proxy, "POD_NAMESPACE") == "metadata.namespace");
  CHECK(Env(proxy, "INSTANCE_IP") == "status.podIP");
  CHECK(Env(proxy, "SKIFF_POD_LABELS_FILE") == "/etc/skiff/pod/labels");
  CHECK(proxy["readinessProbe"]["httpGet"]["port"] == 15021);
  CHECK(proxy["readinessProbe"]["httpGet"]["path"] == "/healthz/ready");
  CHECK(proxy["lifecycle"]["preStop"]["sleep"]["seconds"] == 5);
  CHECK(proxy["ports"][0]["containerPort"] == 15090);
  CHECK(proxy["resources"]["requests"]["memory"] == "64Mi");
  const json* volume = Find(spec["volumes"], "skiff-podinfo");
  REQUIRE(volume != nullptr);
  CHECK((*volume)["downwardAPI"]["items"].size() == 2);
  const json& ann = r.pod["metadata"]["annotations"];
  CHECK(ann["prometheus.io/scrape"] == "true");
  CHECK(ann["prometheus.io/port"] == "15090");
  CHECK(ann["prometheus.io/path"] == "/stats/prometheus");
  CHECK(ann["kubectl.kubernetes.io/default-container"] == "catalog");
  CHECK(json::parse(ann["sidecar.istio.io/status"].get<std::string>())["containers"] ==
        json({"skiff-proxy"}));
}

TEST_CASE("inject: HTTP and TCP probes go to the sidecar, which probes the app") {
  InjectResult r = InjectPod(Pod(kPod), InjectOptions{});
  REQUIRE(r.outcome == InjectResult::Outcome::kInjected);
  const json& app = r.pod["spec"]["containers"][0];
  CHECK(app["readinessProbe"]["httpGet"] ==
        json({{"path", "/app-health/catalog/readyz"}, {"port", 15021}, {"scheme", "HTTP"}}));
  CHECK(app["readinessProbe"]["periodSeconds"] == 5);  // the rest of the probe is kept
  CHECK(app["livenessProbe"]["httpGet"]["path"] == "/app-health/catalog/livez");
  CHECK_FALSE(app["livenessProbe"].contains("tcpSocket"));
  CHECK(app["startupProbe"].contains("exec"));  // exec probes are not the network's
  // HTTPS is left alone (it passes through the inbound listener as TCP).
  CHECK(r.pod["spec"]["containers"][1]["livenessProbe"]["httpGet"]["port"] == 9102);
  json probers = json::parse(Env(r.pod["spec"]["containers"][2], "SKIFF_KUBE_APP_PROBERS"));
  CHECK(probers == json::parse(R"({
    "/app-health/catalog/readyz": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP",
                                               "httpHeaders": [{"name": "x", "value": "1"}]},
                                   "timeoutSeconds": 2},
    "/app-health/catalog/livez": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1}})"));

  json pod = Pod(kPod);
  pod["metadata"]["annotations"]["sidecar.istio.io/rewriteAppHTTPProbers"] = "false";
  InjectResult kept = InjectPod(pod, InjectOptions{});
  REQUIRE(kept.outcome == InjectResult::Outcome::kInjected);
  CHECK(kept.pod["spec"]["containers"][0]["readinessProbe"] ==
        pod["spec"]["containers"][0]["readinessProbe"]);
  CHECK(Env(kept.pod["spec"]["containers"][2], "SKIFF_KUBE_APP_PROBERS") == "<none>");
}

TEST_CASE("inject: idempotent - opt-outs - the host's network") {
  InjectResult once = InjectPod(Pod(kPod), InjectOptions{});
  REQUIRE(once.outcome == InjectResult::Outcome::kInjected);
  InjectResult twice = InjectPod(once.pod, InjectOptions{});
  CHECK(twice.outcome == InjectResult::Outcome::kSkipped);
  CHECK(twice.reason == "already injected");
  json pod = Pod(kPod);
  pod["metadata"]["labels"]["sidecar.istio.io/inject"] = "false";
  CHECK(InjectPod(pod, InjectOptions{}).outcome == InjectResult::Outcome::kSkipped);
  pod = Pod(kPod);
  pod["metadata"]["annotations"]["sidecar.istio.io/inject"] = "false";
  CHECK(InjectPod(pod, InjectOptions{}).reason.find("annotation") != std::string::npos);
  pod = Pod(kPod);
  pod["spec"]["hostNetwork"] = true;
  CHECK(InjectPod(pod, InjectOptions{}).outcome == InjectResult::Outcome::kSkipped);
  pod = Pod(kPod);
  pod["spec"]["containers"] = json::array();
  CHECK(InjectPod(pod, InjectOptions{}).outcome == InjectResult::Outcome::kError);
}

TEST_CASE("inject: the pod's own scrape annotations and proxy resources are kept") {
  json pod = Pod(kPod);
  pod["metadata"]["annotations"] = {{"prometheus.io/port", "9102"},
                                    {"sidecar.istio.io/proxyCPU", "200m"},
                                    {"sidecar.istio.io/proxyMemoryLimit", "1Gi"}};
  InjectResult r = InjectPod(pod, InjectOptions{});
  REQUIRE(r.outcome == InjectResult::Outcome::kInjected);
  CHECK(r.pod["metadata"]["annotations"]["prometheus.io/port"] == "9102");
  CHECK_FALSE(r.pod["metadata"]["annotations"].contains("prometheus.io/scrape"));
  const json& res = r.pod["spec"]["containers"][2]["resources"];
  CHECK(res["requests"]["cpu"] == "200m");
  CHECK(res["limits"]["memory"] == "1Gi");
}

TEST_CASE("inject: the pod templates of workloads - other objects unchanged") {
  auto docs = skiff::api::ParseDocuments(R"(apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec: {containers: [{name: job, image: job:1}], restartPolicy: Never}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: [{name: c, image: c}]}}
- {apiVersion: v1, kind: Service, metadata: {name: s}, spec: {ports: [{port: 80}]}}
)",
                                         "test.yaml");
  REQUIRE(docs.errors.empty());
  REQUIRE(docs.documents.size() == 3);
  std::string error;
  json service = docs.documents[2]["items"][1];
  for (auto& d : docs.documents) {
    REQUIRE(skiff::inject::InjectManifest(&d, InjectOptions{}, &error));
  }
  CHECK(docs.documents[0]["spec"]["template"]["spec"]["containers"].size() == 2);
  CHECK(docs.documents[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][1]
                      ["name"] == "skiff-proxy");
  CHECK(docs.documents[2]["items"][0]["spec"]["initContainers"][0]["name"] == "skiff-init");
  CHECK(docs.documents[2]["items"][1] == service);
}

TEST_CASE("inject: the AdmissionReview answer is a JSONPatch that makes the injected pod") {
  json pod = Pod(kPod);
  json review = {{"apiVersion", "admission.k8s.io/v1"},
                 {"kind", "AdmissionReview"},
                 {"request",
                  {{"uid", "u-1"},
                   {"kind", {{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}},
                   {"namespace", "coolstore"},
                   {"operation", "CREATE"},
                   {"object", pod}}}};
  json answer = skiff::webhook::InjectReview(review, InjectOptions{});
  const json& resp = answer["response"];
  CHECK(resp["uid"] == "u-1");
  CHECK(resp["allowed"] == true);
  REQUIRE(resp["patchType"] == "JSONPatch");
  std::string patch;
  REQUIRE(skiff::Base64Decode(resp["patch"].get<std::string>(), &patch));
  CHECK(pod.patch(json::parse(patch)) == InjectPod(pod, InjectOptions{}).pod);

  // An injected pod (skiffctl inject's output) is admitted unchanged.
  review["request"]["object"] = InjectPod(pod, InjectOptions{}).pod;
  CHECK_FALSE(skiff::webhook::InjectReview(review, InjectOptions{})["response"].contains("patch"));
  // Not a created Pod: nothing to do.
  review["request"]["operation"] = "UPDATE";
  CHECK_FALSE(skiff::webhook::InjectReview(review, InjectOptions{})["response"].contains("patch"));
  // A pod that cannot be injected is refused, saying why.
  review["request"]["operation"] = "CREATE";
  review["request"]["object"] = {{"metadata", {{"name", "p"}}},
                                 {"spec", {{"containers", json::array()}}}};
  json refused = skiff::webhook::InjectReview(review, InjectOptions{})["response"];
  CHECK(refused["allowed"] == false);
  CHECK(refused["status"]["message"] ==
        "sidecar injection: Pod coolstore/p: the pod has no containers");
  int status = 0;
  CHECK(json::parse(skiff::webhook::InjectReviewBody("{", InjectOptions{},
                                                     &status))["response"]["allowed"] == false);
  CHECK(status == 400);
}

TEST_CASE("YAML output reads back as the same JSON") {
  json j = {{"strings",
             {"true", "false",     "null", "~",  "15090",      "0x1F",       "1e3",       "-x",
              "*",    "",          "a: b", "#c", "plain-word", "two\nlines", "tab\there", "ünïcode",
              "'q'",  "--xds=a:1", "yes",  "on", "1.5",        ".5",         "@at"}},
            {"numbers", {0, -3, 1337, 2.5}},
            {"bools", {true, false}},
            {"empty", {{"map", json::object()}, {"list", json::array()}}},
            {"null", nullptr},
            {"prometheus.io/port", "15090"},
            {"a key: with colon", 1}};
  std::string yaml = skiff::api::JsonToYaml(j);
  INFO(yaml);
  CHECK(skiff::api::YamlToJson(yaml) == j);
}

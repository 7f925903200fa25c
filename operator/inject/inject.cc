#include "operator/inject/inject.h"

#include <algorithm>
#include <string_view>
#include <vector>

namespace skiff::inject {

namespace {

using nlohmann::json;

constexpr const char* kInitName = "skiff-init";
constexpr const char* kProxyName = "skiff-proxy";
constexpr int kDrainSeconds = 5;
constexpr const char* kPodInfoVolume = "skiff-podinfo";
constexpr const char* kPodInfoDir = "/etc/skiff/pod";
constexpr const char* kInjectKey = "sidecar.istio.io/inject";
constexpr const char* kRewriteProbesKey = "sidecar.istio.io/rewriteAppHTTPProbers";

std::string Text(const json& j, const char* key) {
  if (!j.is_object()) {
    return {};
  }
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// metadata.labels / metadata.annotations[key], "" when absent.
std::string MetaValue(const json& pod, const char* map, const char* key) {
  if (!pod.contains("metadata") || !pod["metadata"].is_object()) {
    return {};
  }
  const json& meta = pod["metadata"];
  return meta.contains(map) ? Text(meta[map], key) : std::string();
}

bool HasContainer(const json& list, std::string_view name) {
  if (!list.is_array()) {
    return false;
  }
  return std::any_of(list.begin(), list.end(),
                     [&](const json& c) { return c.is_object() && Text(c, "name") == name; });
}

// A container port named `name`, or 0.
int64_t NamedPort(const json& container, const std::string& name) {
  if (!container.contains("ports") || !container["ports"].is_array()) {
    return 0;
  }
  for (const auto& p : container["ports"]) {
    if (p.is_object() && Text(p, "name") == name && p.contains("containerPort") &&
        p["containerPort"].is_number_integer()) {
      return p["containerPort"].get<int64_t>();
    }
  }
  return 0;
}

// A probe's port as a number (an int, a numeric string or a container port's name), or 0.
int64_t ProbePort(const json& container, const json& port) {
  if (port.is_number_integer()) {
    return port.get<int64_t>();
  }
  if (!port.is_string()) {
    return 0;
  }
  const std::string& s = port.get_ref<const std::string&>();
  if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos && s.size() <= 5) {
    return std::stoll(s);
  }
  return NamedPort(container, s);
}

// Rewrites the HTTP and TCP probes of `container` to the sidecar, recording the originals
// in `probers` (path on the sidecar -> the original probe), as Istio's probe rewrite.
void RewriteProbes(json* container, json* probers) {
  const std::string name = Text(*container, "name");
  struct Kind {
    const char* field;
    const char* suffix;
  };
  for (const Kind& k : {Kind{"livenessProbe", "livez"}, Kind{"readinessProbe", "readyz"},
                        Kind{"startupProbe", "startupz"}}) {
    if (!container->contains(k.field) || !(*container)[k.field].is_object()) {
      continue;
    }
    json& probe = (*container)[k.field];
    json original;
    if (probe.contains("httpGet") && probe["httpGet"].is_object()) {
      const json& get = probe["httpGet"];
      std::string scheme = Text(get, "scheme");
      if (!Text(get, "host").empty() || (!scheme.empty() && scheme != "HTTP")) {
        continue;  // another host, or HTTPS: left as it is
      }
      int64_t port = get.contains("port") ? ProbePort(*container, get["port"]) : 0;
      if (port <= 0 || port > 65535) {
        continue;
      }
      json http = {
          {"path", get.contains("path") && get["path"].is_string() ? get["path"].get<std::string>()
                                                                   : std::string("/")},
          {"port", port},
          {"scheme", "HTTP"}};
      if (get.contains("httpHeaders") && get["httpHeaders"].is_array()) {
        http["httpHeaders"] = get["httpHeaders"];
      }
      original["httpGet"] = std::move(http);
    } else if (probe.contains("tcpSocket") && probe["tcpSocket"].is_object()) {
      const json& tcp = probe["tcpSocket"];
      int64_t port = tcp.contains("port") ? ProbePort(*container, tcp["port"]) : 0;
      if (!Text(tcp, "host").empty() || port <= 0 || port > 65535) {
        continue;
      }
      original["tcpSocket"] = {{"port", port}};
    } else {
      continue;  // exec and gRPC probes do not go through the sidecar's inbound listener
    }
    // Kubernetes' default when absent (the API server defaults it before the webhook sees
    // the pod: written out, skiffctl inject and the webhook give the same pod).
    original["timeoutSeconds"] =
        probe.contains("timeoutSeconds") && probe["timeoutSeconds"].is_number_integer()
            ? probe["timeoutSeconds"]
            : json(1);
    std::string path = std::string(kAppHealthPrefix) + name + "/" + k.suffix;
    (*probers)[path] = std::move(original);
    probe.erase("tcpSocket");
    probe["httpGet"] = {{"path", path}, {"port", kReadinessPort}, {"scheme", "HTTP"}};
  }
}

json InitContainer(const InjectOptions& o) {
  return {
      {"name", kInitName},
      {"image", o.proxy_image},
      {"imagePullPolicy", o.image_pull_policy},
      {"command", {"/usr/local/bin/skiff-init"}},
      // The traffic.sidecar.istio.io/* annotations (include/exclude ranges and ports) are
      // read by skiff-init itself from the downward-API file.
      {"args",
       {"--proxy-uid=1337", "--proxy-gid=1337", "--outbound-port=15001", "--inbound-port=15006",
        std::string("--annotations-file=") + kPodInfoDir + "/annotations"}},
      {"resources",
       {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}, {"limits", {{"memory", "64Mi"}}}}},
      {"securityContext",
       {{"runAsUser", 0},
        {"runAsGroup", 0},
        {"runAsNonRoot", false},
        {"privileged", false},
        {"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", false},  // iptables takes its lock under /run
        {"capabilities", {{"add", {"NET_ADMIN", "NET_RAW"}}, {"drop", {"ALL"}}}}}},
      {"volumeMounts",
       {{{"name", kPodInfoVolume}, {"mountPath", kPodInfoDir}, {"readOnly", true}}}},
  };
}

json FieldEnv(const char* name, const char* path) {
  return {{"name", name}, {"valueFrom", {{"fieldRef", {{"fieldPath", path}}}}}};
}

json ProxyContainer(const InjectOptions& o, const json& pod, const json& probers) {
  auto annotation = [&](const char* key, const char* fallback) {
    std::string v = MetaValue(pod, "annotations", key);
    return v.empty() ? std::string(fallback) : v;
  };
  json requests = {{"cpu", annotation("sidecar.istio.io/proxyCPU", "50m")},
                   {"memory", annotation("sidecar.istio.io/proxyMemory", "64Mi")}};
  json limits = {{"memory", annotation("sidecar.istio.io/proxyMemoryLimit", "256Mi")}};
  if (std::string cpu = MetaValue(pod, "annotations", "sidecar.istio.io/proxyCPULimit");
      !cpu.empty()) {
    limits["cpu"] = cpu;
  }
  json env = {FieldEnv("POD_NAME", "metadata.name"),
              FieldEnv("POD_NAMESPACE", "metadata.namespace"),
              FieldEnv("INSTANCE_IP", "status.podIP"),
              {{"name", "SKIFF_POD_LABELS_FILE"}, {"value", std::string(kPodInfoDir) + "/labels"}}};
  if (!probers.empty()) {
    env.push_back({{"name", "SKIFF_KUBE_APP_PROBERS"}, {"value", probers.dump()}});
  }
  return {
      {"name", kProxyName},
      {"image", o.proxy_image},
      {"imagePullPolicy", o.image_pull_policy},
      {"args",
       {"--xds=" + o.xds_address, "--role=sidecar", "--interception-mode=REDIRECT",
        "--concurrency=" + std::to_string(o.concurrency), "--stats-port=15090",
        "--readiness-port=" + std::to_string(kReadinessPort)}},
      {"env", std::move(env)},
      {"ports", {{{"name", "http-envoy-prom"}, {"containerPort", 15090}, {"protocol", "TCP"}}}},
      {"readinessProbe",
       {{"httpGet", {{"path", "/healthz/ready"}, {"port", kReadinessPort}}},
        {"periodSeconds", 2},
        {"timeoutSeconds", 3},
        {"failureThreshold", 30}}},
      // A terminating pod's sidecar keeps serving for 5 s (Istio's terminationDrainDuration)
      // before its SIGTERM, which closes its listeners: by then every other proxy has
      // dropped the pod's endpoint, so a rollout loses no request on the way in.
      {"lifecycle", {{"preStop", {{"sleep", {{"seconds", kDrainSeconds}}}}}}},
      {"resources", {{"requests", std::move(requests)}, {"limits", std::move(limits)}}},
      {"securityContext",
       {{"runAsUser", 1337},
        {"runAsGroup", 1337},
        {"runAsNonRoot", true},
        {"privileged", false},
        {"allowPrivilegeEscalation", false},
        {"readOnlyRootFilesystem", true},
        {"capabilities", {{"drop", {"ALL"}}}}}},
      {"volumeMounts",
       {{{"name", kPodInfoVolume}, {"mountPath", kPodInfoDir}, {"readOnly", true}}}},
  };
}

}  // namespace

InjectResult InjectPod(const json& pod, const InjectOptions& options) {
  InjectResult r;
  if (!pod.is_object() || !pod.contains("spec") || !pod["spec"].is_object()) {
    r.outcome = InjectResult::Outcome::kError;
    r.reason = "not a pod: no spec";
    return r;
  }
  const json& spec = pod["spec"];
  if (!spec.contains("containers") || !spec["containers"].is_array() ||
      spec["containers"].empty()) {
    r.outcome = InjectResult::Outcome::kError;
    r.reason = "the pod has no containers";
    return r;
  }
  for (const char* map : {"labels", "annotations"}) {
    if (MetaValue(pod, map, kInjectKey) == "false") {
      r.reason = std::string("opted out (") + kInjectKey + ": \"false\" " +
                 (map == std::string_view("labels") ? "label" : "annotation") + ")";
      return r;
    }
  }
  if (spec.contains("hostNetwork") && spec["hostNetwork"].is_boolean() &&
      spec["hostNetwork"].get<bool>()) {
    r.reason = "the pod uses the host's network";
    return r;
  }
  if (!MetaValue(pod, "annotations", kStatusAnnotation).empty() ||
      HasContainer(spec["containers"], kProxyName) ||
      (spec.contains("initContainers") && HasContainer(spec["initContainers"], kInitName))) {
    r.reason = "already injected";
    return r;
  }

  r.outcome = InjectResult::Outcome::kInjected;
  r.pod = pod;
  json& out = r.pod;
  json& ospec = out["spec"];
  json probers = json::object();
  std::string first_app = Text(ospec["containers"][0], "name");
  if (MetaValue(pod, "annotations", kRewriteProbesKey) != "false") {
    for (auto& c : ospec["containers"]) {
      if (c.is_object()) {
        RewriteProbes(&c, &probers);
      }
    }
  }
  // skiff-init first, so that everything after it (the app's own init containers too) is
  // captured, as with Istio's istio-init.
  json inits = json::array({InitContainer(options)});
  if (ospec.contains("initContainers") && ospec["initContainers"].is_array()) {
    for (auto& c : ospec["initContainers"]) {
      inits.push_back(std::move(c));
    }
  }
  ospec["initContainers"] = std::move(inits);
  ospec["containers"].push_back(ProxyContainer(options, pod, probers));
  if (!ospec.contains("volumes") || !ospec["volumes"].is_array()) {
    ospec["volumes"] = json::array();
  }
  ospec["volumes"].push_back(
      {{"name", kPodInfoVolume},
       {"downwardAPI",
        {{"items",
          {{{"path", "labels"}, {"fieldRef", {{"fieldPath", "metadata.labels"}}}},
           {{"path", "annotations"}, {"fieldRef", {{"fieldPath", "metadata.annotations"}}}}}}}}});

  if (!out.contains("metadata") || !out["metadata"].is_object()) {
    out["metadata"] = json::object();
  }
  json& meta = out["metadata"];
  if (!meta.contains("annotations") || !meta["annotations"].is_object()) {
    meta["annotations"] = json::object();
  }
  json& ann = meta["annotations"];
  // The sidecar's metrics, unless the pod already tells Prometheus where its own are.
  bool own_scrape = std::any_of(ann.items().begin(), ann.items().end(), [](const auto& kv) {
    return kv.key().rfind("prometheus.io/", 0) == 0;
  });
  if (!own_scrape) {
    ann["prometheus.io/scrape"] = "true";
    ann["prometheus.io/port"] = "15090";
    ann["prometheus.io/path"] = "/stats/prometheus";
  }
  if (!ann.contains("kubectl.kubernetes.io/default-container")) {
    ann["kubectl.kubernetes.io/default-container"] = first_app;  // kubectl logs/exec: the app
  }
  ann[kStatusAnnotation] = json({{"initContainers", {kInitName}},
                                 {"containers", {kProxyName}},
                                 {"volumes", {kPodInfoVolume}},
                                 {"imagePullSecrets", nullptr},
                                 {"revision", "default"}})
                               .dump();
  return r;
}

bool InjectManifest(json* doc, const InjectOptions& options, std::string* error) {
  if (!doc->is_object()) {
    return true;
  }
  std::string kind = Text(*doc, "kind");
  if (doc->contains("items") && (*doc)["items"].is_array() &&
      (kind == "List" || (kind.size() > 4 && kind.compare(kind.size() - 4, 4, "List") == 0))) {
    for (auto& item : (*doc)["items"]) {
      if (!InjectManifest(&item, options, error)) {
        return false;
      }
    }
    return true;
  }
  json* pod = nullptr;
  if (kind == "Pod") {
    pod = doc;
  } else if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
             kind == "ReplicaSet" || kind == "ReplicationController" || kind == "Job") {
    if (doc->contains("spec") && (*doc)["spec"].contains("template")) {
      pod = &(*doc)["spec"]["template"];
    }
  } else if (kind == "CronJob") {
    json* spec = doc->contains("spec") ? &(*doc)["spec"] : nullptr;
    if (spec != nullptr && spec->contains("jobTemplate") &&
        (*spec)["jobTemplate"].contains("spec") &&
        (*spec)["jobTemplate"]["spec"].contains("template")) {
      pod = &(*spec)["jobTemplate"]["spec"]["template"];
    }
  }
  if (pod == nullptr) {
    return true;  // not a workload: unchanged
  }
  InjectResult r = InjectPod(*pod, options);
  if (r.outcome == InjectResult::Outcome::kError) {
    std::string name = doc->contains("metadata") ? Text((*doc)["metadata"], "name") : "";
    *error = kind + " " + name + ": " + r.reason;
    return false;
  }
  if (r.outcome == InjectResult::Outcome::kInjected) {
    *pod = std::move(r.pod);
  }
  return true;
}

}  // namespace skiff::inject

#pragma once
// Sidecar injection, as istiod's injector (and istioctl kube-inject): a Pod (or a
// workload's pod template) gets
// - the skiff-init init container (first, NET_ADMIN and NET_RAW, as root), whose flags
//   come from the pod's traffic.sidecar.istio.io/* annotations, so the pod's TCP traffic
//   goes through the sidecar;
// - the skiff-proxy container (uid/gid 1337, --role sidecar --interception-mode REDIRECT,
//   xDS from the operator, readiness on 15021, stats on 15090, resources, the downward API's
//   POD_NAME / POD_NAMESPACE / INSTANCE_IP and a labels file volume);
// - Prometheus scrape annotations (port 15090, /stats/prometheus) unless the pod has its own;
// - its HTTP and TCP liveness/readiness/startup probes rewritten to the sidecar's
//   /app-health/<container>/livez|readyz|startupz on 15021, with the original probes in
//   SKIFF_KUBE_APP_PROBERS (Istio's ISTIO_KUBE_APP_PROBERS format), so that the sidecar
//   probes the app directly (captured probes would be answered by the sidecar itself for
//   TCP, and would count as the app's traffic);
// - the annotation sidecar.istio.io/status, which makes injection idempotent.
// Pure: JSON in, JSON out; the webhook turns the difference into a JSONPatch.
#include <nlohmann/json.hpp>
#include <string>

namespace skiff::inject {

struct InjectOptions {
  std::string proxy_image = "skiff-proxy:latest";  // holds skiff-proxy and skiff-init
  std::string image_pull_policy = "IfNotPresent";
  std::string xds_address = "skiff-operator.skiff-system.svc:15010";
  int concurrency = 2;  // the sidecar's workers (Istio's default)
};

struct InjectResult {
  enum class Outcome { kInjected, kSkipped, kError };
  Outcome outcome = Outcome::kSkipped;
  nlohmann::json pod;  // kInjected: the pod with the sidecar
  std::string reason;  // kSkipped: why not ("already injected", ...); kError: what is wrong
};

// Injects one pod object (kind Pod) or pod template (metadata + spec). A pod that opts out
// (sidecar.istio.io/inject "false" as a label or annotation), uses the host's network, or
// is already injected is skipped; an annotation that does not parse is an error naming it.
InjectResult InjectPod(const nlohmann::json& pod, const InjectOptions& options);

// `skiffctl inject`: every pod template of a manifest (Pod; Deployment, StatefulSet,
// DaemonSet, ReplicaSet, ReplicationController, Job: spec.template; CronJob:
// spec.jobTemplate.spec.template; a List's items), others unchanged. `*error` names the
// object whose pod could not be injected.
bool InjectManifest(nlohmann::json* doc, const InjectOptions& options, std::string* error);

// The sidecar's readiness port and the path prefix of the probes it answers for the app.
inline constexpr int kReadinessPort = 15021;
inline constexpr const char* kAppHealthPrefix = "/app-health/";
inline constexpr const char* kStatusAnnotation = "sidecar.istio.io/status";

}  // namespace skiff::inject

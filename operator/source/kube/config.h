#pragma once
// How to reach the Kubernetes API: from a kubeconfig (--kubeconfig, $KUBECONFIG,
// ~/.kube/config; bearer token or client certificate; CA) or in-cluster (the pod's
// service-account token and CA, KUBERNETES_SERVICE_HOST/PORT), as client-go does.
#include <optional>
#include <string>

namespace skiff::kube {

struct ClusterConfig {
  std::string server;  // https://host:port
  std::string ca_pem;  // empty: system roots
  bool insecure_skip_verify = false;
  std::string token;       // bearer token (may be empty)
  std::string token_file;  // re-read on each request when set (rotated SA tokens)
  std::string client_cert_pem;
  std::string client_key_pem;
  std::string namespace_;  // the in-cluster namespace or the context's namespace
  std::string source;      // "kubeconfig /path (context x)" or "in-cluster", for logs
};

// In-cluster config from `sa_dir` (default /var/run/secrets/kubernetes.io/serviceaccount)
// and KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT. nullopt + `error` when not in a
// cluster.
std::optional<ClusterConfig> InClusterConfig(const std::string& sa_dir, std::string* error);

// From a kubeconfig file: its current context (or `context`). Errors name the file and what
// is missing.
std::optional<ClusterConfig> KubeconfigConfig(const std::string& path, const std::string& context,
                                              std::string* error);

// client-go's order: an explicit --kubeconfig, then in-cluster when running in a pod, then
// $KUBECONFIG (first file), then ~/.kube/config.
std::optional<ClusterConfig> LoadClusterConfig(const std::string& kubeconfig_flag,
                                               const std::string& context, std::string* error);

}  // namespace skiff::kube

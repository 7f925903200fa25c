#include "operator/translate/hosts.h"

namespace skiff::translate {

std::string ResolveHost(const std::string& host, const std::string& ns) {
  std::string buf;
  return std::string(ResolveHostView(host, ns, &buf));
}

std::string ClusterName(uint32_t port, const std::string& subset, const std::string& fqdn) {
  std::string out;
  AppendClusterName(&out, port, subset, fqdn);
  return out;
}

std::string IntersectHosts(const std::string& vs_host, const std::string& server_host) {
  return std::string(IntersectHostsView(vs_host, server_host));
}

}  // namespace skiff::translate

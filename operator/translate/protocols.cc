// Istio's protocol selection for Service ports: appProtocol, else the port name's prefix
// ("<protocol>[-<suffix>]"), and what skiff's sidecar does with each.
#include <string>

#include "common/strings.h"
#include "operator/translate/translate.h"

namespace skiff::translate {

PortProtocol ServicePortProtocol(const api::ServicePort& port) {
  if (!port.protocol.empty() && ToLower(port.protocol) != "tcp") {
    return PortProtocol::kNotTcp;  // UDP, SCTP: never captured (skiff-init redirects TCP)
  }
  std::string name = ToLower(port.app_protocol);
  if (!name.empty()) {
    // Kubernetes' own appProtocol names.
    if (name == "kubernetes.io/h2c") {
      return PortProtocol::kHttp2;  // HTTP/2 with prior knowledge
    }
    if (name == "kubernetes.io/ws") {
      return PortProtocol::kHttp;
    }
    if (name == "kubernetes.io/wss") {
      return PortProtocol::kTcp;
    }
  } else {
    name = ToLower(port.name);
  }
  if (StartsWith(name, "grpc-web")) {
    return PortProtocol::kDetect;  // gRPC-Web is HTTP/1.1 or HTTP/2: served as the client speaks
  }
  name = name.substr(0, name.find('-'));
  if (name == "http" || name == "http_proxy") {
    return PortProtocol::kHttp;
  }
  if (name == "http2" || name == "grpc" || name == "h2c") {
    return PortProtocol::kHttp2;  // routed as HTTP; the upstream speaks HTTP/2
  }
  if (name == "https" || name == "tls" || name == "tcp" || name == "mongo" || name == "mysql" ||
      name == "redis") {
    return PortProtocol::kTcp;  // not HTTP in the clear
  }
  if (name == "udp") {
    return PortProtocol::kNotTcp;
  }
  return PortProtocol::kDetect;  // a name that says nothing: sniffed per connection
}

}  // namespace skiff::translate

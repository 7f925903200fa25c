// skiffctl proxy-status: per connected proxy and resource type, the version the operator
// sent, the version the proxy ACKed and the operator's current version, and the state.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/table.h"
#include "common/flags.h"
#include "common/strings.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace skiff::cli {

namespace {

// Versions are 16 hex digits; 8 tell them apart on screen, as git's short hashes do.
std::string Short(const std::string& version) {
  return version.empty() ? "-" : version.substr(0, 8);
}

std::string TypeName(const std::string& type_url) {
  if (type_url == xds::kClusterType) {
    return "clusters";
  }
  if (type_url == xds::kEndpointsType) {
    return "endpoints";
  }
  if (type_url == xds::kListenerType) {
    return "listeners";
  }
  if (type_url == xds::kRouteTableType) {
    return "routes";
  }
  if (type_url == xds::kSecretType) {
    return "secrets";
  }
  return xds::ShortType(type_url);
}

}  // namespace

int ProxyStatus(const std::vector<std::string>& args) {
  std::string address = "127.0.0.1:15010";
  FlagSet flags("skiffctl proxy-status",
                "Lists the proxies connected to an operator and, per resource type, the version "
                "the operator\nsent, the version the proxy ACKed and the operator's current "
                "version: SYNCED when the\nproxy has the current one, STALE while it does not "
                "(yet), NACKED when it rejected it\n(with the proxy's error).");
  flags.AddString("operator", &address, "the operator's xDS address (default 127.0.0.1:15010)",
                  "HOST:PORT");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::ProxyStatusService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ProxyStatusRequest req;
  v1::ProxyStatusResponse resp;
  auto status = stub->ListProxies(&ctx, req, &resp);
  if (!status.ok()) {
    std::cerr << "skiffctl proxy-status: cannot reach the operator at " << address << ": "
              << status.error_message() << "\n";
    return 1;
  }
  if (resp.proxies().empty()) {
    std::cout << "no proxies connected to the operator at " << address << "\n";
    return 0;
  }
  Table table({"PROXY", "ROLE", "NAMESPACE", "POD", "STREAM", "TYPE", "STATE", "SENT", "ACKED",
               "OPERATOR", "LABELS"});
  for (const auto& p : resp.proxies()) {
    std::vector<std::string> labels;
    std::map<std::string, std::string> sorted(p.node().labels().begin(), p.node().labels().end());
    for (const auto& [k, v] : sorted) {
      labels.push_back(k + "=" + v);
    }
    std::string label_text = labels.empty() ? "-" : Join(labels, ",");
    for (const auto& t : p.types()) {
      // A sidecar's pod (the downward API's POD_NAME); "-" for gateways.
      const std::string& pod = p.node().pod_name();
      table.Add({p.node().id(), p.node().role(),
                 p.node().namespace_().empty() ? "default" : p.node().namespace_(),
                 pod.empty() ? "-" : pod, p.stream(), TypeName(t.type_url()), t.state(),
                 Short(t.sent_version()), Short(t.acked_version()), Short(t.current_version()),
                 label_text});
      if (!t.error().empty()) {
        table.AddNote(TypeName(t.type_url()) + " " + Short(t.sent_version()) +
                      " rejected: " + t.error());
      }
    }
  }
  table.Print(std::cout);
  return 0;
}

}  // namespace skiff::cli

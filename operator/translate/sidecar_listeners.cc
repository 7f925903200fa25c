// The sidecar role's outbound listener (15001): a virtual host per Service port, which mesh
// VirtualServices override; for a captured sidecar also every Service's ClusterIPs and
// ports, so that a connection's original destination picks how it is served.
#include <algorithm>

#include "operator/api/names.h"
#include "operator/translate/builder.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

using api::Object;

namespace {

// The Service's cluster IPs (clusterIPs, else clusterIP); none for a headless Service.
std::vector<std::string_view> ClusterIps(const api::Service& svc) {
  std::vector<std::string_view> out;
  if (svc.cluster_ip == "None") {
    return out;
  }
  if (api::IsValidIp(svc.cluster_ip)) {
    out.push_back(svc.cluster_ip);
  }
  for (const auto& ip : svc.cluster_ips) {
    if (api::IsValidIp(ip) && std::find(out.begin(), out.end(), ip) == out.end()) {
      out.push_back(ip);
    }
  }
  return out;
}

v1::Protocol ProtoProtocol(PortProtocol p) {
  switch (p) {
    case PortProtocol::kHttp:
    case PortProtocol::kHttp2:
      return v1::PROTOCOL_HTTP;
    case PortProtocol::kTcp:
      return v1::PROTOCOL_TCP;
    default:
      return v1::PROTOCOL_UNSPECIFIED;
  }
}

}  // namespace

void Builder::BuildSidecar() {
  auto* l = snapshot_->add_listeners();
  l->set_name("virtualOutbound");
  l->set_address("0.0.0.0");
  l->set_port(kSidecarOutboundPort);
  l->set_protocol("HTTP");
  l->set_route_table("outbound");
  if (group_.capture) {
    l->set_capture(v1::CAPTURE_OUTBOUND);
    l->set_registry_only(mesh_.outbound_traffic_policy ==
                         MeshConfig::OutboundTrafficPolicy::kRegistryOnly);
  }
  auto* table = snapshot_->add_route_tables();
  table->set_name("outbound");

  // Mesh VirtualServices by the FQDN of each host (first one wins, as Istio does): those
  // with http: routes for the virtual hosts, those with tcp: routes for captured TCP ports.
  StringMap<const Object*> vs_by_host;
  StringMap<const Object*> tcp_vs_by_host;
  std::vector<std::pair<std::string, const Object*>> external;  // hosts that are no Service
  for (const Object* vs_obj : index_.virtual_services) {
    const auto& vs = vs_obj->As<api::VirtualService>();
    bool mesh = vs.gateways.empty() ||
                std::find(vs.gateways.begin(), vs.gateways.end(), "mesh") != vs.gateways.end();
    if (!mesh) {
      continue;
    }
    for (const auto& h : vs.hosts) {
      std::string fqdn = ResolveHost(h, vs_obj->meta.namespace_);
      if (!vs.tcp.empty()) {
        tcp_vs_by_host.emplace(fqdn, vs_obj);
      }
      if (vs.http.empty() && !vs.tcp.empty()) {
        continue;  // TCP only: the Service's HTTP ports keep their default routes
      }
      if (vs_by_host.emplace(fqdn, vs_obj).second && index_.Service(fqdn) == nullptr) {
        external.emplace_back(std::move(fqdn), vs_obj);
      }
    }
  }
  auto* vhosts = table->mutable_virtual_hosts();
  for (const auto& entry : index_.services) {
    const std::string& fqdn = entry.fqdn;
    const Object* svc_obj = entry.object;
    const auto& svc = svc_obj->As<api::Service>();
    const std::string& name = svc_obj->meta.name;
    const std::string& ns = svc_obj->meta.namespace_;
    std::vector<std::string_view> ips = ClusterIps(svc);
    for (const auto& port : svc.ports) {
      std::string p = std::to_string(port.port);
      auto* vh = vhosts->Add();
      vh->set_name(fqdn + ":" + p);
      std::vector<std::string> names = {fqdn};
      if (entry.service_entry == nullptr) {  // a ServiceEntry host is only itself
        names.push_back(name + "." + ns + ".svc");
        names.push_back(name + "." + ns);
        if (ns == group_.namespace_) {
          names.push_back(name);
        }
      }
      for (std::string_view ip : ips) {
        // As a Host header names it: an IPv6 address in brackets.
        std::string& n = names.emplace_back();
        bool v6 = ip.find(':') != std::string_view::npos;
        n.append(v6 ? "[" : "").append(ip).append(v6 ? "]" : "");
      }
      for (const auto& n : names) {
        vh->add_domains(n + ":" + p);
        if (port.port == 80) {
          vh->add_domains(n);
        }
      }
      auto vs_it = vs_by_host.find(fqdn);
      if (vs_it != vs_by_host.end()) {
        AppendRoutes(*vs_it->second, "mesh", 0, port.port, vh);
      } else {
        AddDefaultRoute(entry, port.port, vh);
      }
      if (!group_.capture) {
        continue;
      }
      // Captured connections to the Service's addresses: HTTP by the routes above, others
      // by a TCP proxy to the port's cluster (for detected ports: when not HTTP/1).
      PortProtocol protocol = ServicePortProtocol(port);
      if (protocol == PortProtocol::kNotTcp) {
        continue;
      }
      if (entry.service_entry != nullptr && protocol != PortProtocol::kHttp &&
          protocol != PortProtocol::kHttp2 &&
          entry.service_entry->As<api::ServiceEntry>().hosts.size() > 1) {
        continue;  // one address, several hosts: only HTTP tells them apart (see its status)
      }
      for (std::string_view ip : ips) {
        auto* cs = l->add_services();
        cs->set_address(ip.data(), ip.size());
        cs->set_port(port.port);
        cs->set_protocol(ProtoProtocol(protocol));
        if (protocol != PortProtocol::kHttp && protocol != PortProtocol::kHttp2) {
          SetCluster(fqdn, port.port, "", &entry, cs->mutable_tcp_cluster());
          if (auto tcp_it = tcp_vs_by_host.find(fqdn); tcp_it != tcp_vs_by_host.end()) {
            auto to_mesh = [](const std::vector<std::string>& refs) {
              return refs.empty() || std::find(refs.begin(), refs.end(), "mesh") != refs.end();
            };
            const auto& tcp_vs = tcp_it->second->As<api::VirtualService>();
            if (const auto* route = FirstTcpRoute(tcp_vs, port.port, to_mesh)) {
              // (In place: the cluster table keeps views of the cluster names.)
              SetL4Destinations(route->route, tcp_it->second->meta.namespace_, port.port,
                                cs->mutable_tcp_route());
            }
          }
        }
      }
    }
  }
  for (const auto& [fqdn, vs_obj] : external) {
    auto* vh = vhosts->Add();
    vh->set_name(fqdn + ":80");
    vh->add_domains(fqdn);
    vh->add_domains(fqdn + ":80");
    AppendRoutes(*vs_obj, "mesh", 0, 80, vh);
  }
  SortByName(vhosts);  // duplicates go after BuildClusters (see Build)
}

}  // namespace skiff::translate

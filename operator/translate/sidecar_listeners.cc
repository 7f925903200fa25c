// The sidecar role's outbound listener (15001): a virtual host per Service port, which mesh
// VirtualServices override; for a captured sidecar also every Service's ClusterIPs and
// ports, so that a connection's original destination picks how it is served.
#include <algorithm>
#include <set>

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

constexpr const char* kPassthroughCluster = "PassthroughCluster";

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
  // Captured: HTTP ports of ServiceEntry hosts that have no address (not headless
  // Services, whose pods' addresses are their own) are routed by Host whatever address the client
  // connected to, as Istio's 0.0.0.0:<port> listeners.
  std::set<uint32_t> host_routed;
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
      if (ips.empty() && entry.service_entry != nullptr &&
          (protocol == PortProtocol::kHttp || protocol == PortProtocol::kHttp2 ||
           protocol == PortProtocol::kDetect)) {
        host_routed.insert(port.port);
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
  if (group_.capture && !host_routed.empty()) {
    for (uint32_t p : host_routed) {
      l->add_host_routed_ports(p);
    }
    // A Host nothing serves: passed through to where the client connected (Istio's
    // allow_any, PassthroughCluster), or 502 with REGISTRY_ONLY (block_all).
    const bool registry_only =
        mesh_.outbound_traffic_policy == MeshConfig::OutboundTrafficPolicy::kRegistryOnly;
    auto* fallback = snapshot_->add_route_tables();
    fallback->set_name(registry_only ? "block_all" : "allow_any");
    l->set_fallback_route_table(fallback->name());
    auto* vh = fallback->add_virtual_hosts();
    vh->set_name(fallback->name());
    vh->add_domains()->assign(1, '*');  // (a char, not "*": GCC 12 warns falsely)
    auto* route = vh->add_routes();
    route->set_name(fallback->name());
    if (registry_only) {
      route->mutable_direct_response()->set_status(502);
    } else {
      auto* wc = route->mutable_route()->add_clusters();
      wc->set_cluster(kPassthroughCluster);
      wc->set_weight(100);
      auto* c = snapshot_->add_clusters();
      c->set_name(kPassthroughCluster);
      c->set_service(kPassthroughCluster);
      c->set_original_destination(true);
      c->set_protocol(v1::Cluster::USE_DOWNSTREAM);  // h2c stays h2c, as Istio's
    }
  }
}

}  // namespace skiff::translate

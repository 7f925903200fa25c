// A captured sidecar's inbound listener (15006): the ports of the Services that select its
// pods (by the group's labels and namespace), each served as its protocol says: HTTP by an
// inbound route table ("inbound|<port>") to an original-destination cluster
// ("inbound|<port>||") connected from 127.0.0.6, as Istio's, reported by the destination;
// TCP by a TCP proxy to the same kind of cluster. Other ports pass through to the app.
#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <map>
#include <string_view>
#include <vector>

#include "operator/translate/builder.h"

namespace skiff::translate {

using api::Object;

namespace {

std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) {
    out.append(p);
  }
  return out;
}

// The pod port a Service port sends to: its targetPort (a number, or a name the Service's
// EndpointSlices resolve), else the port itself; 0 when a name is not resolved yet.
uint32_t TargetPort(const Index::ServiceEntry& entry, const api::ServicePort& sp) {
  const std::string& t = sp.target_port;
  if (t.empty()) {
    return sp.port;
  }
  uint32_t n = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (ec == std::errc() && end == t.data() + t.size()) {
    return n >= 1 && n <= 65535 ? n : 0;
  }
  for (const auto& slice : entry.slices) {
    for (const auto& p : slice.object->As<api::EndpointSlice>().ports) {
      if (p.name == sp.name && p.port != 0) {
        return p.port;
      }
    }
  }
  return 0;
}

}  // namespace

void Builder::BuildInbound() {
  auto* l = snapshot_->add_listeners();
  l->set_name("virtualInbound");
  l->set_address("0.0.0.0");
  l->set_port(kSidecarInboundPort);
  l->set_capture(v1::CAPTURE_INBOUND);

  // The Services that select the pod, oldest first (as Istio resolves two Services on one
  // pod port), then by FQDN.
  std::vector<const Index::ServiceEntry*> selecting;
  for (const auto& entry : index_.services) {
    const Object& o = *entry.object;
    const auto& svc = o.As<api::Service>();
    if (o.meta.namespace_ == group_.namespace_ && !svc.selector.empty() &&
        LabelsMatch(svc.selector, group_.labels)) {
      selecting.push_back(&entry);
    }
  }
  std::stable_sort(selecting.begin(), selecting.end(), [](const auto* a, const auto* b) {
    return a->object->meta.creation_timestamp < b->object->meta.creation_timestamp;
  });
  // Pod port -> the first Service port that sends to it.
  struct Port {
    PortProtocol protocol;
    const Index::ServiceEntry* service;
    uint32_t service_port;
  };
  std::map<uint32_t, Port> ports;
  for (const Index::ServiceEntry* entry : selecting) {
    for (const auto& sp : entry->object->As<api::Service>().ports) {
      PortProtocol protocol = ServicePortProtocol(sp);
      uint32_t target = TargetPort(*entry, sp);
      if (protocol != PortProtocol::kNotTcp && target != 0) {
        ports.try_emplace(target, Port{protocol, entry, sp.port});
      }
    }
  }
  for (const auto& [target, p] : ports) {
    std::string port = std::to_string(target);
    std::string cluster_name = Cat({"inbound|", port, "||"});
    auto* ip = l->add_inbound_ports();
    ip->set_port(target);
    switch (p.protocol) {
      case PortProtocol::kHttp:
      case PortProtocol::kHttp2:
        ip->set_protocol(v1::PROTOCOL_HTTP);
        break;
      case PortProtocol::kTcp:
        ip->set_protocol(v1::PROTOCOL_TCP);
        break;
      default:
        ip->set_protocol(v1::PROTOCOL_UNSPECIFIED);
        break;
    }
    if (p.protocol != PortProtocol::kTcp) {
      // HTTP, and detected HTTP/1: every request goes to the app (no retries, as Istio's
      // inbound routes).
      auto* table = snapshot_->add_route_tables();
      table->set_name(Cat({"inbound|", port}));
      ip->set_route_table(table->name());
      auto* vh = table->add_virtual_hosts();
      vh->set_name(Cat({"inbound|http|", port}));
      vh->add_domains()->push_back('*');  // (not add_domains("*"): GCC 12 warns falsely)
      auto* route = vh->add_routes();
      route->set_name("default");
      route->set_source(
          Cat({"Service ", p.service->object->meta.namespace_, "/", p.service->object->meta.name,
               " port ", std::to_string(p.service_port), " (inbound)"}));
      auto* wc = route->mutable_route()->add_clusters();
      wc->set_cluster(cluster_name);
      wc->set_weight(100);
    }
    if (p.protocol != PortProtocol::kHttp && p.protocol != PortProtocol::kHttp2) {
      ip->set_tcp_cluster(cluster_name);
    }
    // (Before the outbound clusters, as "inbound|" sorts before "outbound|".)
    auto* c = snapshot_->add_clusters();
    c->set_name(std::move(cluster_name));
    c->set_service(p.service->fqdn);
    c->set_port(p.service_port);
    c->set_service_name(p.service->object->meta.name);
    c->set_service_namespace(p.service->object->meta.namespace_);
    c->set_source_address(kInboundSourceAddress);
    c->set_inbound(true);
    c->set_original_destination(true);
    if (p.protocol == PortProtocol::kHttp2) {
      c->set_protocol(v1::Cluster::HTTP2);  // the app speaks h2c (gRPC)
    }
  }
}

}  // namespace skiff::translate

#include "proxy/config/config.h"

#include <arpa/inet.h>

#include <set>

#include "proxy/telemetry/metrics.h"

namespace skiff::proxy {

namespace {
std::map<std::string, std::string>& AddressMap() {
  static auto* map = new std::map<std::string, std::string>();
  return *map;
}

bool ValidAddress(const std::string& a) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, a.c_str(), buf) == 1 || ::inet_pton(AF_INET6, a.c_str(), buf) == 1;
}
}  // namespace

void SetAddressMap(std::map<std::string, std::string> map) { AddressMap() = std::move(map); }

std::shared_ptr<const Config> Config::Build(v1::Snapshot snapshot,
                                            const std::map<uint32_t, uint32_t>& port_map,
                                            uint64_t version, std::string* error,
                                            bool strict_references) {
  auto cfg = std::shared_ptr<Config>(new Config());
  cfg->snapshot_ = std::move(snapshot);
  cfg->version_ = version;
  const v1::Snapshot& snap = cfg->snapshot_;

  // Clusters and their endpoints.
  for (int i = 0; i < snap.clusters_size(); ++i) {
    const auto& c = snap.clusters(i);
    if (c.name().empty()) {
      *error = "clusters[" + std::to_string(i) + "].name: required";
      return nullptr;
    }
    auto cluster = std::make_unique<upstream::Cluster>();
    cluster->proto = &c;
    cluster->name = c.name();
    cluster->policy = c.load_balancer().policy();
    cluster->state = upstream::ClusterStateRegistry::Default().Get(c.name());
    cluster->telemetry_labels = telemetry::DestinationLabels(&c, nullptr);
    cluster->span_name =
        (c.service().empty() ? c.name() : c.service() + ":" + std::to_string(c.port())) + "/*";
    cluster->outlier_detection =
        c.has_outlier_detection() && (c.outlier_detection().consecutive_5xx_errors() > 0 ||
                                      c.outlier_detection().consecutive_gateway_errors() > 0);
    const auto& pool = c.connection_pool();
    cluster->max_connections = pool.max_connections();
    cluster->max_pending_requests = pool.max_pending_requests();
    cluster->max_requests = pool.max_requests();
    cluster->max_retries = pool.max_retries();
    cluster->max_requests_per_connection = pool.max_requests_per_connection();
    if (!cfg->clusters_.emplace(c.name(), std::move(cluster)).second) {
      *error = "clusters[" + std::to_string(i) + "]: duplicate cluster \"" + c.name() + "\"";
      return nullptr;
    }
  }
  for (int i = 0; i < snap.endpoints_size(); ++i) {
    const auto& cla = snap.endpoints(i);
    auto it = cfg->clusters_.find(cla.cluster_name());
    std::string path = "endpoints[" + cla.cluster_name() + "]";
    if (it == cfg->clusters_.end()) {
      if (!strict_references) {
        continue;
      }
      *error = path + ": cluster \"" + cla.cluster_name() + "\" does not exist";
      return nullptr;
    }
    for (int j = 0; j < cla.endpoints_size(); ++j) {
      const auto& ep = cla.endpoints(j);
      if (!ValidAddress(ep.address())) {
        *error = path + ".endpoints[" + std::to_string(j) + "].address: \"" + ep.address() +
                 "\" is not an IP address";
        return nullptr;
      }
      if (ep.port() == 0 || ep.port() > 65535) {
        *error = path + ".endpoints[" + std::to_string(j) + "].port: must be 1-65535";
        return nullptr;
      }
      if (!ep.healthy()) {
        continue;
      }
      upstream::Endpoint e;
      e.address = ep.address();
      if (auto m = AddressMap().find(e.address); m != AddressMap().end()) {
        e.address = m->second;
      }
      e.port = static_cast<uint16_t>(ep.port());
      e.key = e.address + ":" + std::to_string(ep.port());
      e.proto = &ep;
      e.health =
          upstream::ClusterStateRegistry::Default().GetEndpoint(it->second->state.get(), e.key);
      e.telemetry_labels = telemetry::DestinationLabels(it->second->proto, &ep);
      it->second->endpoints.push_back(std::move(e));
    }
  }
  for (auto& [name, cluster] : cfg->clusters_) {
    if (cluster->policy == v1::LoadBalancer::CONSISTENT_HASH) {
      cluster->BuildRing();
    }
  }

  // Route tables.
  std::map<std::string, const router::RouteTable*> tables;
  for (const auto& rt : snap.route_tables()) {
    auto table = std::make_unique<router::RouteTable>();
    if (!table->Init(rt, error)) {
      return nullptr;
    }
    if (!tables.emplace(rt.name(), table.get()).second) {
      *error = "route_tables[" + rt.name() + "]: duplicate route table name";
      return nullptr;
    }
    // Every cluster a route names must exist.
    for (int v = 0; strict_references && v < rt.virtual_hosts_size(); ++v) {
      for (int r = 0; r < rt.virtual_hosts(v).routes_size(); ++r) {
        const auto& route = rt.virtual_hosts(v).routes(r);
        std::string path = "route_tables[" + rt.name() + "].virtual_hosts[" + std::to_string(v) +
                           "].routes[" + std::to_string(r) + "]";
        for (const auto& wc : route.route().clusters()) {
          if (cfg->clusters_.count(wc.cluster()) == 0) {
            *error = path + ".route.clusters: cluster \"" + wc.cluster() + "\" does not exist";
            return nullptr;
          }
        }
        for (const auto& m : route.route().mirrors()) {
          if (cfg->clusters_.count(m.cluster()) == 0) {
            *error = path + ".route.mirrors: cluster \"" + m.cluster() + "\" does not exist";
            return nullptr;
          }
        }
      }
    }
    cfg->tables_.push_back(std::move(table));
  }

  // Listeners.
  std::set<std::pair<std::string, uint32_t>> binds;
  for (int i = 0; i < snap.listeners_size(); ++i) {
    const auto& l = snap.listeners(i);
    std::string path = "listeners[" + (l.name().empty() ? std::to_string(i) : l.name()) + "]";
    if (l.port() == 0 || l.port() > 65535) {
      *error = path + ".port: must be 1-65535";
      return nullptr;
    }
    ListenerConfig lc;
    lc.name = l.name();
    lc.address = l.address().empty() ? "0.0.0.0" : l.address();
    if (!ValidAddress(lc.address)) {
      *error = path + ".address: \"" + lc.address + "\" is not an IP address";
      return nullptr;
    }
    lc.port = l.port();
    auto mapped = port_map.find(l.port());
    lc.bind_port = mapped == port_map.end() ? l.port() : mapped->second;
    auto t = tables.find(l.route_table());
    if (t == tables.end()) {
      if (!strict_references) {
        continue;  // not served until its route table arrives (Envoy: a warming listener)
      }
      *error = path + ".route_table: route table \"" + l.route_table() + "\" does not exist";
      return nullptr;
    }
    lc.route_table = t->second;
    if (!binds.emplace(lc.address, lc.bind_port).second) {
      *error = path + ": another listener already uses " + lc.address + ":" +
               std::to_string(lc.bind_port);
      return nullptr;
    }
    cfg->listeners_.push_back(std::move(lc));
  }
  return cfg;
}

const upstream::Cluster* Config::FindCluster(const std::string& name) const {
  auto it = clusters_.find(name);
  return it == clusters_.end() ? nullptr : it->second.get();
}

}  // namespace skiff::proxy

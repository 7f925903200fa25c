#pragma once
// The proxy's immutable configuration: a snapshot validated completely and compiled into
// route tables and clusters. Published to workers as shared_ptr<const Config>; a request
// keeps the Config it started with.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/router/route_table.h"
#include "proxy/upstream/cluster.h"
#include "skiff/v1/config.pb.h"

namespace skiff::proxy {

struct ListenerConfig {
  std::string name;
  std::string address;
  uint32_t port = 0;       // as configured (used for route matching)
  uint32_t bind_port = 0;  // after --port-map
  const router::RouteTable* route_table = nullptr;
};

// Endpoint addresses to connect to instead of the configured ones ("192.0.2.10" ->
// "127.0.0.1"), for running a cluster's configuration on one machine (the API server
// refuses loopback addresses in EndpointSlices). Set once at start-up.
void SetAddressMap(std::map<std::string, std::string> map);

class Config {
 public:
  // Validates and compiles. On failure returns nullptr and sets `error` to a message that
  // names the offending resource and field. `port_map` remaps listener ports (80 -> 18080).
  // With `strict_references` false (xDS, where types arrive one at a time), a route to a
  // cluster that does not exist is accepted (it answers 503), endpoints of unknown
  // clusters are ignored, and a listener whose route table has not arrived is not bound
  // yet, as Envoy does.
  static std::shared_ptr<const Config> Build(v1::Snapshot snapshot,
                                             const std::map<uint32_t, uint32_t>& port_map,
                                             uint64_t version, std::string* error,
                                             bool strict_references = true);

  [[nodiscard]] const std::vector<ListenerConfig>& listeners() const { return listeners_; }
  [[nodiscard]] const upstream::Cluster* FindCluster(const std::string& name) const;
  [[nodiscard]] const v1::Snapshot& snapshot() const { return snapshot_; }
  [[nodiscard]] uint64_t version() const { return version_; }
  [[nodiscard]] const std::unordered_map<std::string, std::unique_ptr<upstream::Cluster>>&
  clusters() const {
    return clusters_;
  }

 private:
  v1::Snapshot snapshot_;
  uint64_t version_ = 0;
  std::vector<ListenerConfig> listeners_;
  std::vector<std::unique_ptr<router::RouteTable>> tables_;
  std::unordered_map<std::string, std::unique_ptr<upstream::Cluster>> clusters_;
};

}  // namespace skiff::proxy

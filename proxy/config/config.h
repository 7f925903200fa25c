#pragma once
// The proxy's immutable configuration: a snapshot validated completely and compiled into
// route tables and clusters. Published to workers as shared_ptr<const Config>; a request
// keeps the Config it started with.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/http/path.h"
#include "proxy/net/tls.h"
#include "proxy/router/route_table.h"
#include "proxy/telemetry/metrics.h"
#include "proxy/upstream/cluster.h"
#include "skiff/v1/config.pb.h"

namespace skiff::proxy {

// A port of the pod, for captured inbound connections.
struct InboundPortConfig {
  v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;
  const router::RouteTable* route_table = nullptr;
  const upstream::Cluster* tcp_cluster = nullptr;
};

// Where a TCP connection goes: one cluster, or one of several by weight.
struct TcpDestination {
  const upstream::Cluster* cluster = nullptr;
  // Several destinations: (cluster, weight), a connection's pick drawn over total_weight.
  std::vector<std::pair<const upstream::Cluster*, uint32_t>> weighted;
  uint64_t total_weight = 0;
  // The cluster for a connection, `random` drawn by the caller; nullptr when there is none.
  [[nodiscard]] const upstream::Cluster* Pick(uint64_t random) const;
};

// A Service port a captured outbound connection may be for.
struct CapturedServiceConfig {
  v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;
  const upstream::Cluster* tcp_cluster = nullptr;
  std::optional<TcpDestination> tcp_route;  // a mesh tcp: route: instead of tcp_cluster
};

// A listener part chosen by SNI: terminated TLS with its routes, or passthrough by SNI.
struct FilterChainConfig {
  std::string name;
  std::vector<std::string> exact;        // server names (lower case)
  std::vector<std::string> suffixes;     // "*.example.com" -> ".example.com", longest first
  bool any_name = false;                 // no server names: matches any SNI
  std::shared_ptr<net::TlsContext> tls;  // null: passthrough
  const router::RouteTable* route_table = nullptr;
  // Terminated, then the bytes inside to this destination (a Gateway TLS server's tcp:
  // route) rather than HTTP routing.
  std::optional<TcpDestination> tcp_route;
  struct SniRoute : TcpDestination {
    std::vector<std::string> exact, suffixes;
  };
  std::vector<SniRoute> sni_routes;
};

struct ListenerConfig {
  std::string name;
  std::string address;
  uint32_t port = 0;       // as configured (used for route matching)
  uint32_t bind_port = 0;  // after --port-map
  const router::RouteTable* route_table = nullptr;
  // Set when the snapshot chose one; else the proxy's --path-normalization applies.
  std::optional<http::PathNormalization> path_normalization;
  // Transparent capture: how connections are served by their original destination.
  v1::Capture capture = v1::CAPTURE_NONE;
  std::unordered_map<std::string, CapturedServiceConfig> services;  // by "address:port"
  bool registry_only = false;
  std::unordered_map<uint32_t, InboundPortConfig> inbound_ports;
  // Outbound ports whose unknown destinations are HTTP routed by Host (see config.proto).
  std::vector<uint32_t> host_routed_ports;
  const router::RouteTable* fallback_route_table = nullptr;
  // TLS (a Gateway's HTTPS / TLS servers): chains by SNI; empty for plain listeners.
  std::vector<FilterChainConfig> filter_chains;
  // TCP (a Gateway's TCP servers): every connection is proxied as bytes to this.
  std::optional<TcpDestination> tcp_route;
  // The chain for a server name: exact, longest wildcard, a chain without names, else
  // (no SNI, or no match) the first chain; nullptr when there are none.
  [[nodiscard]] const FilterChainConfig* ChainFor(std::string_view sni) const;
};

// Endpoint addresses to connect to instead of the configured ones ("192.0.2.10" ->
// "127.0.0.1"), for running a cluster's configuration on one machine (the API server
// refuses loopback addresses in EndpointSlices). Set once at start-up.
void SetAddressMap(std::map<std::string, std::string> map);

// This proxy's own workload (a sidecar's pod), for the destination labels of its inbound
// clusters. Set once at start-up.
void SetLocalIdentity(telemetry::SourceInfo self, std::string pod_name);

class Config {
 public:
  // Validates and compiles. On failure returns nullptr and sets `error` to a message that
  // names the offending resource and field. `port_map` remaps listener ports (80 -> 18080).
  // With `strict_references` false (xDS, where types arrive one at a time), a route to a
  // cluster that does not exist is accepted (it answers 503), endpoints of unknown
  // clusters are ignored, and a listener whose route table has not arrived is not bound
  // yet, as Envoy does. With `allow_dns_names` (xDS, whose client has them resolved), an endpoint
  // address may be a DNS name (see DnsCache); otherwise it must be an IP address.
  static std::shared_ptr<const Config> Build(v1::Snapshot snapshot,
                                             const std::map<uint32_t, uint32_t>& port_map,
                                             uint64_t version, std::string* error,
                                             bool strict_references = true, bool dns_names = false);

  [[nodiscard]] const std::vector<ListenerConfig>& listeners() const { return listeners_; }
  [[nodiscard]] const upstream::Cluster* FindCluster(const std::string& name) const;
  [[nodiscard]] const v1::Snapshot& snapshot() const { return snapshot_; }
  [[nodiscard]] uint64_t version() const { return version_; }
  [[nodiscard]] const std::unordered_map<std::string, std::unique_ptr<upstream::Cluster>>&
  clusters() const {
    return clusters_;
  }
  // The endpoint addresses that are DNS names (resolved through DnsCache::Default()).
  [[nodiscard]] const std::set<std::string>& dns_names() const { return dns_names_; }

 private:
  v1::Snapshot snapshot_;
  uint64_t version_ = 0;
  std::vector<ListenerConfig> listeners_;
  std::vector<std::unique_ptr<router::RouteTable>> tables_;
  std::unordered_map<std::string, std::unique_ptr<upstream::Cluster>> clusters_;
  std::set<std::string> dns_names_;
};

// An address to bind every listener on instead of the one its configuration names (the
// demo binds 127.0.0.1 where a Gateway says 0.0.0.0); empty keeps the configured ones. Set
// once at start-up.
void SetListenerAddress(std::string address);

}  // namespace skiff::proxy

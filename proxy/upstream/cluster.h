#pragma once
// Clusters as the proxy uses them: the healthy endpoints of each, its load-balancing
// policy, and the hash ring for consistent hashing. Immutable once built.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/net/tls.h"
#include "proxy/upstream/cluster_state.h"
#include "skiff/v1/config.pb.h"

namespace skiff::upstream {

struct Endpoint {
  std::string address;
  uint16_t port = 0;
  // "address:port" ("address:port@source" with a source address): connection pools are
  // keyed by it across configs.
  std::string key;
  std::string source_address;  // bind this local address first (empty: any)
  const v1::Endpoint* proto = nullptr;
  std::shared_ptr<EndpointHealth> health;  // outlier detection, shared by workers
  std::string telemetry_labels;            // Istio destination_* label text for this endpoint
};

struct Cluster {
  const v1::Cluster* proto = nullptr;
  std::string name;
  std::vector<Endpoint> endpoints;  // healthy ones only
  v1::LoadBalancer::Policy policy = v1::LoadBalancer::ROUND_ROBIN;
  // Consistent hashing: (hash, endpoint index) sorted by hash, 100 points per endpoint.
  std::vector<std::pair<uint64_t, uint32_t>> ring;
  std::shared_ptr<ClusterState> state;  // circuit breakers and counters, shared by workers
  std::string telemetry_labels;         // destination_* labels when no endpoint was reached
  std::string span_name;                // "<service>:<port>/*"
  bool outlier_detection = false;
  bool inbound = false;                  // reporter="destination" in telemetry
  bool original_destination = false;     // endpoints come from the captured connection
  std::string source_address;            // local address of its upstream connections
  std::shared_ptr<net::TlsContext> tls;  // set: connections to its endpoints use TLS
  // USE_DOWNSTREAM with TLS: the context for HTTP/2 connections (ALPN h2); `tls` then
  // serves the HTTP/1.1 ones.
  std::shared_ptr<net::TlsContext> tls_h2;
  // Circuit-breaker limits; 0 = unlimited.
  uint32_t max_connections = 0;
  uint32_t max_pending_requests = 0;
  uint32_t max_requests = 0;
  uint32_t max_retries = 0;
  uint32_t max_requests_per_connection = 0;
  uint32_t max_concurrent_streams = 0;  // per HTTP/2 connection; 0: the upstream's setting
  v1::Cluster::Protocol protocol = v1::Cluster::HTTP1;

  // Whether a request from a client speaking HTTP/2 (`downstream_http2`) or HTTP/1 goes to
  // the endpoints over HTTP/2: USE_DOWNSTREAM (Istio's useClientProtocol) keeps the
  // client's protocol.
  [[nodiscard]] bool Http2For(bool downstream_http2) const {
    return protocol == v1::Cluster::HTTP2 ||
           (protocol == v1::Cluster::USE_DOWNSTREAM && downstream_http2);
  }

  void BuildRing();
  // The endpoint index for a hash key on the ring.
  [[nodiscard]] uint32_t RingLookup(uint64_t hash) const;
};

uint64_t Hash64(std::string_view data);

}  // namespace skiff::upstream

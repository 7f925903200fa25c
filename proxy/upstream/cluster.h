#pragma once
// Clusters as the proxy uses them: the healthy endpoints of each, its load-balancing
// policy, and the hash ring for consistent hashing. Immutable once built.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/upstream/cluster_state.h"
#include "skiff/v1/config.pb.h"

namespace skiff::upstream {

struct Endpoint {
  std::string address;
  uint16_t port = 0;
  std::string key;  // "address:port": connection pools are keyed by it across configs
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
  // Circuit-breaker limits; 0 = unlimited.
  uint32_t max_connections = 0;
  uint32_t max_pending_requests = 0;
  uint32_t max_requests = 0;
  uint32_t max_retries = 0;
  uint32_t max_requests_per_connection = 0;

  void BuildRing();
  // The endpoint index for a hash key on the ring.
  [[nodiscard]] uint32_t RingLookup(uint64_t hash) const;
};

uint64_t Hash64(std::string_view data);

}  // namespace skiff::upstream

#pragma once
// Endpoint selection for one worker: round robin (default), least request (two random
// choices), random and consistent hashing (ring), skipping endpoints the outlier detector
// ejected and preferring one the request has not tried yet (Istio's previous-hosts
// retry predicate). Its state (round-robin positions, requests in flight per endpoint) is
// the worker's own: no locks.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "proxy/upstream/cluster.h"

namespace skiff::upstream {

class LoadBalancer {
 public:
  using Random = std::function<uint64_t()>;
  explicit LoadBalancer(Random random) : random_(std::move(random)) {}

  // Picks an endpoint of `cluster`, or nullptr when none is usable. `hash_key` is the
  // consistent-hash key of the request (empty: a random point); `avoid` the endpoint of
  // the previous try.
  const Endpoint* Pick(const Cluster& cluster, std::string_view hash_key, const Endpoint* avoid,
                       int64_t now_ms);
  // Requests in flight to an endpoint (least-request balancing); the caller increments it
  // for the duration of a try.
  int& ActiveRequests(const std::string& endpoint_key) { return active_[endpoint_key]; }
  // The config changed: cluster pointers are new.
  void OnConfigChange() { rr_.clear(); }

 private:
  Random random_;
  std::unordered_map<const Cluster*, size_t> rr_;
  std::unordered_map<std::string, int> active_;
};

}  // namespace skiff::upstream

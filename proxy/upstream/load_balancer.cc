#include "proxy/upstream/load_balancer.h"

namespace skiff::upstream {

const Endpoint* LoadBalancer::Pick(const Cluster& cluster, std::string_view hash_key,
                                   const Endpoint* avoid, int64_t now_ms) {
  size_t n = cluster.endpoints.size();
  if (n == 0) {
    return nullptr;
  }
  size_t idx = 0;
  switch (cluster.policy) {
    case v1::LoadBalancer::RANDOM:
      idx = random_() % n;
      break;
    case v1::LoadBalancer::LEAST_REQUEST: {
      size_t a = random_() % n;
      size_t b = random_() % n;
      idx = ActiveRequests(cluster.endpoints[a].key) <= ActiveRequests(cluster.endpoints[b].key)
                ? a
                : b;
      break;
    }
    case v1::LoadBalancer::CONSISTENT_HASH:
      idx = hash_key.empty() ? random_() % n : cluster.RingLookup(Hash64(hash_key));
      break;
    default:
      idx = rr_[&cluster]++ % n;
      break;
  }
  auto usable = [&](size_t i) {
    return !cluster.outlier_detection ||
           !IsEjected(cluster.state.get(), cluster.endpoints[i].health.get(), now_ms);
  };
  const Endpoint* fallback = nullptr;
  for (size_t k = 0; k < n; ++k) {
    size_t i = (idx + k) % n;
    if (!usable(i)) {
      continue;
    }
    if (&cluster.endpoints[i] == avoid && n > 1) {
      fallback = &cluster.endpoints[i];
      continue;
    }
    return &cluster.endpoints[i];
  }
  return fallback;
}

}  // namespace skiff::upstream

#include "proxy/upstream/cluster_state.h"

#include <algorithm>

namespace skiff::upstream {

namespace {
int64_t Millis(const google::protobuf::Duration& d) {
  return d.seconds() * 1000 + d.nanos() / 1000000;
}
}  // namespace

ClusterStateRegistry& ClusterStateRegistry::Default() {
  static auto* registry = new ClusterStateRegistry();  // lives as long as the process
  return *registry;
}

std::shared_ptr<ClusterState> ClusterStateRegistry::Get(const std::string& cluster) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = clusters_[cluster];
  if (auto s = slot.lock()) {
    return s;
  }
  auto s = std::make_shared<ClusterState>();
  slot = s;
  return s;
}

std::shared_ptr<EndpointHealth> ClusterStateRegistry::GetEndpoint(ClusterState* cluster,
                                                                  const std::string& key) {
  std::lock_guard<std::mutex> lock(cluster->endpoints_mu);
  auto& slot = cluster->endpoints[key];
  if (slot == nullptr) {
    slot = std::make_shared<EndpointHealth>();
  }
  return slot;
}

int64_t SteadyNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Outcome OutcomeOfStatus(int status) {
  if (status == 502 || status == 503 || status == 504) {
    return Outcome::kGatewayError;
  }
  return status >= 500 && status <= 599 ? Outcome::kFiveXx : Outcome::kSuccess;
}

void ClusterStateRegistry::Retain(ClusterState* cluster, const std::set<std::string>& keys) {
  std::lock_guard<std::mutex> lock(cluster->endpoints_mu);
  for (auto it = cluster->endpoints.begin(); it != cluster->endpoints.end();) {
    if (keys.count(it->first) > 0) {
      ++it;
      continue;
    }
    EndpointHealth& e = *it->second;
    int64_t until = e.ejected_until_ms.load(std::memory_order_relaxed);
    // (Exactly once against a draining worker's IsEjected, which exchanges it too.)
    if (until != 0 &&
        e.ejected_until_ms.compare_exchange_strong(until, 0, std::memory_order_relaxed)) {
      cluster->ejections_active.fetch_sub(1, std::memory_order_relaxed);
    }
    it = cluster->endpoints.erase(it);
  }
}

bool IsEjected(ClusterState* cluster, EndpointHealth* endpoint, int64_t now_ms) {
  int64_t until = endpoint->ejected_until_ms.load(std::memory_order_relaxed);
  if (until == 0) {
    return false;
  }
  if (now_ms < until) {
    return true;
  }
  // Back in the pool: exactly one caller wins the exchange and fixes the gauge.
  if (endpoint->ejected_until_ms.compare_exchange_strong(until, 0, std::memory_order_relaxed)) {
    endpoint->consecutive_5xx.store(0, std::memory_order_relaxed);
    endpoint->consecutive_gateway.store(0, std::memory_order_relaxed);
    cluster->ejections_active.fetch_sub(1, std::memory_order_relaxed);
  }
  return false;
}

bool RecordOutcome(const v1::OutlierDetection& config, ClusterState* cluster,
                   EndpointHealth* endpoint, size_t endpoint_count, Outcome outcome,
                   int64_t now_ms) {
  if (outcome == Outcome::kSuccess) {
    endpoint->consecutive_5xx.store(0, std::memory_order_relaxed);
    endpoint->consecutive_gateway.store(0, std::memory_order_relaxed);
    return false;
  }
  // Every 5xx counts for consecutive_5xx (gateway errors included, as in Envoy);
  // only gateway errors count for consecutive_gateway_errors.
  uint32_t n5xx = endpoint->consecutive_5xx.fetch_add(1, std::memory_order_relaxed) + 1;
  uint32_t ngw = 0;
  if (outcome == Outcome::kGatewayError) {
    ngw = endpoint->consecutive_gateway.fetch_add(1, std::memory_order_relaxed) + 1;
  } else {
    endpoint->consecutive_gateway.store(0, std::memory_order_relaxed);
  }
  bool trip =
      (config.consecutive_5xx_errors() > 0 && n5xx >= config.consecutive_5xx_errors()) ||
      (config.consecutive_gateway_errors() > 0 && ngw >= config.consecutive_gateway_errors());
  if (!trip || endpoint->ejected_until_ms.load(std::memory_order_relaxed) != 0) {
    return false;
  }
  // max_ejection_percent bounds the ejected share, but one endpoint may always be ejected
  // (Envoy's rule).
  int64_t allowed = static_cast<int64_t>(endpoint_count) *
                    static_cast<int64_t>(config.max_ejection_percent()) / 100;
  allowed = std::max<int64_t>(allowed, 1);
  if (cluster->ejections_active.load(std::memory_order_relaxed) >= allowed) {
    return false;
  }
  uint32_t times = endpoint->times_ejected.load(std::memory_order_relaxed) + 1;
  int64_t base = config.has_base_ejection_time() ? Millis(config.base_ejection_time()) : 30000;
  // Envoy: base_ejection_time x times ejected, capped at 300 s (or the base if larger).
  int64_t duration = std::min<int64_t>(base * times, std::max<int64_t>(base, 300000));
  int64_t expected = 0;
  if (!endpoint->ejected_until_ms.compare_exchange_strong(
          expected, now_ms + std::max<int64_t>(duration, 1), std::memory_order_relaxed)) {
    return false;
  }
  endpoint->times_ejected.store(times, std::memory_order_relaxed);
  cluster->ejections_active.fetch_add(1, std::memory_order_relaxed);
  cluster->outlier_ejections_enforced_total.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace skiff::upstream

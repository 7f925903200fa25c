#pragma once
// State of a cluster and its endpoints that is shared by every worker and survives config
// swaps: circuit-breaker gauges (connections, pending and active requests, retries), the
// outlier detector's per-endpoint counters and ejections, and counters for /stats. All of
// it is atomics: workers touch it on the request path without locks. The registry that
// hands it out takes a mutex, but only while a Config is built.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "skiff/v1/config.pb.h"

namespace skiff::upstream {

struct EndpointHealth {
  std::atomic<uint32_t> consecutive_5xx{0};
  std::atomic<uint32_t> consecutive_gateway{0};
  std::atomic<int64_t> ejected_until_ms{0};  // steady-clock ms; 0 = in the pool
  std::atomic<uint32_t> times_ejected{0};    // scales the ejection time, as Envoy's
};

struct ClusterState {
  // Circuit-breaker gauges.
  std::atomic<int64_t> cx_active{0};
  std::atomic<int64_t> rq_active{0};
  std::atomic<int64_t> rq_pending_active{0};
  std::atomic<int64_t> rq_retry_active{0};
  std::atomic<int64_t> ejections_active{0};
  // Counters (Envoy's names without the cluster prefix).
  std::atomic<uint64_t> upstream_rq_total{0};
  std::atomic<uint64_t> upstream_rq_retry{0};
  std::atomic<uint64_t> upstream_rq_retry_success{0};
  std::atomic<uint64_t> upstream_rq_retry_limit_exceeded{0};
  std::atomic<uint64_t> upstream_rq_retry_overflow{0};
  std::atomic<uint64_t> upstream_rq_timeout{0};
  std::atomic<uint64_t> upstream_rq_per_try_timeout{0};
  std::atomic<uint64_t> upstream_rq_pending_overflow{0};
  std::atomic<uint64_t> upstream_cx_overflow{0};
  std::atomic<uint64_t> upstream_cx_connect_fail{0};
  std::atomic<uint64_t> outlier_ejections_enforced_total{0};

  std::mutex endpoints_mu;  // guards `endpoints` (config builds only)
  std::map<std::string, std::shared_ptr<EndpointHealth>> endpoints;  // by "address:port"
};

// Hands out the shared state by cluster name. Entries live while some Config uses them.
class ClusterStateRegistry {
 public:
  static ClusterStateRegistry& Default();
  std::shared_ptr<ClusterState> Get(const std::string& cluster);
  std::shared_ptr<EndpointHealth> GetEndpoint(ClusterState* cluster, const std::string& key);
  // Forgets the endpoints of `cluster` a new configuration no longer has (`keys`: the ones it
  // has): one ejected when it went leaves the ejection count, so that it does not hold up
  // the ejection of the endpoints that remain (a configuration still draining keeps its own
  // reference, and sees it back in the pool).
  void Retain(ClusterState* cluster, const std::set<std::string>& keys);
  // Calls fn(name, state) for every live cluster (admin/stats; takes the mutex).
  template <typename Fn>
  void ForEach(Fn fn) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = clusters_.begin(); it != clusters_.end();) {
      if (auto s = it->second.lock()) {
        fn(it->first, *s);
        ++it;
      } else {
        it = clusters_.erase(it);
      }
    }
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::weak_ptr<ClusterState>> clusters_;
};

// Outlier detection with Envoy's consecutive-errors detectors. `now_ms` is steady-clock
// milliseconds; `endpoint_count` is the size of the endpoint's cluster.
enum class Outcome {
  kSuccess,       // a response that is not a 5xx
  kFiveXx,        // a 5xx response other than 502/503/504
  kGatewayError,  // 502, 503, 504, or a connect failure / reset / timeout
};
Outcome OutcomeOfStatus(int status);

// Records a try's outcome; returns true when it ejected the endpoint.
bool RecordOutcome(const v1::OutlierDetection& config, ClusterState* cluster,
                   EndpointHealth* endpoint, size_t endpoint_count, Outcome outcome,
                   int64_t now_ms);
// Whether the endpoint is ejected at `now_ms`; brings it back (and resets its counters)
// once its ejection time has passed.
bool IsEjected(ClusterState* cluster, EndpointHealth* endpoint, int64_t now_ms);

int64_t SteadyNowMs();

}  // namespace skiff::upstream

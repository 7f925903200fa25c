#pragma once
// Istio's standard request metrics (istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes, istio_response_bytes) and TCP metrics (istio_tcp_connections_opened /
// _closed_total, istio_tcp_sent / _received_bytes_total) with Istio's label names and
// values, so Istio's Grafana dashboards work unchanged. Each worker records into its own series
// with relaxed atomics and no lock on the request path (a mutex is taken only when a new label set
// appears); a scrape copies the series list under that mutex and sums the workers.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "skiff/v1/config.pb.h"

namespace skiff::telemetry {

// Envoy's default histogram buckets (milliseconds), as Istio uses for request duration.
inline constexpr std::array<double, 19> kDurationBuckets = {
    0.5,  1,    5,     10,    25,    50,     100,    250,     500,    1000,
    2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000};
// Istio's size buckets (bytes): powers of ten from 1 to 1e9.
inline constexpr std::array<double, 10> kByteBuckets = {
    1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000};

template <size_t N>
struct Histogram {
  std::array<std::atomic<uint64_t>, N> buckets{};  // non-cumulative counts per bucket
  std::atomic<uint64_t> overflow{0};               // above the last bound (+Inf only)
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_milli{0};  // sum x 1000, to keep fractions of a millisecond

  void Observe(const std::array<double, N>& bounds, double value) {
    size_t i = 0;
    while (i < N && value > bounds[i]) {
      ++i;
    }
    if (i < N) {
      buckets[i].fetch_add(1, std::memory_order_relaxed);
    } else {
      overflow.fetch_add(1, std::memory_order_relaxed);
    }
    count.fetch_add(1, std::memory_order_relaxed);
    sum_milli.fetch_add(static_cast<uint64_t>(value * 1000.0), std::memory_order_relaxed);
  }
};

struct Series {
  std::string labels;  // Prometheus label text without braces
  std::atomic<uint64_t> requests{0};
  Histogram<kDurationBuckets.size()> duration;
  Histogram<kByteBuckets.size()> request_bytes;
  Histogram<kByteBuckets.size()> response_bytes;
};

// A TCP connection's series: opened when the upstream answered (or failed: response_flags
// UF), bytes as they pass (received: from the client; sent: to it), closed at the end.
struct TcpSeries {
  std::string labels;
  std::atomic<uint64_t> opened{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> received_bytes{0};
  std::atomic<uint64_t> sent_bytes{0};
};

// Label text for the proxy itself: reporter and the source_* labels.
struct SourceInfo {
  std::string workload;  // e.g. "istio-ingressgateway", "apigateway-v1"
  std::string namespace_;
  std::string app;
  std::string version;
};
std::string SourceLabels(const SourceInfo& source);
// The same for requests this proxy receives for its own workload (a sidecar's inbound
// traffic): reporter="destination", and the caller unknown (no peer metadata).
std::string InboundSourceLabels();
// The destination_* labels of this proxy's own workload, for its inbound clusters.
v1::Endpoint SelfEndpoint(const SourceInfo& self, const std::string& pod_name);
// Label text for one endpoint of a cluster (destination_service*, destination_workload*,
// destination_app, destination_version, canonical service/revision). `endpoint` may be
// null (no endpoint was picked).
std::string DestinationLabels(const v1::Cluster* cluster, const v1::Endpoint* endpoint);
// DestinationLabels(nullptr, nullptr), made once.
const std::string& UnknownDestinationLabels();
// The workload (Deployment) name of a pod: "catalog-v1-5d9f8c7b6d-x2x7q" -> "catalog-v1".
std::string WorkloadOfPod(std::string_view pod_name);

class WorkerMetrics {
 public:
  explicit WorkerMetrics(std::string source_labels)
      : source_(std::move(source_labels)), inbound_source_(InboundSourceLabels()) {}
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  // On the worker thread. `destination` is the text DestinationLabels() made.
  // `inbound`: reported by the destination (this proxy's own workload was called).
  // `grpc`: a gRPC request (request_protocol="grpc"), whose `grpc_status` (from the
  // response's trailers or its trailers-only head; -1 when none came) is
  // grpc_response_status.
  void Record(std::string_view destination, int response_code, std::string_view response_flags,
              double duration_ms, uint64_t request_bytes, uint64_t response_bytes,
              bool inbound = false, bool grpc = false, int grpc_status = -1);

  // On the worker thread: the TCP series of a destination (DestinationLabels() text) and
  // response flags ("-" or e.g. "UF"); the pointer lives as long as this object, and its
  // counters are added to directly.
  TcpSeries* Tcp(std::string_view destination, std::string_view response_flags,
                 bool inbound = false);

  // Any thread: the series so far (they are never freed while this object lives).
  void Collect(std::vector<const Series*>* out) const;
  void CollectTcp(std::vector<const TcpSeries*>* out) const;

 private:
  std::string source_;
  std::string inbound_source_;
  std::string key_;                                 // reused lookup buffer
  std::unordered_map<std::string, Series*> index_;  // worker thread only
  mutable std::mutex mu_;                           // guards series_
  std::vector<std::unique_ptr<Series>> series_;
  std::unordered_map<std::string, TcpSeries*> tcp_index_;  // worker thread only
  std::vector<std::unique_ptr<TcpSeries>> tcp_series_;     // guarded by mu_
};

// Prometheus text for the series of all workers, summed by label set.
void RenderIstioMetrics(const std::vector<const WorkerMetrics*>& workers, std::string* out);

}  // namespace skiff::telemetry

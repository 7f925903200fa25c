#pragma once
// A worker: one thread, one epoll loop, its own SO_REUSEPORT listeners and its own upstream
// connection pools. Workers share nothing on the request path but the immutable Config.
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/net/event_loop.h"
#include "proxy/telemetry/telemetry.h"

namespace skiff::proxy {

struct ProxyOptions {
  std::string server_name = "skiff";
  std::chrono::milliseconds request_header_timeout{10000};
  std::chrono::milliseconds idle_timeout{300000};
  std::chrono::milliseconds upstream_connect_timeout{10000};
  std::chrono::milliseconds upstream_idle_timeout{60000};
  size_t max_buffer_bytes = 256 * 1024;       // per direction, before back-pressure
  telemetry::Telemetry* telemetry = nullptr;  // metrics, access log, tracing; null = off
};

// The published configuration. Workers poll version() once per loop turn and take the
// new Config under the mutex only when it changed.
class ConfigStore {
 public:
  void Publish(std::shared_ptr<const Config> config);
  [[nodiscard]] std::shared_ptr<const Config> Get() const;
  [[nodiscard]] uint64_t version() const { return version_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Config> config_;
  std::atomic<uint64_t> version_{0};
};

// Counters a worker updates on its own thread and the admin thread reads (relaxed).
struct WorkerStats {
  std::atomic<uint64_t> downstream_cx_total{0};
  std::atomic<uint64_t> downstream_cx_active{0};
  std::atomic<uint64_t> downstream_rq_total{0};
  std::atomic<uint64_t> rq_1xx{0}, rq_2xx{0}, rq_3xx{0}, rq_4xx{0}, rq_5xx{0};
  std::atomic<uint64_t> upstream_cx_total{0};
  std::atomic<uint64_t> upstream_cx_connect_fail{0};
  std::atomic<uint64_t> upstream_rq_reused{0};
  std::atomic<uint64_t> no_route{0}, no_healthy_upstream{0};
  std::atomic<uint64_t> fault_delays_injected{0}, fault_aborts_injected{0};
  std::atomic<uint64_t> mirror_requests_total{0};    // copies sent
  std::atomic<uint64_t> mirror_requests_skipped{0};  // body too large, or too many in flight
  std::atomic<uint64_t> mirror_requests_failed{0};   // connect or send failed
};

class ServerConnection;
class UpstreamConnection;
class ListenerHandler;
class MirrorRequest;

class Worker {
 public:
  Worker(int id, const ProxyOptions& options, ConfigStore* store);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void Start();
  void Stop();  // thread-safe; joins
  void Wake() { loop_.Wake(); }

  [[nodiscard]] const WorkerStats& stats() const { return stats_; }
  // Listener bind errors seen by this worker (thread-safe copy).
  [[nodiscard]] std::string last_error() const;

  // ---- used by connections, on the worker thread ----
  net::EventLoop& loop() { return loop_; }
  const ProxyOptions& options() const { return options_; }
  const std::shared_ptr<const Config>& config() const { return config_; }
  WorkerStats& mutable_stats() { return stats_; }
  uint64_t NextRandom();
  // This worker's telemetry (null when the proxy runs without).
  telemetry::WorkerTelemetry* telemetry() { return telemetry_; }

  // Upstream pool: an idle keep-alive connection to `key` or nullptr.
  UpstreamConnection* AcquireIdle(const std::string& key);
  void ReleaseIdle(UpstreamConnection* conn);
  void ForgetIdle(UpstreamConnection* conn);
  // Closes an upstream connection now and frees it after the current loop turn.
  void DestroyUpstream(UpstreamConnection* conn);
  // Load balancing state (per worker, reset on config change).
  size_t NextRoundRobin(const upstream::Cluster* cluster);
  int& ActiveRequests(const std::string& endpoint_key) { return active_[endpoint_key]; }

  void OnAccept(int fd, const ListenerConfig& listener, const std::string& peer);
  void Closed(ServerConnection* conn);

  // Requests waiting for a connection slot of a cluster at its max_connections. A waiter
  // is woken when a connection of that cluster closes or goes idle on this worker, and
  // polled every few milliseconds for slots freed by other workers.
  void AddPending(upstream::ClusterState* cluster, ServerConnection* conn);
  void RemovePending(upstream::ClusterState* cluster, ServerConnection* conn);
  // Fire-and-forget copy of a request (head and body) to one endpoint of `cluster`.
  void StartMirror(const upstream::Cluster& cluster, const std::string& request);
  void MirrorDone(MirrorRequest* mirror);

 private:
  void SyncConfig();
  void ReconcileListeners();
  void WakePending(upstream::ClusterState* cluster);
  void PollPending();

  int id_;
  ProxyOptions options_;
  ConfigStore* store_;
  net::EventLoop loop_;
  std::thread thread_;
  uint64_t seen_version_ = 0;
  std::shared_ptr<const Config> config_;
  std::unordered_map<std::string, std::unique_ptr<ListenerHandler>> listeners_;  // by addr:port
  std::unordered_map<std::string, std::vector<UpstreamConnection*>> idle_;
  std::unordered_map<const upstream::Cluster*, size_t> rr_;
  std::unordered_map<std::string, int> active_;
  std::unordered_map<ServerConnection*, std::unique_ptr<ServerConnection>> connections_;
  std::unordered_map<upstream::ClusterState*, std::deque<ServerConnection*>> pending_;
  net::Timer pending_timer_;
  std::unordered_set<MirrorRequest*> mirrors_;
  std::unordered_map<const upstream::Cluster*, size_t> mirror_rr_;
  WorkerStats stats_;
  telemetry::WorkerTelemetry* telemetry_ = nullptr;
  uint64_t rng_[2];
  mutable std::mutex error_mu_;
  std::string last_error_;
};

}  // namespace skiff::proxy

#pragma once
// A worker: one thread, one epoll loop, its own SO_REUSEPORT listeners, connection pool,
// load balancer and mirror writer. Workers share nothing on the request path but the
// immutable Config (and the atomics of the clusters' circuit breakers).
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "proxy/config/config.h"
#include "proxy/config/config_store.h"
#include "proxy/http/http1_codec.h"
#include "proxy/net/event_loop.h"
#include "proxy/net/listener.h"
#include "proxy/server/exchange.h"
#include "proxy/server/mirror.h"
#include "proxy/server/options.h"
#include "proxy/server/worker_context.h"
#include "proxy/telemetry/telemetry.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/load_balancer.h"

namespace skiff::proxy {

class ActiveConnection;

// Counters of one worker: its connections and requests, and its pool's.
struct WorkerCounters : WorkerStats, upstream::PoolStats {};

class Worker final : public WorkerContext {
 public:
  Worker(int id, const ProxyOptions& options, ConfigStore* store);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void Start();
  void Stop();  // thread-safe; joins
  void Wake() { loop_.Wake(); }
  // Thread-safe: stop accepting, finish what is in flight, close idle connections.
  void Drain();

  [[nodiscard]] const WorkerCounters& counters() const { return counters_; }
  // Errors of listeners that are configured but could not be bound (thread-safe copy);
  // empty when every configured listener is bound.
  [[nodiscard]] std::string last_error() const;
  // Connections still open (thread-safe).
  [[nodiscard]] uint64_t open_connections() const {
    return counters_.downstream_cx_active.load(std::memory_order_relaxed);
  }

  // WorkerContext
  net::Dispatcher& dispatcher() override { return loop_; }
  [[nodiscard]] const ProxyOptions& options() const override { return options_; }
  [[nodiscard]] const http::ServerCodecOptions& codec_options() const override {
    return codec_options_;
  }
  [[nodiscard]] const std::shared_ptr<const Config>& config() const override { return config_; }
  WorkerStats& stats() override { return counters_; }
  uint64_t NextRandom() override;
  telemetry::WorkerTelemetry* telemetry() override { return telemetry_; }
  upstream::ConnectionPool& pool() override { return pool_; }
  upstream::LoadBalancer& load_balancer() override { return lb_; }
  ShadowWriter& shadows() override { return mirrors_; }
  void ConnectionClosed(ActiveConnection* connection) override;
  void Adopt(std::unique_ptr<ActiveConnection> connection) override;
  ExchangePool* exchange_pool() override { return &exchange_pool_; }

 private:
  class ListenerSlot;
  void SyncConfig();
  void ReconcileListeners();
  void OnAccept(int fd, const std::string& address, uint32_t bind_port, const std::string& peer);

  int id_;
  ProxyOptions options_;
  http::ServerCodecOptions codec_options_;
  ConfigStore* store_;
  net::EventLoop loop_;
  std::thread thread_;
  uint64_t seen_version_ = 0;
  std::shared_ptr<const Config> config_;
  WorkerCounters counters_;
  uint64_t rng_[2];
  upstream::PoolOptions pool_options_;
  upstream::HttpConnectionPool pool_;
  upstream::LoadBalancer lb_;
  MirrorWriter mirrors_;
  std::unordered_map<std::string, std::unique_ptr<ListenerSlot>> listeners_;  // by addr:port
  std::unordered_map<ActiveConnection*, std::unique_ptr<ActiveConnection>> connections_;
  // Up to 256 finished exchanges for any connection's next stream (see ExchangePool).
  ExchangePool exchange_pool_{256};
  telemetry::WorkerTelemetry* telemetry_ = nullptr;
  std::atomic<bool> drain_requested_{false};
  bool draining_ = false;
  net::Clock::time_point last_fd_warning_{};
  mutable std::mutex error_mu_;
  std::map<std::string, std::string> listener_errors_;  // by listener name
};

}  // namespace skiff::proxy

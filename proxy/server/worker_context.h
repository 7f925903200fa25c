#pragma once
// What a connection and its exchanges may use of their worker: its dispatcher, settings,
// current config, counters, randomness, telemetry, connection pool, load balancer and
// shadow writer. Tests give exchanges a fake one.
#include <cstdint>
#include <memory>

#include "proxy/config/config.h"
#include "proxy/http/http1_codec.h"
#include "proxy/net/dispatcher.h"
#include "proxy/server/options.h"
#include "proxy/server/shadow_writer.h"
#include "proxy/telemetry/telemetry.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/load_balancer.h"

namespace skiff::proxy {

class ActiveConnection;
class ExchangePool;

class WorkerContext {
 public:
  virtual ~WorkerContext() = default;
  virtual net::Dispatcher& dispatcher() = 0;
  [[nodiscard]] virtual const ProxyOptions& options() const = 0;
  [[nodiscard]] virtual const http::ServerCodecOptions& codec_options() const = 0;
  // The config new requests start with (each keeps its own reference).
  [[nodiscard]] virtual const std::shared_ptr<const Config>& config() const = 0;
  virtual WorkerStats& stats() = 0;
  virtual uint64_t NextRandom() = 0;
  // Null when the proxy runs without telemetry.
  virtual telemetry::WorkerTelemetry* telemetry() = 0;
  virtual upstream::ConnectionPool& pool() = 0;
  virtual upstream::LoadBalancer& load_balancer() = 0;
  virtual ShadowWriter& shadows() = 0;
  // A connection is finished; the worker frees it after the current turn.
  virtual void ConnectionClosed(ActiveConnection* connection) = 0;
  // Takes over a connection made by another one (a sniffer handing its socket on).
  virtual void Adopt(std::unique_ptr<ActiveConnection> connection) = 0;
  // Finished exchanges shared by the worker's connections; null: none kept.
  virtual ExchangePool* exchange_pool() { return nullptr; }
};

}  // namespace skiff::proxy

#pragma once
// A TCP proxy for one captured connection: bytes both ways between the client and one
// upstream (a cluster's endpoint, or the connection's original destination), through
// bounded buffers with back-pressure; a half-close passes on after the buffered bytes;
// connect and idle timeouts. Used for non-HTTP ports, detected non-HTTP traffic, and
// Istio's ALLOW_ANY passthrough.
#include <memory>
#include <string>

#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/net/transport.h"
#include "proxy/server/active_connection.h"
#include "proxy/server/worker_context.h"
#include "proxy/telemetry/metrics.h"

namespace skiff::proxy {

class TcpProxy final : public net::IoHandler, public ActiveConnection {
 public:
  struct Target {
    std::string address;
    uint16_t port = 0;
    std::string source;  // local address to connect from (empty: any)
    // When set, an endpoint of this cluster (by the worker's load balancer) instead.
    const upstream::Cluster* cluster = nullptr;
  };
  // Takes the client socket `fd` and the bytes already read from it.
  TcpProxy(WorkerContext& context, int fd, std::string_view initial, const Target& target);
  // Takes the client's transport (a TLS server connection, which holds what was read).
  TcpProxy(WorkerContext& context, std::unique_ptr<net::Transport> client, std::string_view initial,
           const Target& target);
  ~TcpProxy() override;
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  void OnEvents(uint32_t events) override;  // the client side
  void Drain() override {}                  // a byte stream has no request boundary

 private:
  class UpstreamSide;
  void OnUpstreamEvents(uint32_t events);
  void Pump();
  // What the client's transport still holds (TLS records) is read on the next turn.
  void PumpPendingLater();
  void Close();
  void UpdateInterest();
  // Istio's TCP metrics: the connection's series once the upstream answered or failed.
  void OpenSeries(std::string_view response_flags);

  std::string tel_destination_;  // destination labels, until the series is chosen
  bool tel_inbound_ = false;
  telemetry::TcpSeries* series_ = nullptr;
  uint64_t unreported_received_ = 0;  // client bytes before the series was chosen

  WorkerContext& context_;
  std::unique_ptr<net::Transport> client_;
  std::unique_ptr<net::Transport> upstream_;
  std::unique_ptr<UpstreamSide> upstream_handler_;
  net::Buffer to_upstream_;
  net::Buffer to_client_;
  net::Timer timer_;  // connect timeout, then idle timeout
  net::Clock::time_point last_activity_;
  uint32_t client_interest_ = 0;
  uint32_t upstream_interest_ = 0;
  bool connected_ = false;
  bool client_eof_ = false;
  bool upstream_eof_ = false;
  bool upstream_shut_ = false;
  bool client_shut_ = false;
  bool pump_deferred_ = false;
  bool closed_ = false;    // events are ignored
  bool finished_ = false;  // Close() ran
};

}  // namespace skiff::proxy

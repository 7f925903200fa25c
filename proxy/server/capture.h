#pragma once
// Serving a captured connection (transparent capture, a sidecar's 15001 and 15006): its
// original destination decides between HTTP (the route table of that destination), a TCP
// proxy (a cluster, or the destination itself: Istio's passthrough), protocol detection
// for undeclared ports, or a refusal (REGISTRY_ONLY).
#include <memory>
#include <string>

#include "proxy/config/config.h"
#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/server/active_connection.h"
#include "proxy/server/exchange.h"
#include "proxy/server/tcp_proxy.h"
#include "proxy/server/worker_context.h"

namespace skiff::proxy {

// How one captured connection is served.
struct CaptureDecision {
  enum class Kind { kHttp, kTcp, kDetect, kRefuse };
  Kind kind = Kind::kHttp;
  DownstreamInfo http;       // kHttp / kDetect: the HTTP side
  TcpProxy::Target tcp;      // kTcp / kDetect: the TCP side
  bool passthrough = false;  // the TCP side goes to a destination outside the mesh
  bool refuse_tcp = false;   // kDetect: a connection that is not HTTP is refused
};

// Pure: what serves a connection accepted on `listener` whose original destination is
// address:port. `redirected` is false for a connection made to the listener itself.
// `random` picks among a tcp: route's weighted destinations.
CaptureDecision DecideCapture(const ListenerConfig& listener, const std::string& peer,
                              bool redirected, const std::string& address, uint16_t port,
                              uint64_t random = 0);

// Starts serving an accepted connection on a capture listener (or hands it to HTTP when it
// was not redirected). Takes ownership of `fd`.
std::unique_ptr<ActiveConnection> ServeCaptured(WorkerContext& context, int fd,
                                                const ListenerConfig& listener,
                                                const std::string& peer);

// Reads a connection's first bytes to tell HTTP/1 from anything else (undeclared ports),
// then hands the socket and the bytes on. Server-first protocols send nothing: after a
// short wait the connection is TCP.
class ProtocolSniffer final : public net::IoHandler, public ActiveConnection {
 public:
  static constexpr std::chrono::milliseconds kDetectTimeout{100};
  ProtocolSniffer(WorkerContext& context, int fd, CaptureDecision decision);
  ~ProtocolSniffer() override;
  ProtocolSniffer(const ProtocolSniffer&) = delete;
  ProtocolSniffer& operator=(const ProtocolSniffer&) = delete;
  void OnEvents(uint32_t events) override;
  void Drain() override {}

 private:
  void HandOff(bool http);

  WorkerContext& context_;
  int fd_;
  CaptureDecision decision_;
  net::Buffer in_;
  net::Timer timer_;
  bool done_ = false;
};

}  // namespace skiff::proxy

#pragma once
// The first step of a TLS listener: read the client's ClientHello (bounded in size and
// time), choose the filter chain by its server name (SNI), then hand the socket and the
// bytes on: to an HTTP connection over a TLS transport with the chain's certificate, or -
// for a PASSTHROUGH chain - to a TCP proxy to the cluster the SNI routes to, unterminated.
#include <memory>

#include "proxy/config/config.h"
#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/server/active_connection.h"
#include "proxy/server/exchange.h"
#include "proxy/server/worker_context.h"

namespace skiff::proxy {

class TlsInspector final : public net::IoHandler, public ActiveConnection {
 public:
  static constexpr size_t kMaxHelloBytes = 64 * 1024;
  TlsInspector(WorkerContext& context, int fd, const ListenerConfig& listener, DownstreamInfo info);
  ~TlsInspector() override;
  TlsInspector(const TlsInspector&) = delete;
  TlsInspector& operator=(const TlsInspector&) = delete;
  void OnEvents(uint32_t events) override;
  void Drain() override {}

 private:
  void Close();
  void HandOff(const std::string& sni);

  WorkerContext& context_;
  int fd_;
  const ListenerConfig& listener_;  // kept alive by info_.config
  DownstreamInfo info_;
  net::Buffer in_;
  net::Timer timer_;
  bool done_ = false;
};

}  // namespace skiff::proxy

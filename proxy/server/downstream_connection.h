#pragma once
// One client connection: its transport, its server codec (HTTP/1.1, or HTTP/2 when the
// client opens with the HTTP/2 preface or ALPN chose h2), and the Exchanges of the
// requests being served (HTTP/1: one at a time, pipelined requests wait in the input
// buffer, bounded; HTTP/2: one per stream). It owns the connection-level timers: the
// request-header timeout (408) and the idle timeout between requests. Output is bounded
// too: while the client does not read, no new request is parsed.
#include <memory>
#include <string>
#include <vector>

#include "proxy/http/http1_codec.h"
#include "proxy/http/http2_codec.h"
#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/net/tls.h"
#include "proxy/net/transport.h"
#include "proxy/server/active_connection.h"
#include "proxy/server/exchange.h"
#include "proxy/server/worker_context.h"

namespace skiff::proxy {

class DownstreamConnection final : public net::IoHandler,
                                   public http::ServerCodecCallbacks,
                                   public ActiveConnection {
 public:
  // Takes ownership of the accepted socket `fd`; `initial` are bytes already read from it
  // (protocol detection).
  DownstreamConnection(WorkerContext& context, int fd, DownstreamInfo info,
                       std::string_view initial = {});
  // Over another transport (TLS); `initial` is plaintext already read (none for TLS).
  DownstreamConnection(WorkerContext& context, std::unique_ptr<net::Transport> transport,
                       DownstreamInfo info, std::string_view initial = {});
  ~DownstreamConnection() override;
  DownstreamConnection(const DownstreamConnection&) = delete;
  DownstreamConnection& operator=(const DownstreamConnection&) = delete;

  void OnEvents(uint32_t events) override;
  // Graceful drain: finish the current exchange, then close (no keep-alive).
  void Drain() override;
  [[nodiscard]] bool idle() const {
    return !codec_->stream_active() && !codec_->head_in_progress();
  }

  // ServerCodecCallbacks
  http::RequestDecoder& NewStream(http::ResponseEncoder& encoder) override;
  void OnHeadStarted() override;
  void OnHeadComplete() override;
  void OnStreamComplete(http::RequestDecoder& decoder) override;
  void OnProtocolError(int status) override;
  void ScheduleDispatch() override;
  void OnOutput() override;

 private:
  void HandleEvents(uint32_t events);
  void OnReadable();
  void Flush();
  void UpdateInterest();
  void CloseNow();
  void ArmIdle();
  void RetireExchange(http::RequestDecoder& decoder);
  void RetireAll();
  // Plain connections: is this HTTP/2 (the preface) or HTTP/1? False while undecided.
  bool DecideProtocol();
  void UseHttp2();
  void DispatchInput();

  WorkerContext& context_;
  std::unique_ptr<net::Transport> transport_;
  DownstreamInfo info_;
  net::Buffer in_;
  net::Buffer out_;
  http::Http1ServerCodec h1_;
  std::unique_ptr<http::Http2ServerCodec> h2_;
  http::ServerCodec* codec_;  // &h1_ or h2_
  bool decided_ = false;      // the protocol is known
  bool first_bytes_ = false;  // an undecided connection's first bytes arrived
  // The running exchanges (destroyed before the codec they point to), and finished ones
  // kept for the next requests (never freed or reused while one of their calls runs).
  std::vector<std::unique_ptr<Exchange>> exchanges_;
  std::vector<std::unique_ptr<Exchange>> retired_;
  net::Timer timer_;  // header timeout, idle timeout, or the close drain
  uint32_t interest_ = 0;
  bool closed_ = false;
  bool draining_ = false;  // written all, half-closed: reading until the client closes
  bool dispatch_scheduled_ = false;
  bool flush_scheduled_ = false;
  bool in_handler_ = false;           // in OnEvents: it flushes at the end anyway
  net::TlsTransport* tls_ = nullptr;  // transport_ when it is TLS
  bool handshaking_ = false;
};

}  // namespace skiff::proxy

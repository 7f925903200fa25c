#include "proxy/server/tcp_proxy.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include "proxy/net/socket.h"

namespace skiff::proxy {

class TcpProxy::UpstreamSide final : public net::IoHandler {
 public:
  explicit UpstreamSide(TcpProxy& owner) : owner_(owner) {}
  void OnEvents(uint32_t events) override { owner_.OnUpstreamEvents(events); }

 private:
  TcpProxy& owner_;
};

TcpProxy::TcpProxy(WorkerContext& context, int fd, std::string_view initial, const Target& target)
    : TcpProxy(context, std::make_unique<net::PlainTransport>(fd), initial, target) {}

TcpProxy::TcpProxy(WorkerContext& context, std::unique_ptr<net::Transport> client,
                   std::string_view initial, const Target& target)
    : context_(context),
      client_(std::move(client)),
      upstream_handler_(std::make_unique<UpstreamSide>(*this)) {
  const int fd = client_->fd();
  auto& stats = context_.stats();
  stats.tcp_proxy_cx_total.fetch_add(1, std::memory_order_relaxed);
  stats.tcp_proxy_cx_active.fetch_add(1, std::memory_order_relaxed);
  to_upstream_.Append(initial);
  unreported_received_ = initial.size();
  last_activity_ = context_.dispatcher().now();
  client_interest_ = EPOLLIN | EPOLLRDHUP;
  context_.dispatcher().Add(fd, client_interest_, this);
  std::string address = target.address;
  uint16_t port = target.port;
  const upstream::Endpoint* e = nullptr;
  if (target.cluster != nullptr) {
    e = context_.load_balancer().Pick(*target.cluster, {}, nullptr, 0);
    if (e != nullptr) {
      address = e->address;
      port = e->port;
    }
    tel_inbound_ = target.cluster->inbound;
  }
  if (context_.telemetry() != nullptr && context_.telemetry()->owner->metrics()) {
    tel_destination_ = e != nullptr                ? e->telemetry_labels
                       : target.cluster != nullptr ? target.cluster->telemetry_labels
                                                   : telemetry::UnknownDestinationLabels();
  }
  std::string error;
  int ufd = net::ConnectNonBlocking(address, port, &error, target.source);
  if (ufd < 0) {
    stats.tcp_proxy_connect_fail.fetch_add(1, std::memory_order_relaxed);
    OpenSeries("UF");
    // Not from the constructor's caller's stack: close after this turn.
    context_.dispatcher().Defer([this] { Close(); });
    closed_ = true;
    return;
  }
  upstream_ = std::make_unique<net::PlainTransport>(ufd);
  upstream_interest_ = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  context_.dispatcher().Add(ufd, upstream_interest_, upstream_handler_.get());
  timer_.SetCallback([this] {
    if (!connected_) {
      context_.stats().tcp_proxy_connect_fail.fetch_add(1, std::memory_order_relaxed);
      OpenSeries("UF");
      Close();
      return;
    }
    auto idle = context_.dispatcher().now() - last_activity_;
    auto limit = context_.options().idle_timeout;
    if (idle >= limit) {
      Close();
    } else {
      context_.dispatcher().Schedule(
          &timer_, std::chrono::duration_cast<std::chrono::milliseconds>(limit - idle) +
                       std::chrono::milliseconds(1));
    }
  });
  context_.dispatcher().Schedule(&timer_, context_.options().upstream_connect_timeout);
  PumpPendingLater();  // a TLS client's ClientHello was read before this connection existed
}

void TcpProxy::PumpPendingLater() {
  if (closed_ || pump_deferred_ || client_eof_ || !client_->has_pending_input() ||
      to_upstream_.size() >= context_.options().max_buffer_bytes) {
    return;
  }
  pump_deferred_ = true;
  context_.dispatcher().Defer([this] {
    pump_deferred_ = false;
    if (!closed_) {
      Pump();
    }
  });
}

TcpProxy::~TcpProxy() {
  timer_.Cancel();
  if (client_interest_ != 0) {
    context_.dispatcher().Remove(client_->fd());
  }
  if (upstream_ != nullptr && upstream_interest_ != 0) {
    context_.dispatcher().Remove(upstream_->fd());
  }
  context_.stats().tcp_proxy_cx_active.fetch_sub(1, std::memory_order_relaxed);
}

void TcpProxy::OpenSeries(std::string_view response_flags) {
  if (tel_destination_.empty() || series_ != nullptr) {
    return;
  }
  series_ = context_.telemetry()->metrics.Tcp(tel_destination_, response_flags, tel_inbound_);
  series_->opened.fetch_add(1, std::memory_order_relaxed);
  series_->received_bytes.fetch_add(unreported_received_, std::memory_order_relaxed);
  tel_destination_.clear();
  tel_destination_.shrink_to_fit();
}

void TcpProxy::Close() {
  if (finished_) {
    return;
  }
  finished_ = true;
  if (series_ != nullptr) {
    series_->closed.fetch_add(1, std::memory_order_relaxed);
  }
  closed_ = true;
  timer_.Cancel();
  if (client_interest_ != 0) {
    context_.dispatcher().Remove(client_->fd());
    client_interest_ = 0;
  }
  if (upstream_ != nullptr && upstream_interest_ != 0) {
    context_.dispatcher().Remove(upstream_->fd());
    upstream_interest_ = 0;
  }
  context_.ConnectionClosed(this);
}

void TcpProxy::OnEvents(uint32_t events) {
  if (closed_) {
    return;
  }
  if ((events & (EPOLLERR | EPOLLHUP)) != 0 && (events & EPOLLIN) == 0) {
    Close();
    return;
  }
  Pump();
}

void TcpProxy::OnUpstreamEvents(uint32_t events) {
  if (closed_) {
    return;
  }
  if (!connected_) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(upstream_->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP)) != 0) {
      context_.stats().tcp_proxy_connect_fail.fetch_add(1, std::memory_order_relaxed);
      OpenSeries("UF");
      Close();
      return;
    }
    if ((events & EPOLLOUT) == 0) {
      return;
    }
    connected_ = true;
    OpenSeries("-");
    context_.dispatcher().Schedule(&timer_, context_.options().idle_timeout);
  }
  Pump();
}

void TcpProxy::Pump() {
  const size_t limit = context_.options().max_buffer_bytes;
  bool moved = false;
  // Client -> upstream.
  for (int i = 0; i < 4 && !client_eof_ && to_upstream_.size() < limit; ++i) {
    bool filled = false;
    ssize_t n = client_->Read(&to_upstream_, &filled);
    if (n == -1) {
      break;
    }
    if (n == -2 && !client_->handshake_done()) {
      context_.stats().tls_handshake_error.fetch_add(1, std::memory_order_relaxed);
      Close();
      return;
    }
    if (n <= 0) {
      client_eof_ = true;
      break;
    }
    if (series_ != nullptr) {
      series_->received_bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    } else {
      unreported_received_ += static_cast<uint64_t>(n);
    }
    moved = true;
    if (!filled) {
      break;
    }
  }
  // Upstream -> client.
  for (int i = 0; connected_ && i < 4 && !upstream_eof_ && to_client_.size() < limit; ++i) {
    bool filled = false;
    ssize_t n = upstream_->Read(&to_client_, &filled);
    if (n == -1) {
      break;
    }
    if (n <= 0) {
      upstream_eof_ = true;
      break;
    }
    if (series_ != nullptr) {
      series_->sent_bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    }
    moved = true;
    if (!filled) {
      break;
    }
  }
  if (connected_ && !to_upstream_.empty()) {
    if (upstream_->Write(&to_upstream_) < 0) {
      Close();
      return;
    }
  }
  if (!to_client_.empty() || client_->wants_write()) {
    if (client_->Write(&to_client_) < 0) {
      Close();
      return;
    }
  }
  if (moved) {
    last_activity_ = context_.dispatcher().now();
  }
  // A half-close passes on once what came before it is written.
  if (client_eof_ && connected_ && to_upstream_.empty() && !upstream_shut_) {
    upstream_shut_ = true;
    upstream_->ShutdownWrite();
  }
  if (upstream_eof_ && to_client_.empty() && !client_->wants_write() && !client_shut_) {
    client_shut_ = true;
    client_->ShutdownWrite();
  }
  if (client_eof_ && upstream_eof_ && to_client_.empty() && to_upstream_.empty() &&
      !client_->wants_write()) {
    Close();
    return;
  }
  UpdateInterest();
  PumpPendingLater();
}

void TcpProxy::UpdateInterest() {
  const size_t limit = context_.options().max_buffer_bytes;
  uint32_t c = (!client_eof_ && to_upstream_.size() < limit ? uint32_t{EPOLLIN | EPOLLRDHUP} : 0u) |
               (to_client_.empty() && !client_->wants_write() ? 0u : uint32_t{EPOLLOUT});
  if (c == 0) {
    c = EPOLLERR;  // stay registered (interest 0 would read as "removed")
  }
  if (c != client_interest_) {
    client_interest_ = c;
    context_.dispatcher().Modify(client_->fd(), c, this);
  }
  uint32_t u =
      !connected_
          ? uint32_t{EPOLLOUT | EPOLLIN | EPOLLRDHUP}
          : ((!upstream_eof_ && to_client_.size() < limit ? uint32_t{EPOLLIN | EPOLLRDHUP} : 0u) |
             (to_upstream_.empty() ? 0u : uint32_t{EPOLLOUT}));
  if (u == 0) {
    u = EPOLLERR;
  }
  if (u != upstream_interest_) {
    upstream_interest_ = u;
    context_.dispatcher().Modify(upstream_->fd(), u, upstream_handler_.get());
  }
}

}  // namespace skiff::proxy

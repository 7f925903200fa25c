#include "proxy/server/capture.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>

#include "proxy/http/sniff.h"
#include "proxy/net/socket.h"
#include "proxy/server/downstream_connection.h"

namespace skiff::proxy {

namespace {
DownstreamInfo BaseInfo(const ListenerConfig& l, const std::string& peer) {
  DownstreamInfo info;
  info.peer = peer;
  info.listener_address = l.address;
  info.listener_bind_port = l.bind_port;
  info.listener_port = l.port;
  return info;
}
}  // namespace

CaptureDecision DecideCapture(const ListenerConfig& l, const std::string& peer, bool redirected,
                              const std::string& address, uint16_t port, uint64_t random) {
  CaptureDecision d;
  d.http = BaseInfo(l, peer);
  if (!redirected || l.capture == v1::CAPTURE_NONE) {
    return d;  // a client using the listener directly (an HTTP proxy): HTTP as configured
  }
  d.http.original_address = address;
  d.http.original_port = port;
  auto tcp_to = [&d](const upstream::Cluster* c, const std::string& addr, uint16_t p) {
    d.tcp = TcpProxy::Target{addr, p, c != nullptr ? c->source_address : std::string(),
                             c != nullptr && !c->original_destination ? c : nullptr};
  };
  if (l.capture == v1::CAPTURE_INBOUND) {
    d.http.inbound = true;
    auto it = l.inbound_ports.find(port);
    // The app is reached at the original destination, from 127.0.0.6 (as Istio), which
    // the pod's capture rules let through.
    TcpProxy::Target passthrough{
        address, port, address.find(':') == std::string::npos ? "127.0.0.6" : std::string()};
    if (it == l.inbound_ports.end()) {
      d.kind = CaptureDecision::Kind::kTcp;
      d.tcp = passthrough;
      d.passthrough = true;
      return d;
    }
    const auto& p = it->second;
    d.http.route_table = p.route_table;
    if (p.tcp_cluster != nullptr) {
      tcp_to(p.tcp_cluster, address, port);
    } else {
      d.tcp = passthrough;
    }
    switch (p.protocol) {
      case v1::PROTOCOL_HTTP:
        d.kind =
            p.route_table != nullptr ? CaptureDecision::Kind::kHttp : CaptureDecision::Kind::kTcp;
        break;
      case v1::PROTOCOL_TCP:
        d.kind = CaptureDecision::Kind::kTcp;
        break;
      default:
        d.kind =
            p.route_table != nullptr ? CaptureDecision::Kind::kDetect : CaptureDecision::Kind::kTcp;
        break;
    }
    return d;
  }
  // Outbound.
  auto it = l.services.find(address + ":" + std::to_string(port));
  if (it == l.services.end() && std::find(l.host_routed_ports.begin(), l.host_routed_ports.end(),
                                          port) != l.host_routed_ports.end()) {
    // HTTP by Host (a host without an address may be asked for); anything else passes
    // through, or is refused with registry_only.
    d.kind = CaptureDecision::Kind::kDetect;
    d.http.host_routed = true;
    d.tcp = TcpProxy::Target{address, port, {}};
    d.refuse_tcp = l.registry_only;
    return d;
  }
  if (it == l.services.end()) {
    if (l.registry_only) {
      d.kind = CaptureDecision::Kind::kRefuse;
      return d;
    }
    d.kind = CaptureDecision::Kind::kTcp;
    d.tcp = TcpProxy::Target{address, port, {}};
    d.passthrough = true;
    return d;
  }
  const auto& s = it->second;
  tcp_to(s.tcp_route ? s.tcp_route->Pick(random) : s.tcp_cluster, address, port);
  switch (s.protocol) {
    case v1::PROTOCOL_HTTP:
      d.kind = CaptureDecision::Kind::kHttp;
      break;
    case v1::PROTOCOL_TCP:
      d.kind = CaptureDecision::Kind::kTcp;
      break;
    default:
      d.kind = CaptureDecision::Kind::kDetect;
      break;
  }
  return d;
}

std::unique_ptr<ActiveConnection> ServeCaptured(WorkerContext& context, int fd,
                                                const ListenerConfig& listener,
                                                const std::string& peer) {
  std::string dst;
  uint16_t dport = 0;
  bool redirected = false;
  if (listener.capture != v1::CAPTURE_NONE && net::OriginalDestination(fd, &dst, &dport)) {
    // A connection made to the listener itself has itself as its "original" destination.
    std::string local;
    uint16_t lport = 0;
    redirected = !(net::LocalAddress(fd, &local, &lport) && local == dst && lport == dport);
  }
  CaptureDecision d = DecideCapture(listener, peer, redirected, dst, dport, context.NextRandom());
  auto& stats = context.stats();
  if (d.passthrough) {
    stats.capture_passthrough_total.fetch_add(1, std::memory_order_relaxed);
  }
  d.http.config = context.config();
  switch (d.kind) {
    case CaptureDecision::Kind::kHttp:
      return std::make_unique<DownstreamConnection>(context, fd, std::move(d.http));
    case CaptureDecision::Kind::kTcp:
      return std::make_unique<TcpProxy>(context, fd, std::string_view(), d.tcp);
    case CaptureDecision::Kind::kDetect:
      return std::make_unique<ProtocolSniffer>(context, fd, std::move(d));
    case CaptureDecision::Kind::kRefuse:
      break;
  }
  stats.capture_refused_total.fetch_add(1, std::memory_order_relaxed);
  ::close(fd);
  return nullptr;
}

ProtocolSniffer::ProtocolSniffer(WorkerContext& context, int fd, CaptureDecision decision)
    : context_(context), fd_(fd), decision_(std::move(decision)) {
  timer_.SetCallback([this] { HandOff(false); });
  context_.dispatcher().Add(fd_, EPOLLIN | EPOLLRDHUP, this);
  context_.dispatcher().Schedule(&timer_, kDetectTimeout);
}

ProtocolSniffer::~ProtocolSniffer() {
  timer_.Cancel();
  if (!done_) {
    context_.dispatcher().Remove(fd_);
    ::close(fd_);
  }
}

void ProtocolSniffer::OnEvents(uint32_t /*events*/) {
  if (done_) {
    return;
  }
  bool filled = false;
  ssize_t n = in_.ReadFrom(fd_, &filled);
  if (n == -1) {
    return;
  }
  if (n <= 0) {
    // The client closed before it said anything: nothing to serve.
    done_ = true;
    timer_.Cancel();
    context_.dispatcher().Remove(fd_);
    ::close(fd_);
    context_.ConnectionClosed(this);
    return;
  }
  switch (http::SniffHttp1(in_.view())) {
    case http::Sniffed::kHttp1:
    case http::Sniffed::kHttp2:  // the HTTP connection reads the preface again: HTTP/2
      HandOff(true);
      return;
    case http::Sniffed::kOther:
      HandOff(false);
      return;
    case http::Sniffed::kNeedMore:
      return;
  }
}

void ProtocolSniffer::HandOff(bool http) {
  if (done_) {
    return;
  }
  done_ = true;
  timer_.Cancel();
  auto& stats = context_.stats();
  (http ? stats.capture_sniffed_http : stats.capture_sniffed_tcp)
      .fetch_add(1, std::memory_order_relaxed);
  std::unique_ptr<ActiveConnection> next;
  if (http) {
    decision_.http.registered = true;  // re-pointed, not removed and added again
    next = std::make_unique<DownstreamConnection>(context_, fd_, std::move(decision_.http),
                                                  in_.view());
  } else if (decision_.refuse_tcp) {
    stats.capture_refused_total.fetch_add(1, std::memory_order_relaxed);
    context_.dispatcher().Remove(fd_);
    ::close(fd_);
    context_.ConnectionClosed(this);
    return;
  } else {
    if (decision_.http.host_routed) {
      stats.capture_passthrough_total.fetch_add(1, std::memory_order_relaxed);
    }
    context_.dispatcher().Remove(fd_);
    next = std::make_unique<TcpProxy>(context_, fd_, in_.view(), decision_.tcp);
  }
  context_.Adopt(std::move(next));
  context_.ConnectionClosed(this);
}

}  // namespace skiff::proxy

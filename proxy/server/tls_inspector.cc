#include "proxy/server/tls_inspector.h"

#include <sys/epoll.h>
#include <unistd.h>

#include "proxy/net/tls.h"
#include "proxy/server/downstream_connection.h"
#include "proxy/server/tcp_proxy.h"

namespace skiff::proxy {

TlsInspector::TlsInspector(WorkerContext& context, int fd, const ListenerConfig& listener,
                           DownstreamInfo info)
    : context_(context), fd_(fd), listener_(listener), info_(std::move(info)) {
  // The ClientHello, like a request head, has the header timeout to arrive.
  timer_.SetCallback([this] {
    context_.stats().tls_handshake_timeout.fetch_add(1, std::memory_order_relaxed);
    Close();
  });
  context_.dispatcher().Add(fd_, EPOLLIN | EPOLLRDHUP, this);
  context_.dispatcher().Schedule(&timer_, context_.options().request_header_timeout);
}

TlsInspector::~TlsInspector() {
  timer_.Cancel();
  if (!done_) {
    context_.dispatcher().Remove(fd_);
    ::close(fd_);
  }
}

void TlsInspector::Close() {
  if (done_) {
    return;
  }
  done_ = true;
  timer_.Cancel();
  context_.dispatcher().Remove(fd_);
  ::close(fd_);
  context_.ConnectionClosed(this);
}

void TlsInspector::OnEvents(uint32_t /*events*/) {
  if (done_) {
    return;
  }
  bool filled = false;
  ssize_t n = in_.ReadFrom(fd_, &filled);
  if (n == -1) {
    return;
  }
  if (n <= 0) {
    Close();
    return;
  }
  auto hello = net::ParseClientHello(in_.view());
  switch (hello.status) {
    case net::ClientHelloInfo::Status::kIncomplete:
      if (in_.size() > kMaxHelloBytes) {
        context_.stats().tls_handshake_error.fetch_add(1, std::memory_order_relaxed);
        Close();
      }
      return;
    case net::ClientHelloInfo::Status::kNotTls:
      context_.stats().tls_handshake_error.fetch_add(1, std::memory_order_relaxed);
      Close();  // plain bytes on a TLS port
      return;
    case net::ClientHelloInfo::Status::kDone:
      HandOff(hello.sni);
      return;
  }
}

void TlsInspector::HandOff(const std::string& sni) {
  const FilterChainConfig* chain = listener_.ChainFor(sni);
  if (chain == nullptr) {
    Close();
    return;
  }
  std::unique_ptr<ActiveConnection> next;
  if (chain->tls == nullptr || chain->tcp_route) {
    // Bytes to a cluster: PASSTHROUGH by the first route whose SNI hosts match, unterminated;
    // or a TLS server that terminates into a tcp: route, decrypted.
    const upstream::Cluster* cluster = nullptr;
    if (chain->tls != nullptr) {
      cluster =
          chain->tcp_route->Pick(chain->tcp_route->total_weight > 0 ? context_.NextRandom() : 0);
    }
    for (size_t i = 0; chain->tls == nullptr && i < chain->sni_routes.size(); ++i) {
      const auto& r = chain->sni_routes[i];
      bool match = false;
      for (const auto& e : r.exact) {
        match = match || e == sni;
      }
      for (const auto& s : r.suffixes) {
        match = match ||
                (sni.size() > s.size() && sni.compare(sni.size() - s.size(), s.size(), s) == 0);
      }
      if (!match) {
        continue;
      }
      cluster = r.Pick(r.total_weight > 0 ? context_.NextRandom() : 0);
      if (cluster != nullptr || r.total_weight > 0) {
        break;
      }
    }
    if (cluster == nullptr) {
      context_.stats().tls_no_route.fetch_add(1, std::memory_order_relaxed);
      Close();
      return;
    }
    done_ = true;
    timer_.Cancel();
    context_.dispatcher().Remove(fd_);
    TcpProxy::Target target;
    target.cluster = cluster;
    target.source = cluster->source_address;
    if (chain->tls == nullptr) {
      next = std::make_unique<TcpProxy>(context_, fd_, in_.view(), target);
    } else {
      next = std::make_unique<TcpProxy>(context_,
                                        net::TlsTransport::Server(fd_, chain->tls, in_.view()),
                                        std::string_view(), target);
    }
  } else {
    done_ = true;
    timer_.Cancel();
    info_.route_table = chain->route_table;
    info_.sni = sni;
    info_.registered = true;
    next = std::make_unique<DownstreamConnection>(
        context_, net::TlsTransport::Server(fd_, chain->tls, in_.view()), std::move(info_));
  }
  context_.Adopt(std::move(next));
  context_.ConnectionClosed(this);
}

}  // namespace skiff::proxy

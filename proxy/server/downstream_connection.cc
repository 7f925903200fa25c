#include "proxy/server/downstream_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace skiff::proxy {

namespace {
constexpr std::chrono::milliseconds kCloseDrain{2000};
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kMaxRetired = 16;  // finished exchanges kept for reuse (HTTP/2)
}  // namespace

DownstreamConnection::DownstreamConnection(WorkerContext& context, int fd, DownstreamInfo info,
                                           std::string_view initial)
    : DownstreamConnection(context, std::make_unique<net::PlainTransport>(fd), std::move(info),
                           initial) {}

DownstreamConnection::DownstreamConnection(WorkerContext& context,
                                           std::unique_ptr<net::Transport> transport,
                                           DownstreamInfo info, std::string_view initial)
    : context_(context),
      transport_(std::move(transport)),
      info_(std::move(info)),
      h1_(*this, in_, out_, context.codec_options()),
      codec_(&h1_) {
  const int fd = transport_->fd();
  in_.Append(initial);
  info_.secure = transport_->secure();
  tls_ = dynamic_cast<net::TlsTransport*>(transport_.get());
  handshaking_ = tls_ != nullptr;
  timer_.SetCallback([this] {
    if (handshaking_) {
      context_.stats().tls_handshake_timeout.fetch_add(1, std::memory_order_relaxed);
      CloseNow();  // the TLS handshake did not finish in time
    } else if (draining_ || !decided_) {
      CloseNow();  // closing, or the first bytes did not say which protocol in time
    } else if (codec_->head_in_progress()) {
      // The request head did not arrive in time.
      auto& s = context_.stats();
      s.downstream_rq_total.fetch_add(1, std::memory_order_relaxed);
      s.rq_4xx.fetch_add(1, std::memory_order_relaxed);
      codec_->RejectHead(408, "request timeout");
      Flush();
    } else if (!codec_->stream_active()) {
      CloseNow();  // idle
    }
  });
  interest_ = EPOLLIN | EPOLLRDHUP;
  if (info_.registered) {
    context_.dispatcher().Modify(fd, interest_, this);
  } else {
    context_.dispatcher().Add(fd, interest_, this);
  }
  if (handshaking_) {
    context_.dispatcher().Schedule(&timer_, context_.options().request_header_timeout);
    if (tls_->has_buffered_input()) {
      // The ClientHello was read before this connection existed: answer it now.
      context_.dispatcher().Defer([this] {
        if (!closed_) {
          in_handler_ = true;
          OnReadable();
          in_handler_ = false;
        }
      });
    }
  } else {
    ArmIdle();
  }
  if (!in_.empty()) {
    ScheduleDispatch();
  }
}

DownstreamConnection::~DownstreamConnection() {
  timer_.Cancel();
  if (!closed_) {
    context_.dispatcher().Remove(transport_->fd());
  }
  if (codec_->stream_active()) {
    codec_->OnConnectionClosed();
  }
  exchanges_.clear();
  // Nothing of this connection is on the stack now: its finished exchanges can serve
  // other connections.
  if (ExchangePool* pool = context_.exchange_pool(); pool != nullptr) {
    for (auto& e : retired_) {
      pool->Give(std::move(e));
    }
  }
  retired_.clear();
}

void DownstreamConnection::ArmIdle() {
  context_.dispatcher().Schedule(&timer_, context_.options().idle_timeout);
}

http::RequestDecoder& DownstreamConnection::NewStream(http::ResponseEncoder& encoder) {
  std::unique_ptr<Exchange> exchange;
  if (!retired_.empty()) {
    // The codec starts a stream only after the previous one's calls have returned.
    exchange = std::move(retired_.back());
    retired_.pop_back();
    exchange->Recycle(info_, encoder);
  } else if (ExchangePool* pool = context_.exchange_pool();
             pool != nullptr && (exchange = pool->Take()) != nullptr) {
    exchange->Recycle(info_, encoder);
  } else {
    exchange = std::make_unique<Exchange>(context_, info_, encoder);
  }
  Exchange& ref = *exchange;
  exchanges_.push_back(std::move(exchange));
  return ref;
}

bool DownstreamConnection::DecideProtocol() {
  if (decided_) {
    return true;
  }
  if (tls_ != nullptr) {
    if (handshaking_) {
      return false;
    }
    decided_ = true;
    if (tls_->alpn() == "h2") {
      UseHttp2();
    }
    return true;
  }
  std::string_view v = in_.view();
  size_t n = std::min(v.size(), kHttp2Preface.size());
  if (v.substr(0, n) != kHttp2Preface.substr(0, n)) {
    decided_ = true;  // HTTP/1
    return true;
  }
  if (n < kHttp2Preface.size()) {
    if (n > 0 && !first_bytes_) {
      first_bytes_ = true;  // a preface in pieces: it has the header timeout to arrive
      context_.dispatcher().Schedule(&timer_, context_.options().request_header_timeout);
    }
    return false;
  }
  decided_ = true;
  UseHttp2();
  return true;
}

void DownstreamConnection::UseHttp2() {
  h2_ = std::make_unique<http::Http2ServerCodec>(*this, in_, out_, context_.codec_options(),
                                                 context_.stats().http2);
  codec_ = h2_.get();
  context_.stats().downstream_cx_http2_total.fetch_add(1, std::memory_order_relaxed);
  ArmIdle();
}

void DownstreamConnection::DispatchInput() {
  if (!decided_ && !DecideProtocol()) {
    return;
  }
  codec_->Dispatch();
}

void DownstreamConnection::OnHeadStarted() {
  // The first bytes of a request start the header timeout (replacing the idle timeout);
  // later bytes do not extend it, so a slow sender gets 408.
  context_.dispatcher().Schedule(&timer_, context_.options().request_header_timeout);
}

void DownstreamConnection::OnHeadComplete() { timer_.Cancel(); }

void DownstreamConnection::OnStreamComplete(http::RequestDecoder& decoder) {
  RetireExchange(decoder);
  if (!codec_->stream_active() && !codec_->close_after_flush()) {
    ArmIdle();
  }
}

void DownstreamConnection::OnProtocolError(int status) {
  auto& s = context_.stats();
  s.downstream_rq_total.fetch_add(1, std::memory_order_relaxed);
  (status >= 500 ? s.rq_5xx : s.rq_4xx).fetch_add(1, std::memory_order_relaxed);
}

void DownstreamConnection::ScheduleDispatch() {
  if (closed_ || dispatch_scheduled_) {
    return;
  }
  dispatch_scheduled_ = true;
  context_.dispatcher().Defer([this] {
    dispatch_scheduled_ = false;
    if (!closed_) {
      in_handler_ = true;
      DispatchInput();
      in_handler_ = false;
      Flush();
    }
  });
}

void DownstreamConnection::OnOutput() {
  if (in_handler_ || flush_scheduled_ || closed_) {
    return;
  }
  // Output from the upstream side of an exchange: written once, after this turn's events.
  flush_scheduled_ = true;
  context_.dispatcher().Defer([this] {
    flush_scheduled_ = false;
    Flush();
  });
}

void DownstreamConnection::RetireExchange(http::RequestDecoder& decoder) {
  for (size_t i = 0; i < exchanges_.size(); ++i) {
    if (static_cast<http::RequestDecoder*>(exchanges_[i].get()) == &decoder) {
      std::unique_ptr<Exchange> done = std::move(exchanges_[i]);
      exchanges_[i] = std::move(exchanges_.back());
      exchanges_.pop_back();
      if (retired_.size() < kMaxRetired) {
        // Its calls may be on the stack (HTTP/1): kept, for the next request, rather
        // than freed now.
        retired_.push_back(std::move(done));
      } else if (ExchangePool* pool = context_.exchange_pool(); pool != nullptr) {
        // HTTP/2 only gets here, and it ends a stream outside the stream's own calls.
        pool->Give(std::move(done));
      }
      return;
    }
  }
}

void DownstreamConnection::RetireAll() {
  while (!exchanges_.empty()) {
    RetireExchange(*exchanges_.back());
  }
}

void DownstreamConnection::Drain() {
  codec_->Drain();
  Flush();
}

void DownstreamConnection::CloseNow() {
  if (closed_) {
    return;
  }
  closed_ = true;
  timer_.Cancel();
  // No EPOLL_CTL_DEL: the socket is closed when the worker destroys this connection, at the
  // end of this loop turn and before the next epoll_wait, and closing it deregisters it
  // (the proxy never duplicates a client socket). Until then OnEvents ignores events.
  codec_->OnConnectionClosed();  // resets the exchanges that are running
  RetireAll();
  context_.ConnectionClosed(this);
}

void DownstreamConnection::UpdateInterest() {
  if (closed_ || draining_) {
    return;
  }
  // Not reading also means not asking for RDHUP, which would fire on every turn.
  bool want_read = codec_->WantsRead();
  // Writable events while bytes wait: ours, or the transport's own (TLS records the socket
  // did not take; the plaintext they carry has already left out_).
  bool want_write = !out_.empty() || transport_->wants_write();
  uint32_t ev =
      (want_read ? uint32_t{EPOLLIN | EPOLLRDHUP} : 0u) | (want_write ? uint32_t{EPOLLOUT} : 0u);
  if (ev != interest_) {
    interest_ = ev;
    context_.dispatcher().Modify(transport_->fd(), ev, this);
  }
}

void DownstreamConnection::Flush() {
  if (closed_) {
    return;
  }
  for (int round = 0; round < 8; ++round) {
    codec_->PrepareOutput();
    bool more = false;
    if (!out_.empty() || transport_->wants_write()) {
      ssize_t n = transport_->Write(&out_);
      if (n < 0) {
        CloseNow();
        return;
      }
      if (n > 0) {
        codec_->OnOutputDrained();
        if (closed_) {
          return;
        }
      }
      // HTTP/2: the codec may hold more frames than the buffer took.
      more = h2_ != nullptr && out_.empty() && n > 0;
    }
    if (more) {
      continue;
    }
    // HTTP/1: requests that waited for the client to read its responses.
    if (round == 0 && h2_ == nullptr && decided_ && !codec_->stream_active() && !in_.empty() &&
        !codec_->close_after_flush() && out_.size() <= context_.codec_options().max_buffer_bytes) {
      codec_->Dispatch();
      continue;
    }
    break;
  }
  if (codec_->abort_connection() && !codec_->stream_active()) {
    // A response only the close delimits broke off: reset, so that it is not taken whole.
    linger lg{1, 0};
    ::setsockopt(transport_->fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    CloseNow();
    return;
  }
  if (out_.empty() && !transport_->wants_write() && codec_->close_after_flush() &&
      !codec_->stream_active() && codec_->peer_done() && in_.empty() && !draining_) {
    // The client said this was its last request and sent nothing after it: no input can be
    // cut off, so close at once (as nginx does) instead of waiting for its FIN.
    transport_->SendCloseNotify();
    CloseNow();
    return;
  }
  if (out_.empty() && !transport_->wants_write() && codec_->close_after_flush() &&
      !codec_->stream_active()) {
    // Half-close and read what the client still sends until it closes (bounded by a
    // timer): closing with unread input would reset the connection and could destroy the
    // response before the client reads it.
    if (!draining_) {
      draining_ = true;
      transport_->ShutdownWrite();
      context_.dispatcher().Schedule(&timer_, kCloseDrain);
      interest_ = EPOLLIN | EPOLLRDHUP;
      context_.dispatcher().Modify(transport_->fd(), interest_, this);
    }
    return;
  }
  UpdateInterest();
}

void DownstreamConnection::OnEvents(uint32_t events) {
  if (closed_) {
    return;
  }
  in_handler_ = true;
  HandleEvents(events);
  in_handler_ = false;
}

void DownstreamConnection::HandleEvents(uint32_t events) {
  if ((events & EPOLLOUT) != 0 && !draining_) {
    Flush();
    if (closed_) {
      return;
    }
  }
  if ((events & (EPOLLHUP | EPOLLERR)) != 0 && (interest_ & EPOLLIN) == 0 && !draining_) {
    CloseNow();  // the peer is gone while we were not reading
    return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    OnReadable();
  }
}

void DownstreamConnection::OnReadable() {
  if (draining_) {
    char buf[16384];
    for (int i = 0; i < 64; ++i) {
      ssize_t n = ::read(transport_->fd(), buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        CloseNow();
        return;
      }
      if (n < 0) {
        return;
      }
    }
    return;
  }
  if (!codec_->WantsRead()) {
    UpdateInterest();
    return;
  }
  const size_t limit = context_.codec_options().max_buffer_bytes;
  for (int i = 0; i < 4 && !closed_; ++i) {
    bool filled = false;
    ssize_t n = transport_->Read(&in_, &filled);
    if (n == -1) {
      break;
    }
    if (n <= 0) {
      if (handshaking_ && n == -2) {
        context_.stats().tls_handshake_error.fetch_add(1, std::memory_order_relaxed);
      }
      CloseNow();  // the client closed (or the connection broke)
      return;
    }
    if (!filled || in_.size() >= limit) {
      break;
    }
  }
  if (handshaking_ && tls_->handshake_done()) {
    handshaking_ = false;
    context_.stats().tls_handshakes.fetch_add(1, std::memory_order_relaxed);
    if (tls_->peer()) {
      info_.peer_certificate = *tls_->peer();
    }
    ArmIdle();
  }
  DispatchInput();
  Flush();
}

}  // namespace skiff::proxy

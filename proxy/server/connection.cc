#include "proxy/server/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "proxy/net/socket.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/cluster_state.h"

namespace skiff::proxy {

namespace {

constexpr size_t kReadChunk = 64 * 1024;

// Envoy's local-reply bodies.
constexpr std::string_view kResetBody = "upstream connect error or disconnect/reset before headers";
constexpr std::string_view kOverflowBody =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
constexpr std::string_view kConnectFailureBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
constexpr std::string_view kConnectTimeoutBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection timeout";

bool IEquals(std::string_view a, std::string_view b) { return http::EqualsIgnoreCase(a, b); }

// Headers a proxy must not forward (RFC 9110 7.6.1), plus those it regenerates.
bool IsHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2:
      return IEquals(name, "te");
    case 6:
      return IEquals(name, "expect");
    case 7:
      return IEquals(name, "trailer") || IEquals(name, "upgrade");
    case 10:
      return IEquals(name, "connection") || IEquals(name, "keep-alive");
    case 14:
      return IEquals(name, "content-length");
    case 16:
      return IEquals(name, "proxy-connection");
    case 17:
      return IEquals(name, "transfer-encoding");
    default:
      return false;
  }
}

// Is `name` listed in the Connection header's tokens?
bool ListedInConnection(const http::Header* connection, std::string_view name) {
  if (connection == nullptr) {
    return false;
  }
  std::string_view v = connection->value;
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view token = v.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
      token.remove_prefix(1);
    }
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
      token.remove_suffix(1);
    }
    if (IEquals(token, name)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    v.remove_prefix(comma + 1);
  }
  return false;
}

bool InList(const google::protobuf::RepeatedPtrField<std::string>& list, std::string_view name) {
  for (const auto& n : list) {
    if (IEquals(n, name)) {
      return true;
    }
  }
  return false;
}

bool InSet(const google::protobuf::RepeatedPtrField<v1::HeaderValue>& list, std::string_view name) {
  for (const auto& h : list) {
    if (IEquals(h.name(), name)) {
      return true;
    }
  }
  return false;
}

// Is the header removed or replaced by any of the operations?
bool Overridden(std::string_view name, const v1::HeaderOperations* a,
                const v1::HeaderOperations* b) {
  for (const auto* ops : {a, b}) {
    if (ops != nullptr && (InList(ops->remove(), name) || InSet(ops->set(), name))) {
      return true;
    }
  }
  return false;
}

void AppendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name.data(), name.size());
  out->append(": ", 2);
  out->append(value.data(), value.size());
  out->append("\r\n", 2);
}

void AppendOps(std::string* out, const v1::HeaderOperations* ops) {
  if (ops == nullptr) {
    return;
  }
  for (const auto& h : ops->set()) {
    AppendHeader(out, h.name(), h.value());
  }
  for (const auto& h : ops->add()) {
    AppendHeader(out, h.name(), h.value());
  }
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string RequestId(Worker* w) {
  uint64_t a = w->NextRandom();
  uint64_t b = w->NextRandom();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  static const char* kHex = "0123456789abcdef";
  char out[36];
  int pos = 0;
  auto put = [&](uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) {
      out[pos++] = kHex[(v >> (i * 4)) & 0xf];
    }
  };
  put(a >> 32, 8);
  out[pos++] = '-';
  put((a >> 16) & 0xffff, 4);
  out[pos++] = '-';
  put(a & 0xffff, 4);
  out[pos++] = '-';
  put(b >> 48, 4);
  out[pos++] = '-';
  put(b & 0xffffffffffffULL, 12);
  return std::string(out, 36);
}

}  // namespace

// ---- Buffer ------------------------------------------------------------------------------

void Buffer::Reserve(size_t extra) {
  if (cap_ - end_ >= extra) {
    return;
  }
  size_t used = end_ - start_;
  if (start_ > 0 && cap_ - used >= extra && start_ >= used) {
    std::memmove(data_.get(), data_.get() + start_, used);  // cheap: little is left
    start_ = 0;
    end_ = used;
    return;
  }
  size_t cap = cap_ == 0 ? 16384 : cap_;
  while (cap - used < extra) {
    cap *= 2;
  }
  auto grown = std::make_unique<char[]>(cap);
  if (used > 0) {
    std::memcpy(grown.get(), data_.get() + start_, used);
  }
  data_ = std::move(grown);
  cap_ = cap;
  start_ = 0;
  end_ = used;
}

void Buffer::Append(std::string_view s) {
  if (s.empty()) {
    return;
  }
  Reserve(s.size());
  std::memcpy(data_.get() + end_, s.data(), s.size());
  end_ += s.size();
}

void Buffer::Consume(size_t n) {
  start_ += n;
  if (start_ >= end_) {
    start_ = end_ = 0;
  }
}

ssize_t Buffer::ReadFrom(int fd, bool* filled) {
  Reserve(kReadChunk / 4);
  size_t space = cap_ - end_;
  ssize_t n = ::read(fd, data_.get() + end_, space);
  if (n < 0) {
    *filled = false;
    return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -1 : -2;
  }
  end_ += static_cast<size_t>(n);
  *filled = static_cast<size_t>(n) == space;
  return n;
}

bool Buffer::WriteTo(int fd) {
  while (!empty()) {
    auto v = view();
    ssize_t n = ::send(fd, v.data(), v.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return true;
      }
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    Consume(static_cast<size_t>(n));
  }
  return true;
}

// ---- UpstreamConnection ------------------------------------------------------------------

UpstreamConnection::UpstreamConnection(Worker* worker, int fd, std::string key,
                                       std::shared_ptr<upstream::ClusterState> cluster)
    : worker_(worker), fd_(fd), key_(std::move(key)), cluster_(std::move(cluster)) {
  cluster_->cx_active.fetch_add(1, std::memory_order_relaxed);
}

void UpstreamConnection::Uncount() {
  if (counted_) {
    counted_ = false;
    cluster_->cx_active.fetch_sub(1, std::memory_order_relaxed);
  }
}

UpstreamConnection::~UpstreamConnection() {
  Uncount();
  timer_.Cancel();
  worker_->loop().Remove(fd_);
  ::close(fd_);
}

void UpstreamConnection::UpdateInterest(bool want_read, bool want_write) {
  uint32_t ev =
      EPOLLRDHUP | (want_read ? uint32_t{EPOLLIN} : 0u) | (want_write ? uint32_t{EPOLLOUT} : 0u);
  if (ev != interest_) {
    interest_ = ev;
    worker_->loop().Modify(fd_, ev, this);
  }
}

void UpstreamConnection::OnEvents(uint32_t events) {
  if (dead_) {
    return;
  }
  if (owner_ != nullptr) {
    owner_->OnUpstreamEvents(events);
    return;
  }
  // Idle in the pool: any event means the upstream closed it (or sent garbage).
  (void)events;
  worker_->ForgetIdle(this);
}

// ---- ServerConnection --------------------------------------------------------------------

ServerConnection::ServerConnection(Worker* worker, int fd, const ListenerConfig& listener,
                                   std::string peer)
    : worker_(worker),
      fd_(fd),
      listener_address_(listener.address),
      listener_bind_port_(listener.bind_port),
      listener_port_(listener.port),
      peer_(std::move(peer)) {
  timer_.SetCallback([this] {
    if (stage_ == Stage::kReadingHead && !in_.empty()) {
      SendLocalReply(408, "request timeout", "-", /*close=*/true);
    } else {
      CloseSoon();
    }
  });
  interest_ = EPOLLIN | EPOLLRDHUP;
  worker_->loop().Add(fd_, interest_, this);
  ArmIdle();
}

ServerConnection::~ServerConnection() {
  EndExchangeState();
  timer_.Cancel();
  if (upstream_ != nullptr) {
    delete upstream_;
    upstream_ = nullptr;
  }
  worker_->loop().Remove(fd_);
  ::close(fd_);
}

void ServerConnection::EndRequestCount() {
  if (active_requests_ != nullptr) {
    --*active_requests_;
    active_requests_ = nullptr;
  }
}

void ServerConnection::ArmIdle() {
  worker_->loop().Schedule(&timer_, worker_->options().idle_timeout);
}

void ServerConnection::CloseSoon() {
  if (closed_) {
    return;
  }
  closed_ = true;
  stage_ = Stage::kClosing;
  timer_.Cancel();
  EndRequestCount();
  endpoint_ = nullptr;
  if (upstream_ != nullptr) {
    ReleaseUpstream(false);
  }
  EndExchangeState();
  worker_->loop().Remove(fd_);
  Worker* w = worker_;
  w->loop().Defer([w, self = this] { w->Closed(self); });
}

void ServerConnection::UpdateInterest() {
  if (closed_ || draining_) {
    return;
  }
  bool want_read = stage_ != Stage::kClosing;
  // Back-pressure: stop reading the client while the upstream side is full, or while a
  // response is being written and the client is slow.
  if (upstream_ != nullptr && upstream_->out_.size() > worker_->options().max_buffer_bytes) {
    want_read = false;
  }
  if (stage_ == Stage::kProxying && (request_done_ || upstream_ == nullptr)) {
    // Pipelined bytes, or body bytes while waiting (fault delay, back-off, pool queue).
    want_read = in_.size() < worker_->options().max_buffer_bytes;
  }
  uint32_t ev =
      EPOLLRDHUP | (want_read ? uint32_t{EPOLLIN} : 0u) | (out_.empty() ? 0u : uint32_t{EPOLLOUT});
  if (ev != interest_) {
    interest_ = ev;
    worker_->loop().Modify(fd_, ev, this);
  }
}

void ServerConnection::Flush() {
  if (!out_.WriteTo(fd_)) {
    CloseSoon();
    return;
  }
  if (out_.empty() && stage_ == Stage::kClosing) {
    // Half-close and read what the client still sends until it closes (bounded by a
    // timer): closing with unread input would reset the connection and could destroy the
    // response before the client reads it.
    if (!draining_) {
      draining_ = true;
      ::shutdown(fd_, SHUT_WR);
      timer_.SetCallback([this] { CloseSoon(); });
      worker_->loop().Schedule(&timer_, std::chrono::milliseconds(2000));
    }
    interest_ = EPOLLIN | EPOLLRDHUP;
    worker_->loop().Modify(fd_, interest_, this);
    return;
  }
  // A drained client buffer lets the upstream side read again.
  if (upstream_ != nullptr && response_head_sent_) {
    bool want_read = out_.size() < worker_->options().max_buffer_bytes;
    upstream_->UpdateInterest(want_read, !upstream_->out_.empty() || !upstream_->connected_);
  }
  UpdateInterest();
}

void ServerConnection::OnEvents(uint32_t events) {
  if (closed_) {
    return;
  }
  if ((events & EPOLLOUT) && !draining_) {
    Flush();
    if (closed_) {
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    OnReadable();
  }
}

void ServerConnection::OnReadable() {
  if (draining_) {
    char buf[16384];
    while (true) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        CloseSoon();
        return;
      }
      if (n < 0) {
        return;
      }
    }
  }
  for (int i = 0; i < 4 && !closed_; ++i) {
    bool filled = false;
    ssize_t n = in_.ReadFrom(fd_, &filled);
    if (n == -1) {
      break;
    }
    if (n <= 0) {
      // Client closed (or error). Mid-exchange we stop; otherwise just close.
      CloseSoon();
      return;
    }
    if (!filled || in_.size() >= worker_->options().max_buffer_bytes) {
      break;
    }
  }
  ProcessInput();
}

void ServerConnection::ProcessInput() {
  while (!closed_) {
    if (stage_ == Stage::kReadingHead) {
      if (in_.empty()) {
        break;
      }
      auto r = parser_.Parse(in_.view());
      if (r.status == http::ParseStatus::kIncomplete) {
        // The first bytes of a request start the header timeout (replacing the idle
        // timeout); later bytes do not extend it, so a slow sender gets 408.
        if (!header_timer_started_) {
          header_timer_started_ = true;
          worker_->loop().Schedule(&timer_, worker_->options().request_header_timeout);
        }
        break;
      }
      header_timer_started_ = false;
      if (r.status == http::ParseStatus::kError) {
        SendLocalReply(r.error_status, r.error_reason, "-", /*close=*/true);
        return;
      }
      timer_.Cancel();
      OnRequestHead(r.consumed);
      continue;
    }
    if (stage_ == Stage::kProxying) {
      if (!request_done_) {
        ForwardRequestBody();
      }
      break;
    }
    break;
  }
  UpdateInterest();
}

void ServerConnection::CountResponse(int status) {
  auto& s = worker_->mutable_stats();
  s.downstream_rq_total.fetch_add(1, std::memory_order_relaxed);
  switch (status / 100) {
    case 1:
      s.rq_1xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 2:
      s.rq_2xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 3:
      s.rq_3xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 4:
      s.rq_4xx.fetch_add(1, std::memory_order_relaxed);
      break;
    default:
      s.rq_5xx.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

void ServerConnection::SendLocalReply(int status, std::string_view body, const char* flag,
                                      bool close, std::string_view extra_headers) {
  AddFlag(flag);
  response_status_ = status;
  CountResponse(status);
  if (close) {
    close_after_response_ = true;
  }
  std::string head;
  head.reserve(160 + body.size());
  head += "HTTP/1.1 ";
  head += std::to_string(status);
  head += ' ';
  head += ReasonPhrase(status);
  head += "\r\ncontent-length: ";
  head += std::to_string(body.size());
  head += "\r\ncontent-type: text/plain\r\nserver: ";
  head += worker_->options().server_name;
  head += "\r\n";
  head.append(extra_headers.data(), extra_headers.size());
  if (close_after_response_) {
    head += "connection: close\r\n";
  } else if (client_http10_) {
    head += "connection: keep-alive\r\n";
  }
  head += "\r\n";
  resp_head_bytes_ += head.size();
  if (method_ != "HEAD") {
    head.append(body.data(), body.size());
    resp_body_bytes_ += body.size();
  }
  out_.Append(head);
  FinishExchange();
}

namespace {
const std::string& UnknownDestination() {
  static const std::string* text = new std::string(telemetry::DestinationLabels(nullptr, nullptr));
  return *text;
}
}  // namespace

void ServerConnection::RecordTelemetry() {
  exchange_active_ = false;
  auto* tel = worker_->telemetry();
  if (tel == nullptr) {
    return;
  }
  if (response_status_ == 0 || (!response_head_sent_ && stage_ == Stage::kClosing && closed_)) {
    AddFlag("DC");  // the client went away before its response
  }
  auto now = std::chrono::steady_clock::now();
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - rq_start_).count();
  const upstream::Endpoint* ep =
      served_endpoint_ != nullptr ? served_endpoint_ : previous_endpoint_;
  std::string_view destination = ep != nullptr ? std::string_view(ep->telemetry_labels)
                                 : cluster_ != nullptr
                                     ? std::string_view(cluster_->telemetry_labels)
                                     : std::string_view(UnknownDestination());
  std::string_view flags = flags_.empty() ? std::string_view("-") : std::string_view(flags_);
  auto* owner = tel->owner;
  if (owner->metrics()) {
    tel->metrics.Record(destination, response_status_, flags, static_cast<double>(micros) / 1000.0,
                        rq_head_bytes_ + rq_body_bytes_, resp_head_bytes_ + resp_body_bytes_);
  }
  if (owner->access_log()) {
    telemetry::AccessLogEntry e;
    e.start = rq_start_wall_;
    e.method = tel_method_;
    e.path = tel_path_;
    e.protocol = client_http10_ ? "HTTP/1.0" : "HTTP/1.1";
    e.response_code = response_status_;
    e.response_flags = flags;
    e.bytes_received = rq_body_bytes_;
    e.bytes_sent = resp_body_bytes_;
    e.duration_ms = micros / 1000;
    e.upstream_service_time_ms = upstream_time_ms_;
    e.x_forwarded_for = tel_xff_;
    e.user_agent = tel_user_agent_;
    e.request_id = tel_request_id_;
    e.authority = tel_authority_;
    if (ep != nullptr) {
      e.upstream_host = ep->key;
    }
    if (cluster_ != nullptr) {
      e.upstream_cluster = cluster_->name;
    }
    if (owner->json()) {
      telemetry::AppendJsonLine(e, &tel->log_batch);
    } else {
      telemetry::AppendTextLine(e, &tel->log_batch);
    }
    ++tel->log_items;
  }
  if (tracing_ && trace_.sampled && owner->tracing()) {
    telemetry::SpanInfo s;
    std::string name = cluster_ != nullptr ? cluster_->span_name : tel_authority_ + "/*";
    s.name = name;
    s.service_name = owner->span_service_name();
    s.start_us =
        std::chrono::duration_cast<std::chrono::microseconds>(rq_start_wall_.time_since_epoch())
            .count();
    s.duration_us = micros;
    s.method = tel_method_;
    std::string url = "http://" + tel_authority_ + tel_path_;
    s.url = url;
    s.status = response_status_;
    s.response_flags = flags;
    if (cluster_ != nullptr) {
      s.upstream_cluster = cluster_->name;
    }
    if (ep != nullptr) {
      s.upstream_address = ep->key;
    }
    s.request_id = tel_request_id_;
    s.user_agent = tel_user_agent_;
    s.node_id = owner->options().node_id;
    s.request_size = rq_body_bytes_;
    s.response_size = resp_body_bytes_;
    if (tel->span_items > 0) {
      tel->span_batch.push_back(',');
    }
    telemetry::AppendZipkinSpan(trace_, s, &tel->span_batch);
    ++tel->span_items;
  }
}

void ServerConnection::AddFlag(const char* flag) {
  if (flag == nullptr || flag[0] == '\0' || (flag[0] == '-' && flag[1] == '\0')) {
    return;
  }
  std::string_view f(flag);
  // Already there?
  size_t pos = 0;
  while (pos <= flags_.size()) {
    size_t comma = flags_.find(',', pos);
    std::string_view item = std::string_view(flags_).substr(
        pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item == f) {
      return;
    }
    if (comma == std::string::npos) {
      break;
    }
    pos = comma + 1;
  }
  if (!flags_.empty()) {
    flags_ += ',';
  }
  flags_ += f;
}

void ServerConnection::OnRequestHead(size_t head_bytes) {
  const http::RequestHead& req = parser_.head();
  config_ = worker_->config();
  method_.assign(req.method);
  client_http10_ = req.version == http::Version::kHttp10;
  close_after_response_ = !req.keep_alive;
  response_status_ = 0;
  route_proto_ = nullptr;
  target_proto_ = nullptr;
  flags_.clear();
  exchange_active_ = true;
  rq_start_ = std::chrono::steady_clock::now();
  rq_head_bytes_ = head_bytes;
  rq_body_bytes_ = 0;
  resp_head_bytes_ = 0;
  resp_body_bytes_ = 0;
  upstream_time_ms_ = -1;
  served_endpoint_ = nullptr;
  tracing_ = false;
  keep_strings_ = false;
  if (auto* tel = worker_->telemetry(); tel != nullptr) {
    auto* owner = tel->owner;
    keep_strings_ = owner->access_log() || owner->tracing();
    if (keep_strings_) {
      rq_start_wall_ = std::chrono::system_clock::now();
      auto copy = [&req](std::string* out, std::string_view name) {
        const http::Header* h = req.Find(name);
        out->assign(h == nullptr ? std::string_view() : h->value);
      };
      tel_method_.assign(req.method);
      tel_path_.assign(req.target);
      tel_authority_.assign(req.host);
      copy(&tel_user_agent_, "user-agent");
      copy(&tel_xff_, "x-forwarded-for");
      copy(&tel_request_id_, "x-request-id");
    }
    if (owner->tracing()) {
      tracing_ = true;
      trace_ = telemetry::StartSpan(
          [&req](std::string_view name) -> std::optional<std::string_view> {
            const http::Header* h = req.Find(name);
            if (h == nullptr) {
              return std::nullopt;
            }
            return h->value;
          },
          owner->options().trace_sampling, [this] { return worker_->NextRandom(); });
    }
  }
  attempts_ = 0;
  retries_left_ = 0;
  previous_endpoint_ = nullptr;
  replay_.Clear();
  replay_enabled_ = false;
  replay_overflow_ = false;
  mirrors_.clear();
  response_head_sent_ = false;
  response_started_ = false;

  // Body framing of the request.
  request_chunked_ = req.chunked;
  request_remaining_ = req.content_length.value_or(0);
  request_has_body_ = req.chunked || request_remaining_ > 0;
  request_done_ = !request_has_body_;
  request_chunks_.Reset();
  stage_ = Stage::kProxying;

  auto reject = [&](int status, std::string_view body, const char* flag,
                    std::string_view extra = {}) {
    // The request body (if any) was not read: the connection cannot be reused.
    in_.Consume(head_bytes);
    SendLocalReply(status, body, flag, request_has_body_, extra);
  };

  // An absolute-form target (clients using the proxy as their HTTP proxy) carries the
  // authority, which replaces Host (RFC 9112 3.2.2); upstream gets the origin form.
  target_ = req.target;
  authority_ = req.host;
  absolute_form_ = false;
  if (target_.size() >= 7 && http::EqualsIgnoreCase(target_.substr(0, 7), "http://")) {
    std::string_view rest = target_.substr(7);
    size_t end = rest.find_first_of("/?");
    authority_ = rest.substr(0, end);
    if (authority_.empty() || authority_.find('@') != std::string_view::npos) {
      reject(400, "invalid absolute-form request target", "-");
      return;
    }
    absolute_form_ = true;
    if (end == std::string_view::npos) {
      target_ = "/";
    } else if (rest[end] == '?') {
      target_storage_.assign(1, '/');
      target_storage_.append(rest.data() + end, rest.size() - end);
      target_ = target_storage_;
    } else {
      target_ = rest.substr(end);
    }
  } else if (!target_.empty() && target_.front() != '/' && target_ != "*") {
    reject(400, "unsupported request target form", "-");
    return;
  }

  const ListenerConfig* listener = nullptr;
  if (config_ != nullptr) {
    for (const auto& l : config_->listeners()) {
      if (l.bind_port == listener_bind_port_ && l.address == listener_address_) {
        listener = &l;
        break;
      }
    }
  }
  if (listener == nullptr) {
    worker_->mutable_stats().no_route.fetch_add(1, std::memory_order_relaxed);
    reject(404, "", "NR");
    return;
  }
  std::string_view target = target_;
  std::string_view path = target;
  std::string_view query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  std::function<std::optional<std::string_view>(std::string_view)> header_fn =
      [&req](std::string_view name) -> std::optional<std::string_view> {
    const http::Header* h = req.Find(name);
    if (h == nullptr) {
      return std::nullopt;
    }
    return h->value;
  };
  router::RequestView view;
  view.method = req.method;
  view.path = path;
  view.query = query;
  view.scheme = "http";
  view.authority = authority_;
  view.port = listener->port;
  view.header = &header_fn;
  const router::VirtualHost* vh = listener->route_table->FindVirtualHost(authority_);
  const router::Route* route = nullptr;
  if (vh != nullptr) {
    for (const auto& r : vh->routes) {
      if (r.Matches(view)) {
        route = &r;
        break;
      }
    }
  }
  if (route == nullptr) {
    worker_->mutable_stats().no_route.fetch_add(1, std::memory_order_relaxed);
    reject(404, "", "NR");
    return;
  }
  const v1::Route& rp = *route->proto;
  route_proto_ = &rp;
  // CORS (Istio's corsPolicy, Envoy's CORS filter): a preflight from an allowed origin is
  // answered here; other requests from it get the CORS response headers.
  cors_origin_.clear();
  if (!route->cors_origins.empty()) {
    if (const http::Header* origin = req.Find("origin")) {
      for (const auto& m : route->cors_origins) {
        if (m.Matches(origin->value)) {
          cors_origin_.assign(origin->value);
          break;
        }
      }
    }
    if (!cors_origin_.empty() && req.method == "OPTIONS" &&
        req.Find("access-control-request-method") != nullptr) {
      const auto& cors = rp.cors();
      std::string extra = "access-control-allow-origin: " + cors_origin_ + "\r\n";
      auto join = [](const auto& list) {
        std::string out;
        for (const auto& s : list) {
          out += (out.empty() ? "" : ",") + s;
        }
        return out;
      };
      if (cors.allow_methods_size() > 0) {
        extra += "access-control-allow-methods: " + join(cors.allow_methods()) + "\r\n";
      }
      if (cors.allow_headers_size() > 0) {
        extra += "access-control-allow-headers: " + join(cors.allow_headers()) + "\r\n";
      }
      if (cors.has_max_age()) {
        extra += "access-control-max-age: " + std::to_string(cors.max_age().seconds()) + "\r\n";
      }
      if (cors.allow_credentials()) {
        extra += "access-control-allow-credentials: true\r\n";
      }
      cors_origin_.clear();
      reject(200, "", "-", extra);
      return;
    }
  }
  if (rp.has_direct_response()) {
    reject(static_cast<int>(rp.direct_response().status()), rp.direct_response().body(), "-");
    return;
  }
  if (rp.has_redirect()) {
    const auto& red = rp.redirect();
    std::string location = red.scheme().empty() ? "http" : red.scheme();
    location += "://";
    std::string_view host = red.authority().empty() ? router::HostWithoutPort(authority_)
                                                    : std::string_view(red.authority());
    location.append(host.data(), host.size());
    if (red.port() != 0) {
      location += ':';
      location += std::to_string(red.port());
    } else if (red.authority().empty() && host.size() != authority_.size()) {
      location.append(authority_.substr(host.size()));  // keep ":port"
    }
    if (red.uri().empty()) {
      location.append(target.data(), target.size());
    } else {
      location += red.uri();
      if (!query.empty() && red.uri().find('?') == std::string::npos) {
        location += "?";
        location.append(query.data(), query.size());
      }
    }
    std::string extra = "location: " + location + "\r\n";
    reject(static_cast<int>(red.response_code() ? red.response_code() : 301), "", "-", extra);
    return;
  }
  // Weighted pick among the route's clusters.
  const auto& action = rp.route();
  const v1::WeightedCluster* target_cluster = &action.clusters(0);
  if (action.clusters_size() > 1) {
    uint64_t pick = worker_->NextRandom() % route->total_weight;
    for (const auto& wc : action.clusters()) {
      if (pick < wc.weight()) {
        target_cluster = &wc;
        break;
      }
      pick -= wc.weight();
    }
  }
  const upstream::Cluster* cluster = config_->FindCluster(target_cluster->cluster());
  if (cluster == nullptr) {
    worker_->mutable_stats().no_healthy_upstream.fetch_add(1, std::memory_order_relaxed);
    reject(503, "no healthy upstream", "UH");
    return;
  }
  StartUpstream(*cluster, rp, *target_cluster, *route, head_bytes);
}

void ServerConnection::BuildUpstreamHead(const v1::Route& route, const v1::WeightedCluster& target,
                                         const router::Route& compiled) {
  const http::RequestHead& req = parser_.head();
  std::string& out = upstream_request_head_;
  out.clear();
  out.reserve(512 + req.target.size() + req.headers.size() * 48);
  const auto& action = route.route();
  std::string_view path = target_;
  std::string_view query;
  if (auto q = path.find('?'); q != std::string_view::npos) {
    query = path.substr(q);
    path = path.substr(0, q);
  }
  out.append(req.method.data(), req.method.size());
  out += ' ';
  if (action.has_rewrite() && !action.rewrite().uri().empty()) {
    std::string_view matched = "/";
    if (compiled.uri.is_prefix() || compiled.uri.is_exact()) {
      matched = compiled.uri.value();
    }
    out += action.rewrite().uri();
    if (compiled.uri.is_exact()) {
      // the whole path was matched
    } else if (path.size() >= matched.size()) {
      std::string_view rest = path.substr(matched.size());
      if (!out.empty() && out.back() == '/' && !rest.empty() && rest.front() == '/') {
        rest.remove_prefix(1);
      }
      out.append(rest.data(), rest.size());
    }
    out.append(query.data(), query.size());
  } else if (compiled.rewrite_regex != nullptr) {
    std::string p(path);
    RE2::GlobalReplace(&p, *compiled.rewrite_regex, action.rewrite().uri_regex().substitution());
    out += p;
    out.append(query.data(), query.size());
  } else {
    out.append(target_.data(), target_.size());
  }
  out += " HTTP/1.1\r\n";
  const v1::HeaderOperations* route_ops =
      route.has_headers() && route.headers().has_request() ? &route.headers().request() : nullptr;
  const v1::HeaderOperations* target_ops = target.has_headers() && target.headers().has_request()
                                               ? &target.headers().request()
                                               : nullptr;
  const http::Header* connection = req.Find("connection");
  std::string_view xff;
  bool has_request_id = false;
  std::string_view host_override;
  if (action.has_rewrite() && !action.rewrite().authority().empty()) {
    host_override = action.rewrite().authority();
  } else if (absolute_form_) {
    host_override = authority_;
  }
  host_value_len_ = 0;
  for (const auto& h : req.headers) {
    if (IsHopByHop(h.name) || ListedInConnection(connection, h.name)) {
      continue;
    }
    if (IEquals(h.name, "x-forwarded-for")) {
      xff = h.value;
      continue;
    }
    if (IEquals(h.name, "x-forwarded-proto")) {
      continue;
    }
    bool is_host = IEquals(h.name, "host");
    if (is_host && !host_override.empty()) {
      continue;
    }
    if (Overridden(h.name, route_ops, target_ops)) {
      continue;
    }
    if (tracing_ && telemetry::IsTraceHeader(h.name)) {
      continue;  // replaced by this hop's context below
    }
    if (IEquals(h.name, "x-request-id")) {
      has_request_id = true;
    }
    if (is_host) {
      host_value_pos_ = out.size() + h.name.size() + 2;
      host_value_len_ = h.value.size();
    }
    AppendHeader(&out, h.name, h.value);
  }
  if (!host_override.empty()) {
    host_value_pos_ = out.size() + 6;
    host_value_len_ = host_override.size();
    AppendHeader(&out, "host", host_override);
  }
  AppendOps(&out, route_ops);
  AppendOps(&out, target_ops);
  if (xff.empty()) {
    AppendHeader(&out, "x-forwarded-for", peer_);
  } else {
    std::string v(xff);
    v += ", ";
    v += peer_;
    AppendHeader(&out, "x-forwarded-for", v);
  }
  AppendHeader(&out, "x-forwarded-proto", "http");
  if (!has_request_id) {
    std::string id = RequestId(worker_);
    AppendHeader(&out, "x-request-id", id);
    if (keep_strings_) {
      tel_request_id_ = std::move(id);
    }
  }
  if (tracing_) {
    telemetry::AppendPropagationHeaders(trace_, &out);
  }
  if (request_chunked_) {
    AppendHeader(&out, "transfer-encoding", "chunked");
  } else if (req.content_length) {
    AppendHeader(&out, "content-length", std::to_string(*req.content_length));
  }
  out += "\r\n";
}

void ServerConnection::StartUpstream(const upstream::Cluster& cluster, const v1::Route& route,
                                     const v1::WeightedCluster& target,
                                     const router::Route& compiled, size_t head_bytes) {
  const http::RequestHead& req = parser_.head();
  target_proto_ = &target;
  cluster_ = &cluster;
  compiled_route_ = &compiled;
  BuildUpstreamHead(route, target, compiled);
  if (req.expect_continue && request_has_body_) {
    out_.Append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  // The head's views into in_ are not used past this point.
  in_.Consume(head_bytes);
  target_ = {};
  authority_ = {};

  // Mirrors chosen now (fire-and-forget copies, sent once the request is complete).
  for (const auto& m : route.route().mirrors()) {
    if (!policy::Roll(m.percentage(), worker_->NextRandom())) {
      continue;
    }
    if (const auto* mc = config_->FindCluster(m.cluster()); mc != nullptr) {
      mirrors_.push_back(mc);
    }
  }
  retries_left_ = compiled.retry.enabled() ? compiled.retry.num_retries() : 0;
  replay_enabled_ = request_has_body_ && (retries_left_ > 0 || !mirrors_.empty());

  // Fault injection (Envoy's fault filter runs before the router): a delay, then an abort.
  fault_abort_status_ = 0;
  if (route.has_fault()) {
    const auto& f = route.fault();
    if (f.has_abort() && policy::Roll(f.abort().percentage(), worker_->NextRandom())) {
      fault_abort_status_ = static_cast<int>(f.abort().http_status());
    }
    if (f.has_delay() && f.delay().has_fixed_delay() &&
        policy::Roll(f.delay().percentage(), worker_->NextRandom())) {
      auto delay = policy::ToMillis(f.delay().fixed_delay());
      if (delay.count() > 0) {
        worker_->mutable_stats().fault_delays_injected.fetch_add(1, std::memory_order_relaxed);
        AddFlag("DI");
        wait_timer_.SetCallback([this] { AfterFaultDelay(); });
        worker_->loop().Schedule(&wait_timer_, delay);
        Flush();
        return;
      }
    }
  }
  AfterFaultDelay();
}

void ServerConnection::AfterFaultDelay() {
  if (fault_abort_status_ != 0) {
    worker_->mutable_stats().fault_aborts_injected.fetch_add(1, std::memory_order_relaxed);
    int status = fault_abort_status_;
    fault_abort_status_ = 0;
    SendLocalReply(status, "fault filter abort", "FI", !request_done_);
    return;
  }
  auto* state = cluster_->state.get();
  state->upstream_rq_total.fetch_add(1, std::memory_order_relaxed);
  // Circuit breaker on requests in flight to the cluster.
  if (cluster_->max_requests != 0 &&
      state->rq_active.load(std::memory_order_relaxed) >= cluster_->max_requests) {
    state->upstream_rq_pending_overflow.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(503, kOverflowBody, "UO", !request_done_);
    return;
  }
  state->rq_active.fetch_add(1, std::memory_order_relaxed);
  counted_rq_active_ = true;
  if (compiled_route_->timeout) {
    route_timer_.SetCallback([this] { OnRouteTimeout(); });
    worker_->loop().Schedule(&route_timer_, *compiled_route_->timeout);
  }
  StartAttempt();
}

const upstream::Endpoint* ServerConnection::PickEndpoint() {
  const upstream::Cluster& cluster = *cluster_;
  const http::RequestHead& req = parser_.head();
  size_t n = cluster.endpoints.size();
  if (n == 0) {
    return nullptr;
  }
  size_t idx = 0;
  switch (cluster.policy) {
    case v1::LoadBalancer::RANDOM:
      idx = worker_->NextRandom() % n;
      break;
    case v1::LoadBalancer::LEAST_REQUEST: {
      // Power of two choices.
      size_t a = worker_->NextRandom() % n;
      size_t b = worker_->NextRandom() % n;
      idx = worker_->ActiveRequests(cluster.endpoints[a].key) <=
                    worker_->ActiveRequests(cluster.endpoints[b].key)
                ? a
                : b;
      break;
    }
    case v1::LoadBalancer::CONSISTENT_HASH: {
      // Only on the first try: the head's views are gone after it.
      std::string_view key;
      if (attempts_ <= 1) {
        const auto& ch = cluster.proto->load_balancer().consistent_hash();
        if (ch.has_http_header_name()) {
          if (const auto* h = req.Find(ch.http_header_name())) {
            key = h->value;
          }
        } else if (ch.has_use_source_ip()) {
          key = peer_;
        } else if (ch.has_http_cookie()) {
          if (const auto* h = req.Find("cookie")) {
            std::string_view c = h->value;
            std::string needle = ch.http_cookie().name() + "=";
            size_t pos = c.find(needle);
            if (pos != std::string_view::npos) {
              c.remove_prefix(pos + needle.size());
              key = c.substr(0, c.find(';'));
            }
          }
        } else if (ch.has_http_query_parameter_name()) {
          std::string_view t = req.target;
          std::string needle = ch.http_query_parameter_name() + "=";
          size_t pos = t.find(needle);
          if (pos != std::string_view::npos) {
            t.remove_prefix(pos + needle.size());
            key = t.substr(0, t.find('&'));
          }
        }
      }
      idx = key.empty() ? worker_->NextRandom() % n : cluster.RingLookup(upstream::Hash64(key));
      break;
    }
    default:
      idx = worker_->NextRoundRobin(&cluster) % n;
      break;
  }
  // Ejected endpoints are out of the pool; a retry prefers an endpoint it has not tried
  // (Istio's previous_hosts predicate).
  int64_t now = cluster.outlier_detection ? upstream::SteadyNowMs() : 0;
  auto usable = [&](size_t i) {
    return !cluster.outlier_detection ||
           !upstream::IsEjected(cluster.state.get(), cluster.endpoints[i].health.get(), now);
  };
  const upstream::Endpoint* fallback = nullptr;
  for (size_t k = 0; k < n; ++k) {
    size_t i = (idx + k) % n;
    if (!usable(i)) {
      continue;
    }
    if (&cluster.endpoints[i] == previous_endpoint_ && n > 1) {
      fallback = &cluster.endpoints[i];
      continue;
    }
    return &cluster.endpoints[i];
  }
  return fallback;
}

void ServerConnection::StartAttempt() {
  ++attempts_;
  endpoint_ = PickEndpoint();
  if (endpoint_ == nullptr) {
    worker_->mutable_stats().no_healthy_upstream.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(503, "no healthy upstream", "UH", !request_done_);
    return;
  }
  previous_endpoint_ = endpoint_;
  if (auto per_try = compiled_route_->retry.per_try_timeout()) {
    try_timer_.SetCallback([this] {
      AttemptFailed(policy::TryFailure::kPerTryTimeout, "UT", "upstream request timeout");
    });
    worker_->loop().Schedule(&try_timer_, *per_try);
  }
  AcquireConnection();
}

void ServerConnection::AcquireConnection() {
  auto* state = cluster_->state.get();
  UpstreamConnection* conn = worker_->AcquireIdle(endpoint_->key);
  if (conn != nullptr) {
    worker_->mutable_stats().upstream_rq_reused.fetch_add(1, std::memory_order_relaxed);
    if (conn->cluster_ != cluster_->state) {
      // Pools are per endpoint and survive config swaps; the slot moves to this cluster.
      conn->Uncount();
      conn->cluster_ = cluster_->state;
      conn->cluster_->cx_active.fetch_add(1, std::memory_order_relaxed);
      conn->counted_ = true;
    }
    conn->max_requests_ = cluster_->max_requests_per_connection;
    upstream_ = conn;
    upstream_->SetOwner(this);
  } else if (cluster_->max_connections != 0 &&
             state->cx_active.load(std::memory_order_relaxed) >= cluster_->max_connections) {
    // Every connection slot is taken: wait for one, unless the queue is full too.
    if (!pending_) {
      if (cluster_->max_pending_requests != 0 &&
          state->rq_pending_active.load(std::memory_order_relaxed) >=
              cluster_->max_pending_requests) {
        state->upstream_rq_pending_overflow.fetch_add(1, std::memory_order_relaxed);
        endpoint_ = nullptr;
        SendLocalReply(503, kOverflowBody, "UO", !request_done_);
        return;
      }
      state->upstream_cx_overflow.fetch_add(1, std::memory_order_relaxed);
      pending_ = true;
      state->rq_pending_active.fetch_add(1, std::memory_order_relaxed);
      worker_->AddPending(state, this);
    }
    UpdateInterest();
    return;
  } else if (!ConnectUpstream(*endpoint_)) {
    AttemptFailed(policy::TryFailure::kConnectFailure, "UF", kConnectFailureBody);
    return;
  }
  if (pending_) {
    pending_ = false;
    state->rq_pending_active.fetch_sub(1, std::memory_order_relaxed);
    worker_->RemovePending(state, this);
  }
  if (cluster_->policy == v1::LoadBalancer::LEAST_REQUEST) {
    active_requests_ = &worker_->ActiveRequests(endpoint_->key);
    ++*active_requests_;
  }
  SendToUpstream(attempts_ > 1);
}

void ServerConnection::OnPoolReady() {
  if (closed_ || !pending_ || endpoint_ == nullptr || cluster_ == nullptr) {
    return;
  }
  AcquireConnection();
}

void ServerConnection::SendToUpstream(bool replay) {
  ++upstream_->requests_;
  try_sent_ = std::chrono::steady_clock::now();
  upstream_->out_.Append(upstream_request_head_);
  if (replay && !replay_.empty()) {
    upstream_->out_.Append(replay_.view());
  }
  response_parser_.Reset();
  response_chunks_.Reset();
  response_started_ = false;
  response_head_sent_ = false;
  dechunk_for_client_ = false;
  if (!request_has_body_) {
    MarkRequestDone();
  } else if (!request_done_) {
    ForwardRequestBody();
  }
  if (upstream_ != nullptr && upstream_->connected_) {
    if (!upstream_->out_.WriteTo(upstream_->fd_)) {
      AttemptFailed(policy::TryFailure::kReset, "UC", kResetBody);
      return;
    }
  }
  if (upstream_ != nullptr) {
    upstream_->UpdateInterest(true, !upstream_->out_.empty() || !upstream_->connected_);
  }
  Flush();
}

void ServerConnection::MarkRequestDone() {
  request_done_ = true;
  if (!mirrors_.empty()) {
    LaunchMirrors();
  }
}

void ServerConnection::LaunchMirrors() {
  auto& stats = worker_->mutable_stats();
  if (request_has_body_ && (!replay_enabled_ || replay_overflow_)) {
    stats.mirror_requests_skipped.fetch_add(mirrors_.size(), std::memory_order_relaxed);
    mirrors_.clear();
    return;
  }
  // Envoy's shadow authority: "-shadow" appended to the host name (before any port).
  std::string request;
  request.reserve(upstream_request_head_.size() + 8 + replay_.size());
  if (host_value_len_ > 0) {
    std::string_view host(upstream_request_head_.data() + host_value_pos_, host_value_len_);
    std::string_view name = router::HostWithoutPort(host);
    request.append(upstream_request_head_, 0, host_value_pos_ + name.size());
    request += "-shadow";
    request.append(upstream_request_head_, host_value_pos_ + name.size(), std::string::npos);
  } else {
    request = upstream_request_head_;
  }
  if (request_has_body_) {
    request.append(replay_.view());
  }
  for (const auto* cluster : mirrors_) {
    worker_->StartMirror(*cluster, request);
  }
  mirrors_.clear();
}

bool ServerConnection::ConnectUpstream(const upstream::Endpoint& ep) {
  std::string error;
  int fd = net::ConnectNonBlocking(ep.address, ep.port, &error);
  worker_->mutable_stats().upstream_cx_total.fetch_add(1, std::memory_order_relaxed);
  if (fd < 0) {
    worker_->mutable_stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  upstream_ = new UpstreamConnection(worker_, fd, ep.key, cluster_->state);
  upstream_->max_requests_ = cluster_->max_requests_per_connection;
  upstream_->SetOwner(this);
  upstream_->interest_ = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  worker_->loop().Add(fd, upstream_->interest_, upstream_);
  upstream_->timer_.SetCallback([this] { OnUpstreamConnectTimeout(); });
  std::chrono::milliseconds timeout = worker_->options().upstream_connect_timeout;
  if (cluster_->proto->connection_pool().has_connect_timeout()) {
    auto ms = policy::ToMillis(cluster_->proto->connection_pool().connect_timeout());
    if (ms.count() > 0) {
      timeout = ms;
    }
  }
  worker_->loop().Schedule(&upstream_->timer_, timeout);
  return true;
}

void ServerConnection::OnUpstreamConnectTimeout() {
  worker_->mutable_stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
  AttemptFailed(policy::TryFailure::kConnectFailure, "UF", kConnectTimeoutBody);
}

void ServerConnection::ForwardRequestBody() {
  if (upstream_ == nullptr || request_done_) {
    return;
  }
  const size_t replay_limit = worker_->options().max_buffer_bytes;
  auto keep = [&](std::string_view bytes) {
    if (!replay_enabled_ || replay_overflow_) {
      return;
    }
    if (replay_.size() + bytes.size() > replay_limit) {
      replay_overflow_ = true;  // too big to replay: no more retries or mirrors for it
      replay_.Clear();
      return;
    }
    replay_.Append(bytes);
  };
  bool done = false;
  while (!in_.empty() && upstream_->out_.size() < worker_->options().max_buffer_bytes) {
    std::string_view avail = in_.view();
    if (request_chunked_) {
      auto r = request_chunks_.Decode(avail);
      if (r.status == http::ChunkedStatus::kError) {
        // Cannot answer cleanly mid-stream if the upstream already answered; close both.
        DropUpstream();
        SendLocalReply(400, "invalid chunked body", "-", /*close=*/true);
        return;
      }
      upstream_->out_.Append(avail.substr(0, r.consumed));
      keep(avail.substr(0, r.consumed));
      rq_body_bytes_ += r.consumed;
      in_.Consume(r.consumed);
      if (r.status == http::ChunkedStatus::kDone) {
        done = true;
        break;
      }
    } else {
      size_t take = std::min<uint64_t>(request_remaining_, avail.size());
      upstream_->out_.Append(avail.substr(0, take));
      keep(avail.substr(0, take));
      rq_body_bytes_ += take;
      in_.Consume(take);
      request_remaining_ -= take;
      if (request_remaining_ == 0) {
        done = true;
        break;
      }
    }
  }
  if (done) {
    MarkRequestDone();
  }
  if (upstream_->connected_) {
    if (!upstream_->out_.WriteTo(upstream_->fd_)) {
      AttemptFailed(policy::TryFailure::kReset, "UC", kResetBody);
      return;
    }
  }
  upstream_->UpdateInterest(true, !upstream_->out_.empty() || !upstream_->connected_);
}

void ServerConnection::OnUpstreamEvents(uint32_t events) {
  if (closed_ || upstream_ == nullptr) {
    return;
  }
  if (!upstream_->connected_) {
    if (events & (EPOLLERR | EPOLLHUP)) {
      worker_->mutable_stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      AttemptFailed(policy::TryFailure::kConnectFailure, "UF", kConnectFailureBody);
      return;
    }
    if (events & EPOLLOUT) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(upstream_->fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        worker_->mutable_stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
        AttemptFailed(policy::TryFailure::kConnectFailure, "UF", kConnectFailureBody);
        return;
      }
      upstream_->connected_ = true;
      upstream_->timer_.Cancel();
    }
  }
  if (events & EPOLLOUT) {
    if (!upstream_->out_.WriteTo(upstream_->fd_)) {
      AttemptFailed(policy::TryFailure::kReset, "UC", kResetBody);
      return;
    }
    if (!request_done_) {
      ForwardRequestBody();
      if (upstream_ == nullptr) {
        return;
      }
      UpdateInterest();  // the client may be readable again
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    OnUpstreamReadable();
    return;
  }
  if (upstream_ != nullptr) {
    upstream_->UpdateInterest(out_.size() < worker_->options().max_buffer_bytes,
                              !upstream_->out_.empty());
  }
}

void ServerConnection::RecordOutcome(upstream::Outcome outcome) {
  if (cluster_ == nullptr || endpoint_ == nullptr || !cluster_->outlier_detection) {
    return;
  }
  upstream::RecordOutcome(cluster_->proto->outlier_detection(), cluster_->state.get(),
                          endpoint_->health.get(), cluster_->endpoints.size(), outcome,
                          upstream::SteadyNowMs());
}

bool ServerConnection::TryRetry(bool retriable) {
  if (!retriable || compiled_route_ == nullptr || cluster_ == nullptr) {
    return false;
  }
  auto* state = cluster_->state.get();
  if (retry_active_) {
    retry_active_ = false;
    state->rq_retry_active.fetch_sub(1, std::memory_order_relaxed);
  }
  if (retries_left_ == 0) {
    if (compiled_route_->retry.enabled()) {
      state->upstream_rq_retry_limit_exceeded.fetch_add(1, std::memory_order_relaxed);
      AddFlag("URX");
    }
    return false;
  }
  if (request_has_body_ && (!replay_enabled_ || replay_overflow_)) {
    return false;  // the body is gone: it cannot be sent again
  }
  if (cluster_->max_retries != 0 &&
      state->rq_retry_active.load(std::memory_order_relaxed) >= cluster_->max_retries) {
    state->upstream_rq_retry_overflow.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  --retries_left_;
  retry_active_ = true;
  state->rq_retry_active.fetch_add(1, std::memory_order_relaxed);
  state->upstream_rq_retry.fetch_add(1, std::memory_order_relaxed);
  try_timer_.Cancel();
  auto backoff = policy::RetryBackoff(attempts_, worker_->NextRandom());
  wait_timer_.SetCallback([this] { StartAttempt(); });
  worker_->loop().Schedule(&wait_timer_, backoff);
  UpdateInterest();
  return true;
}

void ServerConnection::AttemptFailed(policy::TryFailure failure, const char* flag,
                                     std::string_view body) {
  bool can_replay = !request_has_body_ || (replay_enabled_ && !replay_overflow_);
  bool stale = failure == policy::TryFailure::kReset && upstream_ != nullptr &&
               upstream_->reused_ && !response_started_ && can_replay;
  const upstream::Endpoint* endpoint = endpoint_;
  int* counter = active_requests_;
  EndRequestCount();
  ReleaseUpstream(false);
  if (response_head_sent_) {
    // Mid-body: the client sees a truncated response and the connection closes.
    endpoint_ = nullptr;
    close_after_response_ = true;
    stage_ = Stage::kClosing;
    Flush();
    return;
  }
  if (stale && endpoint != nullptr) {
    // A kept-alive connection the upstream had closed: send again on a new connection,
    // which is not a retry.
    if (ConnectUpstream(*endpoint)) {
      if (counter != nullptr) {
        active_requests_ = counter;
        ++*active_requests_;
      }
      SendToUpstream(true);
      return;
    }
    failure = policy::TryFailure::kConnectFailure;
    flag = "UF";
  }
  RecordOutcome(upstream::Outcome::kGatewayError);
  if (cluster_ != nullptr) {
    if (failure == policy::TryFailure::kPerTryTimeout) {
      cluster_->state->upstream_rq_per_try_timeout.fetch_add(1, std::memory_order_relaxed);
    } else if (failure == policy::TryFailure::kConnectFailure) {
      cluster_->state->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    }
  }
  endpoint_ = nullptr;
  bool retriable = compiled_route_ != nullptr && compiled_route_->retry.RetriableFailure(failure);
  if (TryRetry(retriable)) {
    return;
  }
  if (failure == policy::TryFailure::kPerTryTimeout) {
    SendLocalReply(504, "upstream request timeout", "UT", !request_done_);
  } else {
    SendLocalReply(503, body, flag, !request_done_);
  }
}

void ServerConnection::OnRouteTimeout() {
  if (cluster_ != nullptr) {
    cluster_->state->upstream_rq_timeout.fetch_add(1, std::memory_order_relaxed);
  }
  DropUpstream();
  if (response_head_sent_) {
    close_after_response_ = true;
    EndExchangeState();
    stage_ = Stage::kClosing;
    Flush();
    return;
  }
  SendLocalReply(504, "upstream request timeout", "UT", !request_done_);
}

void ServerConnection::OnUpstreamReadable() {
  bool eof = false;
  for (int i = 0; i < 4; ++i) {
    bool filled = false;
    ssize_t n = upstream_->in_.ReadFrom(upstream_->fd_, &filled);
    if (n == -1) {
      break;
    }
    if (n <= 0) {
      eof = true;
      break;
    }
    response_started_ = true;
    if (!filled || upstream_->in_.size() >= worker_->options().max_buffer_bytes) {
      break;
    }
  }
  if (!response_head_sent_) {
    while (true) {
      auto r = response_parser_.Parse(upstream_->in_.view());
      if (r.status == http::ParseStatus::kIncomplete) {
        if (eof) {
          AttemptFailed(policy::TryFailure::kReset, "UC", kResetBody);
        } else {
          upstream_->UpdateInterest(true, !upstream_->out_.empty());
        }
        return;
      }
      if (r.status == http::ParseStatus::kError) {
        upstream_keep_alive_ = false;
        RecordOutcome(upstream::Outcome::kGatewayError);
        DropUpstream();
        SendLocalReply(502, "upstream sent an invalid response", "UPE", !request_done_);
        return;
      }
      const http::ResponseHead& head = response_parser_.head();
      if (head.IsInformational() && head.status != 101) {
        upstream_->in_.Consume(r.consumed);
        response_parser_.Reset();
        continue;
      }
      // Retry on the answer? Its bytes are dropped with its connection.
      RecordOutcome(upstream::OutcomeOfStatus(head.status));
      if (compiled_route_ != nullptr) {
        std::optional<int> grpc_status;
        if (const auto* g = head.Find("grpc-status")) {
          int v = 0;
          auto [p, ec] = std::from_chars(g->value.data(), g->value.data() + g->value.size(), v);
          if (ec == std::errc()) {
            grpc_status = v;
          }
        }
        bool retriable = compiled_route_->retry.RetriableResponse(head.status, grpc_status);
        if (retriable && TryRetry(true)) {
          DropUpstream();
          return;
        }
        if (!retriable && attempts_ > 1 && cluster_ != nullptr) {
          cluster_->state->upstream_rq_retry_success.fetch_add(1, std::memory_order_relaxed);
        }
      }
      try_timer_.Cancel();
      // The response head for the client.
      response_status_ = head.status;
      response_framing_ = http::ResponseFraming(method_, head);
      if (head.status == 101) {
        response_framing_ = http::BodyFraming::kUntilClose;  // upgrades are not supported
      }
      upstream_keep_alive_ = head.keep_alive && response_framing_ != http::BodyFraming::kUntilClose;
      response_remaining_ = head.content_length.value_or(0);
      dechunk_for_client_ = response_framing_ == http::BodyFraming::kChunked && client_http10_;
      if (response_framing_ == http::BodyFraming::kUntilClose || dechunk_for_client_) {
        close_after_response_ = true;
      }
      const v1::HeaderOperations* route_ops =
          route_proto_ != nullptr && route_proto_->headers().has_response()
              ? &route_proto_->headers().response()
              : nullptr;
      const v1::HeaderOperations* target_ops =
          target_proto_ != nullptr && target_proto_->headers().has_response()
              ? &target_proto_->headers().response()
              : nullptr;
      std::string h;
      h.reserve(r.consumed + 128);
      h += "HTTP/1.1 ";
      h += std::to_string(head.status);
      h += ' ';
      h.append(head.reason.data(), head.reason.size());
      h += "\r\n";
      const http::Header* connection = head.Find("connection");
      for (const auto& f : head.headers) {
        if (IEquals(f.name, "content-length")) {
          if (response_framing_ != http::BodyFraming::kChunked) {
            AppendHeader(&h, f.name, f.value);
          }
          continue;
        }
        if (IsHopByHop(f.name) || ListedInConnection(connection, f.name) ||
            IEquals(f.name, "server") || Overridden(f.name, route_ops, target_ops)) {
          continue;
        }
        AppendHeader(&h, f.name, f.value);
      }
      AppendOps(&h, route_ops);
      AppendOps(&h, target_ops);
      if (!cors_origin_.empty() && route_proto_ != nullptr) {
        const auto& cors = route_proto_->cors();
        AppendHeader(&h, "access-control-allow-origin", cors_origin_);
        if (cors.allow_credentials()) {
          AppendHeader(&h, "access-control-allow-credentials", "true");
        }
        if (cors.expose_headers_size() > 0) {
          std::string v;
          for (const auto& e : cors.expose_headers()) {
            v += (v.empty() ? "" : ",") + e;
          }
          AppendHeader(&h, "access-control-expose-headers", v);
        }
      }
      AppendHeader(&h, "server", worker_->options().server_name);
      if (response_framing_ == http::BodyFraming::kChunked && !dechunk_for_client_) {
        AppendHeader(&h, "transfer-encoding", "chunked");
      }
      if (close_after_response_) {
        AppendHeader(&h, "connection", "close");
      } else if (client_http10_) {
        AppendHeader(&h, "connection", "keep-alive");
      }
      h += "\r\n";
      out_.Append(h);
      resp_head_bytes_ += h.size();
      served_endpoint_ = endpoint_;
      upstream_time_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - try_sent_)
                              .count();
      upstream_->in_.Consume(r.consumed);
      response_head_sent_ = true;
      CountResponse(head.status);
      break;
    }
  }
  ForwardResponseBody();
  if (upstream_ == nullptr || closed_) {
    return;
  }
  if (eof) {
    if (response_framing_ == http::BodyFraming::kUntilClose) {
      FinishExchange();
    } else {
      // The upstream closed before the body was complete: the client sees a truncated
      // response and the connection closes.
      close_after_response_ = true;
      DropUpstream();
      EndExchangeState();
      stage_ = Stage::kClosing;
      Flush();
    }
  }
}

void ServerConnection::ForwardResponseBody() {
  Buffer& in = upstream_->in_;
  bool done = false;
  switch (response_framing_) {
    case http::BodyFraming::kNone:
      done = true;
      break;
    case http::BodyFraming::kContentLength: {
      size_t take = std::min<uint64_t>(response_remaining_, in.size());
      out_.Append(in.view().substr(0, take));
      resp_body_bytes_ += take;
      in.Consume(take);
      response_remaining_ -= take;
      done = response_remaining_ == 0;
      break;
    }
    case http::BodyFraming::kChunked:
      while (!in.empty()) {
        auto r = response_chunks_.Decode(in.view());
        if (r.status == http::ChunkedStatus::kError) {
          close_after_response_ = true;
          DropUpstream();
          EndExchangeState();
          stage_ = Stage::kClosing;
          Flush();
          return;
        }
        if (dechunk_for_client_) {
          out_.Append(r.data);
          resp_body_bytes_ += r.data.size();
        } else {
          out_.Append(in.view().substr(0, r.consumed));
          resp_body_bytes_ += r.consumed;
        }
        in.Consume(r.consumed);
        if (r.status == http::ChunkedStatus::kDone) {
          done = true;
          break;
        }
      }
      break;
    case http::BodyFraming::kUntilClose:
      out_.Append(in.view());
      resp_body_bytes_ += in.size();
      in.Clear();
      break;
  }
  if (done) {
    if (!in.empty()) {
      upstream_keep_alive_ = false;  // bytes after the response: do not reuse
    }
    FinishExchange();
    return;
  }
  Flush();
}

void ServerConnection::DropUpstream() {
  EndRequestCount();
  endpoint_ = nullptr;
  ReleaseUpstream(false);
}

void ServerConnection::ReleaseUpstream(bool reusable) {
  if (upstream_ == nullptr) {
    return;
  }
  UpstreamConnection* u = upstream_;
  upstream_ = nullptr;
  u->SetOwner(nullptr);
  if (reusable && u->connected_ && u->in_.empty() && u->out_.empty()) {
    u->reused_ = true;
    worker_->ReleaseIdle(u);
  } else {
    worker_->DestroyUpstream(u);
  }
}

void ServerConnection::EndExchangeState() {
  if (exchange_active_) {
    RecordTelemetry();
  }
  route_timer_.Cancel();
  try_timer_.Cancel();
  wait_timer_.Cancel();
  if (cluster_ != nullptr) {
    auto* state = cluster_->state.get();
    if (pending_) {
      pending_ = false;
      state->rq_pending_active.fetch_sub(1, std::memory_order_relaxed);
      worker_->RemovePending(state, this);
    }
    if (counted_rq_active_) {
      counted_rq_active_ = false;
      state->rq_active.fetch_sub(1, std::memory_order_relaxed);
    }
    if (retry_active_) {
      retry_active_ = false;
      state->rq_retry_active.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  cluster_ = nullptr;
  compiled_route_ = nullptr;
  previous_endpoint_ = nullptr;
  mirrors_.clear();
  replay_.Clear();
  fault_abort_status_ = 0;
}

void ServerConnection::FinishExchange() {
  if (upstream_ != nullptr) {
    EndRequestCount();
    ReleaseUpstream(upstream_keep_alive_ && request_done_);
  }
  EndExchangeState();
  endpoint_ = nullptr;
  config_.reset();
  route_proto_ = nullptr;
  target_proto_ = nullptr;
  if (close_after_response_ || !request_done_) {
    stage_ = Stage::kClosing;
    Flush();
    return;
  }
  parser_.Reset();
  stage_ = Stage::kReadingHead;
  Flush();
  if (closed_) {
    return;
  }
  if (in_.empty()) {
    ArmIdle();
  } else {
    worker_->loop().Defer([this, w = worker_, v = this] {
      (void)w;
      (void)v;
      if (!closed_) {
        ProcessInput();
      }
    });
  }
}

}  // namespace skiff::proxy

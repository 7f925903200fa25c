#include "proxy/upstream/connection_pool.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>

#include "proxy/net/socket.h"
#include "proxy/policy/retry_policy.h"

namespace skiff::upstream {

namespace {
constexpr size_t kMaxIdlePerEndpoint = 1024;
constexpr std::chrono::milliseconds kPendingPoll{5};
}  // namespace

// ---- UpstreamConnection ------------------------------------------------------------------

UpstreamConnection::UpstreamConnection(HttpConnectionPool& pool,
                                       std::unique_ptr<net::Transport> transport, std::string key,
                                       std::shared_ptr<ClusterState> cluster)
    : pool_(pool),
      transport_(std::move(transport)),
      key_(std::move(key)),
      cluster_(std::move(cluster)) {
  cluster_->cx_active.fetch_add(1, std::memory_order_relaxed);
}

UpstreamConnection::~UpstreamConnection() {
  timer_.Cancel();
  if (counted_) {
    cluster_->cx_active.fetch_sub(1, std::memory_order_relaxed);
  }
}

void UpstreamConnection::UpdateInterest() {
  if (dead_) {
    return;
  }
  bool want_read = decoder_ == nullptr || !read_disabled_;
  bool want_write = !connected_ || !out_.empty() || transport_->wants_write();
  uint32_t ev =
      EPOLLRDHUP | (want_read ? uint32_t{EPOLLIN} : 0u) | (want_write ? uint32_t{EPOLLOUT} : 0u);
  if (ev != interest_) {
    interest_ = ev;
    pool_.dispatcher().Modify(transport_->fd(), ev, this);
  }
}

void UpstreamConnection::OnEvents(uint32_t events) {
  if (dead_) {
    return;
  }
  if (decoder_ == nullptr) {
    // Idle in the pool: any event means the upstream closed it (or sent garbage).
    pool_.ForgetIdle(this);
    return;
  }
  if (!connected_) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(transport_->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP)) != 0) {
      pool_.stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      Fail(http::ResetReason::kConnectFailure);
      return;
    }
    if ((events & EPOLLOUT) == 0) {
      return;
    }
    connected_ = true;
    timer_.Cancel();
    if (!transport_->handshake_done()) {
      // A TLS upstream that takes the TCP connection but never finishes the handshake is a
      // connect failure too (Envoy's connect timeout covers the handshake).
      handshake_timer_.SetCallback([this] {
        pool_.stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
        cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
        Fail(http::ResetReason::kConnectTimeout);
      });
      pool_.dispatcher().Schedule(&handshake_timer_, connect_timeout_);
    }
  }
  if ((events & EPOLLOUT) != 0 && !Flush()) {
    return;
  }
  if (handshake_timer_.armed() && transport_->handshake_done()) {
    handshake_timer_.Cancel();
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    OnReadable();
    if (handshake_timer_.armed() && transport_->handshake_done()) {
      handshake_timer_.Cancel();  // before the response can hand the connection back
    }
    if (dead_ || decoder_ == nullptr) {
      return;
    }
  }
  UpdateInterest();
}

bool UpstreamConnection::Flush() {
  ssize_t n = transport_->Write(&out_);
  if (n < 0) {
    Fail(http::ResetReason::kConnectionTermination);
    return false;
  }
  bytes_sent_ += static_cast<uint64_t>(n);
  if (above_watermark_ && out_.size() <= pool_.options().max_buffer_bytes / 2) {
    above_watermark_ = false;
    if (decoder_ != nullptr) {
      decoder_->OnUpstreamWatermark(false);
    }
  }
  return !dead_;
}

void UpstreamConnection::OnReadable() {
  bool eof = false;
  for (int i = 0; i < 4; ++i) {
    if (read_disabled_ && !in_.empty()) {
      break;
    }
    bool filled = false;
    ssize_t n = transport_->Read(&in_, &filled);
    if (n == -1) {
      break;
    }
    if (n == -2 && bytes_sent_ == 0 && in_.empty() && !reused_) {
      // Failed before any of the request went out (a TLS handshake refused, a reset right
      // after connecting): as Envoy, a connection failure.
      pool_.stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      Fail(http::ResetReason::kConnectFailure);
      return;
    }
    if (n <= 0) {
      eof = true;
      break;
    }
    if (!filled || in_.size() >= pool_.options().max_buffer_bytes) {
      break;
    }
  }
  http::ResponseDecoder* decoder = decoder_;
  auto status = codec_.Dispatch(in_, *decoder, eof);
  if (dead_) {
    return;  // the stream was reset from a callback
  }
  switch (status) {
    case http::Http1ClientCodec::Status::kNeedMore:
      return;
    case http::Http1ClientCodec::Status::kComplete: {
      bool reusable = codec_.keep_alive() && in_.empty() && out_.empty() && !eof;
      decoder_ = nullptr;
      pool_.Release(this, reusable);
      return;
    }
    case http::Http1ClientCodec::Status::kReset:
      Fail(codec_.error());
      return;
  }
}

void UpstreamConnection::Fail(http::ResetReason reason) {
  http::ResponseDecoder* d = decoder_;
  decoder_ = nullptr;
  pool_.Destroy(this);
  if (d != nullptr) {
    d->OnUpstreamReset(reason);
  }
}

void UpstreamConnection::AfterEncode() {
  if (connected_ && (!out_.empty() || transport_->wants_write())) {
    ssize_t n = transport_->Write(&out_);
    if (n < 0) {
      // Not from inside the caller's call: the failure arrives after this turn.
      pool_.dispatcher().Defer([this] {
        if (!dead_) {
          Fail(http::ResetReason::kConnectionTermination);
        }
      });
      return;
    }
    bytes_sent_ += static_cast<uint64_t>(n);
  }
  if (!above_watermark_ && out_.size() > pool_.options().max_buffer_bytes) {
    above_watermark_ = true;
    if (decoder_ != nullptr) {
      decoder_->OnUpstreamWatermark(true);
    }
  }
  UpdateInterest();
}

void UpstreamConnection::EncodeHead(const http::RequestHeaders& head, bool end_stream) {
  ++requests_;
  bytes_sent_ = 0;
  codec_.EncodeHead(head, end_stream);
  AfterEncode();
}

void UpstreamConnection::EncodeBody(std::string_view data, bool end_stream) {
  codec_.EncodeBody(data, end_stream);
  AfterEncode();
}

void UpstreamConnection::EncodeTrailers(std::string_view fields) {
  codec_.EncodeTrailers(fields);
  AfterEncode();
}

void UpstreamConnection::ReadDisable(bool disable) {
  read_disabled_ = disable;
  UpdateInterest();
  if (!disable && !in_.empty() && decoder_ != nullptr) {
    // Bytes read before the pause: deliver them after this turn.
    pool_.dispatcher().Defer([this] {
      if (!dead_ && decoder_ != nullptr && !read_disabled_) {
        OnReadable();
        if (!dead_ && decoder_ != nullptr) {
          UpdateInterest();
        }
      }
    });
  }
}

void UpstreamConnection::Reset() {
  codec_.Abort();
  decoder_ = nullptr;
  pool_.Destroy(this);
}

// ---- HttpConnectionPool ------------------------------------------------------------------

HttpConnectionPool::HttpConnectionPool(net::Dispatcher& dispatcher, const PoolOptions& options,
                                       PoolStats& stats)
    : dispatcher_(dispatcher), options_(options), stats_(stats) {
  pending_timer_.SetCallback([this] { PollPending(); });
}

HttpConnectionPool::~HttpConnectionPool() {
  pending_timer_.Cancel();
  for (auto* c : live_) {
    if (!c->dead_) {
      dispatcher_.Remove(c->transport_->fd());
    }
    delete c;
  }
  live_.clear();
  for (auto* c : h2_live_) {
    if (!c->dead_) {
      dispatcher_.Remove(c->transport_->fd());
    }
    delete c;
  }
  h2_live_.clear();
}

UpstreamConnection* HttpConnectionPool::AcquireIdle(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end() || it->second.empty()) {
    return nullptr;
  }
  UpstreamConnection* c = it->second.back();
  it->second.pop_back();
  c->timer_.Cancel();
  return c;
}

bool HttpConnectionPool::TryAssign(const Cluster& cluster, const Endpoint& endpoint, bool http2,
                                   PoolCallbacks& callbacks) {
  if (http2) {
    return TryAssignHttp2(cluster, endpoint, callbacks);
  }
  if (UpstreamConnection* conn = AcquireIdle(endpoint.key); conn != nullptr) {
    stats_.upstream_rq_reused.fetch_add(1, std::memory_order_relaxed);
    if (conn->cluster_ != cluster.state) {
      // Pools are per endpoint and survive config swaps; the slot moves to this cluster.
      if (conn->counted_) {
        conn->cluster_->cx_active.fetch_sub(1, std::memory_order_relaxed);
      }
      conn->cluster_ = cluster.state;
      conn->cluster_->cx_active.fetch_add(1, std::memory_order_relaxed);
      conn->counted_ = true;
    }
    conn->max_requests_ = cluster.max_requests_per_connection;
    conn->reused_ = true;
    conn->codec_.Reset();
    conn->read_disabled_ = false;
    conn->above_watermark_ = false;
    conn->decoder_ = nullptr;
    callbacks.OnPoolReady(*conn);
    return true;
  }
  ClusterState* state = cluster.state.get();
  if (cluster.max_connections != 0 &&
      state->cx_active.load(std::memory_order_relaxed) >= cluster.max_connections) {
    return false;
  }
  std::unique_ptr<net::Transport> transport = Connect(cluster, endpoint, false, callbacks);
  if (transport == nullptr) {
    return true;  // the failure went to the callbacks
  }
  int fd = transport->fd();
  auto* conn = new UpstreamConnection(*this, std::move(transport), endpoint.key, cluster.state);
  live_.insert(conn);
  conn->max_requests_ = cluster.max_requests_per_connection;
  conn->interest_ = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  dispatcher_.Add(fd, conn->interest_, conn);
  std::chrono::milliseconds timeout = ConnectTimeout(cluster);
  conn->connect_timeout_ = timeout;
  conn->timer_.SetCallback([this, conn] {
    stats_.upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    conn->cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    conn->Fail(http::ResetReason::kConnectTimeout);
  });
  dispatcher_.Schedule(&conn->timer_, timeout);
  callbacks.OnPoolReady(*conn);
  return true;
}

std::chrono::milliseconds HttpConnectionPool::ConnectTimeout(const Cluster& cluster) const {
  std::chrono::milliseconds timeout = options_.connect_timeout;
  if (cluster.proto != nullptr && cluster.proto->connection_pool().has_connect_timeout()) {
    auto ms = policy::ToMillis(cluster.proto->connection_pool().connect_timeout());
    if (ms.count() > 0) {
      timeout = ms;
    }
  }
  return timeout;
}

std::unique_ptr<net::Transport> HttpConnectionPool::Connect(const Cluster& cluster,
                                                            const Endpoint& endpoint, bool http2,
                                                            PoolCallbacks& callbacks) {
  std::string error;
  int fd =
      net::ConnectNonBlocking(endpoint.address, endpoint.port, &error, endpoint.source_address);
  stats_.upstream_cx_total.fetch_add(1, std::memory_order_relaxed);
  if (fd < 0) {
    stats_.upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    cluster.state->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    callbacks.OnPoolFailure(http::ResetReason::kConnectFailure);
    return nullptr;
  }
  if (cluster.tls != nullptr) {
    // DestinationRule tls; ALPN h2 for HTTP/2 connections (a USE_DOWNSTREAM cluster has a
    // context for each protocol).
    return net::TlsTransport::Client(
        fd, http2 && cluster.tls_h2 != nullptr ? cluster.tls_h2 : cluster.tls);
  }
  return std::make_unique<net::PlainTransport>(fd);
}

bool HttpConnectionPool::TryAssignHttp2(const Cluster& cluster, const Endpoint& endpoint,
                                        PoolCallbacks& callbacks) {
  auto& list = h2_[endpoint.key];
  for (auto* conn : list) {
    if (conn->Available()) {
      if (conn->started_ > 0) {
        stats_.upstream_rq_reused.fetch_add(1, std::memory_order_relaxed);
      }
      conn->max_requests_ = cluster.max_requests_per_connection;
      conn->max_streams_ = cluster.max_concurrent_streams;
      callbacks.OnPoolReady(*conn->NewStream());
      return true;
    }
  }
  ClusterState* state = cluster.state.get();
  if (cluster.max_connections != 0 &&
      state->cx_active.load(std::memory_order_relaxed) >= cluster.max_connections) {
    return false;
  }
  std::unique_ptr<net::Transport> transport = Connect(cluster, endpoint, true, callbacks);
  if (transport == nullptr) {
    return true;
  }
  stats_.upstream_cx_http2_total.fetch_add(1, std::memory_order_relaxed);
  int fd = transport->fd();
  auto* conn = new Http2UpstreamConnection(*this, std::move(transport), endpoint.key, cluster.state,
                                           cluster.tls != nullptr);
  h2_live_.insert(conn);
  h2_[endpoint.key].push_back(conn);
  conn->max_requests_ = cluster.max_requests_per_connection;
  conn->max_streams_ = cluster.max_concurrent_streams;
  conn->connect_timeout_ = ConnectTimeout(cluster);
  conn->interest_ = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  dispatcher_.Add(fd, conn->interest_, conn);
  callbacks.OnPoolReady(*conn->NewStream());
  return true;
}

void HttpConnectionPool::ArmConnectTimer(Http2UpstreamConnection* conn) {
  if (conn->timer_.armed()) {
    return;
  }
  conn->timer_.SetCallback([this, conn] {
    stats_.upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    conn->cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
    conn->Fail(http::ResetReason::kConnectTimeout);
  });
  dispatcher_.Schedule(&conn->timer_, conn->connect_timeout_);
}

void HttpConnectionPool::ArmIdleTimer(Http2UpstreamConnection* conn) {
  conn->timer_.Cancel();
  if (conn->active_ != 0) {
    return;
  }
  conn->timer_.SetCallback([conn] { conn->Fail(http::ResetReason::kConnectionTermination); });
  dispatcher_.Schedule(&conn->timer_, options_.idle_timeout);
}

void HttpConnectionPool::OnHttp2StreamDone(Http2UpstreamConnection* conn) {
  WakePending(conn->cluster_.get());
}

void HttpConnectionPool::DestroyHttp2(Http2UpstreamConnection* conn) {
  if (h2_live_.count(conn) == 0) {
    return;
  }
  conn->timer_.Cancel();
  if (conn->counted_) {
    conn->counted_ = false;
    conn->cluster_->cx_active.fetch_sub(1, std::memory_order_relaxed);
  }
  auto it = h2_.find(conn->key_);
  if (it != h2_.end()) {
    std::erase(it->second, conn);
    if (it->second.empty()) {
      h2_.erase(it);
    }
  }
  WakePending(conn->cluster_.get());
  dispatcher_.Remove(conn->transport_->fd());
  dispatcher_.Defer([this, conn] {
    h2_live_.erase(conn);
    delete conn;
  });
}

void HttpConnectionPool::NewStream(const Cluster& cluster, const Endpoint& endpoint, bool http2,
                                   PoolCallbacks& callbacks) {
  ClusterState* state = cluster.state.get();
  auto q = pending_.find(state);
  bool queue_empty = q == pending_.end() || q->second.empty();
  // Waiters go first: a new request does not overtake the queue.
  if (queue_empty && TryAssign(cluster, endpoint, http2, callbacks)) {
    return;
  }
  if (cluster.max_pending_requests != 0 &&
      state->rq_pending_active.load(std::memory_order_relaxed) >= cluster.max_pending_requests) {
    state->upstream_rq_pending_overflow.fetch_add(1, std::memory_order_relaxed);
    callbacks.OnPoolFailure(http::ResetReason::kOverflow);
    return;
  }
  state->upstream_cx_overflow.fetch_add(1, std::memory_order_relaxed);
  state->rq_pending_active.fetch_add(1, std::memory_order_relaxed);
  pending_[state].push_back(Waiter{&callbacks, &cluster, &endpoint, http2});
  if (!pending_timer_.armed()) {
    dispatcher_.Schedule(&pending_timer_, kPendingPoll);
  }
}

void HttpConnectionPool::Cancel(PoolCallbacks& callbacks) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    auto& q = it->second;
    for (auto w = q.begin(); w != q.end(); ++w) {
      if (w->callbacks == &callbacks) {
        it->first->rq_pending_active.fetch_sub(1, std::memory_order_relaxed);
        q.erase(w);
        if (q.empty()) {
          pending_.erase(it);
        }
        return;
      }
    }
  }
}

void HttpConnectionPool::ServePending(ClusterState* cluster) {
  auto it = pending_.find(cluster);
  while (it != pending_.end() && !it->second.empty()) {
    Waiter w = it->second.front();
    it->second.pop_front();
    cluster->rq_pending_active.fetch_sub(1, std::memory_order_relaxed);
    if (!TryAssign(*w.cluster, *w.endpoint, w.http2, *w.callbacks)) {
      // Still no slot: back to the front of the queue.
      cluster->rq_pending_active.fetch_add(1, std::memory_order_relaxed);
      it = pending_.find(cluster);
      pending_[cluster].push_front(w);
      return;
    }
    it = pending_.find(cluster);  // the callback may have changed the map
  }
  if (it != pending_.end() && it->second.empty()) {
    pending_.erase(it);
  }
}

void HttpConnectionPool::WakePending(ClusterState* cluster) {
  if (pending_.count(cluster) == 0) {
    return;
  }
  // After the current callback: the waiter takes the slot (or keeps waiting).
  dispatcher_.Defer([this, cluster] { ServePending(cluster); });
}

void HttpConnectionPool::PollPending() {
  // Slots freed by other workers' connections are noticed here.
  std::vector<ClusterState*> clusters;
  clusters.reserve(pending_.size());
  for (auto& [cluster, q] : pending_) {
    clusters.push_back(cluster);
  }
  for (auto* c : clusters) {
    ServePending(c);
  }
  if (!pending_.empty()) {
    dispatcher_.Schedule(&pending_timer_, kPendingPoll);
  }
}

void HttpConnectionPool::Release(UpstreamConnection* conn, bool reusable) {
  if (!reusable || !conn->connected_ ||
      (conn->max_requests_ != 0 && conn->requests_ >= conn->max_requests_)) {
    Destroy(conn);
    return;
  }
  ClusterState* cluster = conn->cluster_.get();
  if (cluster->rq_pending_active.load(std::memory_order_relaxed) > 0 &&
      pending_.count(cluster) == 0) {
    // Requests wait for a slot on another worker: free this one rather than keep it idle.
    Destroy(conn);
    return;
  }
  auto& list = idle_[conn->key_];
  if (list.size() >= kMaxIdlePerEndpoint) {
    Destroy(conn);
    return;
  }
  list.push_back(conn);
  conn->read_disabled_ = false;
  conn->timer_.SetCallback([this, conn] { ForgetIdle(conn); });
  dispatcher_.Schedule(&conn->timer_, options_.idle_timeout);
  conn->UpdateInterest();  // notice the upstream closing it
  WakePending(cluster);
}

void HttpConnectionPool::ForgetIdle(UpstreamConnection* conn) {
  if (conn->dead_) {
    return;
  }
  auto it = idle_.find(conn->key_);
  if (it != idle_.end()) {
    auto& list = it->second;
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i] == conn) {
        list[i] = list.back();
        list.pop_back();
        break;
      }
    }
  }
  Destroy(conn);
}

void HttpConnectionPool::Destroy(UpstreamConnection* conn) {
  if (conn->dead_) {
    return;
  }
  conn->dead_ = true;
  conn->decoder_ = nullptr;
  conn->timer_.Cancel();
  if (conn->counted_) {
    conn->counted_ = false;
    conn->cluster_->cx_active.fetch_sub(1, std::memory_order_relaxed);
  }
  WakePending(conn->cluster_.get());
  dispatcher_.Remove(conn->transport_->fd());
  // Events for it may still be pending in this turn: delete it afterwards.
  dispatcher_.Defer([this, conn] {
    live_.erase(conn);
    delete conn;
  });
}

}  // namespace skiff::upstream

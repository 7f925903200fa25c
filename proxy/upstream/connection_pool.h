#pragma once
// Upstream connections of one worker: an interface the request path asks for streams,
// and the HTTP/1.1 implementation with keep-alive pools per endpoint (they survive config
// swaps), connect timeouts, and the cluster's connection limits (max_connections with a
// pending queue bounded by max_pending_requests, max_requests_per_connection).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proxy/http/codec.h"
#include "proxy/http/http1_codec.h"
#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/net/transport.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/http2_connection.h"

namespace skiff::upstream {

class PoolCallbacks {
 public:
  virtual ~PoolCallbacks() = default;
  // A stream on an idle connection or on one still connecting: write the request at once
  // (a connect failure then arrives as the stream's reset).
  virtual void OnPoolReady(http::ClientStream& stream) = 0;
  // No stream: kConnectFailure (the connect failed at once) or kOverflow (the cluster's
  // connection limit is reached and its pending queue is full).
  virtual void OnPoolFailure(http::ResetReason reason) = 0;
};

class ConnectionPool {
 public:
  virtual ~ConnectionPool() = default;
  // Asks for a stream to `endpoint` of `cluster` (both must outlive the wait), over HTTP/2
  // when `http2` (the cluster's protocol, resolved for this request: see
  // EffectiveHttp2()), else HTTP/1.1. Calls back before returning, or - when every
  // connection slot of the cluster is taken - later, once one frees up.
  virtual void NewStream(const Cluster& cluster, const Endpoint& endpoint, bool http2,
                         PoolCallbacks& callbacks) = 0;
  // Withdraws a request that is still waiting for a slot.
  virtual void Cancel(PoolCallbacks& callbacks) = 0;
};

struct PoolOptions {
  std::chrono::milliseconds connect_timeout{10000};  // when the cluster sets none
  std::chrono::milliseconds idle_timeout{60000};
  size_t max_buffer_bytes = 256 * 1024;  // request bytes queued before back-pressure
};

struct PoolStats {
  std::atomic<uint64_t> upstream_cx_total{0};
  std::atomic<uint64_t> upstream_cx_connect_fail{0};
  std::atomic<uint64_t> upstream_rq_reused{0};
  std::atomic<uint64_t> upstream_cx_http2_total{0};
};

class HttpConnectionPool;

// One HTTP/1.1 connection to an endpoint: idle in the pool, or serving one stream.
class UpstreamConnection final : public net::IoHandler, public http::ClientStream {
 public:
  UpstreamConnection(HttpConnectionPool& pool, std::unique_ptr<net::Transport> transport,
                     std::string key, std::shared_ptr<ClusterState> cluster);
  ~UpstreamConnection() override;
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  void OnEvents(uint32_t events) override;

  // ClientStream
  void SetDecoder(http::ResponseDecoder* decoder) override { decoder_ = decoder; }
  void EncodeHead(const http::RequestHeaders& head, bool end_stream) override;
  void EncodeBody(std::string_view data, bool end_stream) override;
  void EncodeTrailers(std::string_view fields) override;
  void StartTunnel() override { codec_.StartTunnel(); }
  void ReadDisable(bool disable) override;
  void Reset() override;
  [[nodiscard]] uint64_t bytes_sent() const override { return bytes_sent_; }
  [[nodiscard]] bool reused() const override { return reused_; }

 private:
  friend class HttpConnectionPool;
  void OnReadable();
  bool Flush();
  void AfterEncode();
  void Fail(http::ResetReason reason);
  void UpdateInterest();

  HttpConnectionPool& pool_;
  std::unique_ptr<net::Transport> transport_;
  std::string key_;  // "address:port"
  std::shared_ptr<ClusterState> cluster_;
  bool counted_ = true;  // holds a slot of cluster_->cx_active
  net::Buffer in_;
  net::Buffer out_;
  http::Http1ClientCodec codec_{out_};
  http::ResponseDecoder* decoder_ = nullptr;  // the stream's owner; null while idle
  net::Timer timer_;                          // connect timeout, or idle timeout in the pool
  net::Timer handshake_timer_;  // TLS: the connect timeout again, from TCP connect to done
  std::chrono::milliseconds connect_timeout_{};
  uint32_t interest_ = 0;
  uint32_t requests_ = 0;      // requests started on this connection
  uint32_t max_requests_ = 0;  // then it is not reused; 0 = no limit
  uint64_t bytes_sent_ = 0;    // of the current request
  bool connected_ = false;
  bool reused_ = false;
  bool read_disabled_ = false;
  bool above_watermark_ = false;
  bool dead_ = false;  // closed; deleted after the current turn
};

class HttpConnectionPool final : public ConnectionPool {
 public:
  HttpConnectionPool(net::Dispatcher& dispatcher, const PoolOptions& options, PoolStats& stats);
  ~HttpConnectionPool() override;
  HttpConnectionPool(const HttpConnectionPool&) = delete;
  HttpConnectionPool& operator=(const HttpConnectionPool&) = delete;

  void NewStream(const Cluster& cluster, const Endpoint& endpoint, bool http2,
                 PoolCallbacks& callbacks) override;
  void Cancel(PoolCallbacks& callbacks) override;

  [[nodiscard]] net::Dispatcher& dispatcher() { return dispatcher_; }
  [[nodiscard]] const PoolOptions& options() const { return options_; }
  [[nodiscard]] PoolStats& stats() { return stats_; }

 private:
  friend class UpstreamConnection;
  friend class Http2UpstreamConnection;
  struct Waiter {
    PoolCallbacks* callbacks;
    const Cluster* cluster;
    const Endpoint* endpoint;
    bool http2;
  };
  // Hands `callbacks` a stream if a connection is idle or a slot is free; false otherwise.
  bool TryAssign(const Cluster& cluster, const Endpoint& endpoint, bool http2,
                 PoolCallbacks& callbacks);
  // The same for a cluster that speaks HTTP/2: a stream on a connection with room.
  bool TryAssignHttp2(const Cluster& cluster, const Endpoint& endpoint, PoolCallbacks& callbacks);
  std::unique_ptr<net::Transport> Connect(const Cluster& cluster, const Endpoint& endpoint,
                                          bool http2, PoolCallbacks& callbacks);
  std::chrono::milliseconds ConnectTimeout(const Cluster& cluster) const;
  void ArmConnectTimer(Http2UpstreamConnection* conn);
  void ArmIdleTimer(Http2UpstreamConnection* conn);
  void OnHttp2StreamDone(Http2UpstreamConnection* conn);
  void DestroyHttp2(Http2UpstreamConnection* conn);
  UpstreamConnection* AcquireIdle(const std::string& key);
  void Release(UpstreamConnection* conn, bool reusable);
  void ForgetIdle(UpstreamConnection* conn);
  void Destroy(UpstreamConnection* conn);
  void WakePending(ClusterState* cluster);
  void ServePending(ClusterState* cluster);
  void PollPending();

  net::Dispatcher& dispatcher_;
  PoolOptions options_;
  PoolStats& stats_;
  std::unordered_map<std::string, std::vector<UpstreamConnection*>> idle_;
  std::unordered_map<ClusterState*, std::deque<Waiter>> pending_;
  std::unordered_set<UpstreamConnection*> live_;  // every connection not yet deleted
  // HTTP/2: the open connections per endpoint, and every one not yet deleted.
  std::unordered_map<std::string, std::vector<Http2UpstreamConnection*>> h2_;
  std::unordered_set<Http2UpstreamConnection*> h2_live_;
  net::Timer pending_timer_;
};

}  // namespace skiff::upstream

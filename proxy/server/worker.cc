#include "proxy/server/worker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <set>

#include "proxy/net/socket.h"
#include "proxy/server/capture.h"
#include "proxy/server/downstream_connection.h"
#include "proxy/server/tcp_proxy.h"
#include "proxy/server/tls_inspector.h"

namespace skiff::proxy {

namespace {
upstream::PoolOptions PoolOptionsFrom(const ProxyOptions& o) {
  upstream::PoolOptions p;
  p.connect_timeout = o.upstream_connect_timeout;
  p.idle_timeout = o.upstream_idle_timeout;
  p.max_buffer_bytes = o.max_buffer_bytes;
  return p;
}

http::ServerCodecOptions CodecOptionsFrom(const ProxyOptions& o) {
  http::ServerCodecOptions c;
  c.http2 = o.http2;
  c.max_buffer_bytes = o.max_buffer_bytes;
  c.server_name = o.server_name;
  return c;
}
}  // namespace

// One listening socket of this worker, with the accept back-off of net::Listener.
class Worker::ListenerSlot final : public net::Listener::Callbacks {
 public:
  ListenerSlot(Worker& worker, int fd, std::string address, uint32_t bind_port)
      : worker_(worker),
        address_(address),
        bind_port_(bind_port),
        listener_(worker.loop_, fd, std::move(address), static_cast<uint16_t>(bind_port), *this) {}
  void OnAccept(int fd, const sockaddr_storage& peer) override {
    worker_.OnAccept(fd, address_, bind_port_, net::PeerAddress(peer));
  }
  void OnAcceptFdExhausted() override {
    worker_.counters_.listener_accept_fd_exhausted.fetch_add(1, std::memory_order_relaxed);
    auto now = worker_.loop_.now();
    if (now - worker_.last_fd_warning_ >= std::chrono::seconds(10)) {
      worker_.last_fd_warning_ = now;
      spdlog::warn(
          "worker {}: out of file descriptors: not accepting on {}:{} for {} ms (raise the "
          "limit with ulimit -n)",
          worker_.id_, address_, bind_port_, net::Listener::kFdBackoff.count());
    }
  }

 private:
  Worker& worker_;
  std::string address_;
  uint32_t bind_port_;
  net::Listener listener_;
};

Worker::Worker(int id, const ProxyOptions& options, ConfigStore* store)
    : id_(id),
      options_(options),
      codec_options_(CodecOptionsFrom(options)),
      store_(store),
      pool_options_(PoolOptionsFrom(options)),
      pool_(loop_, pool_options_, counters_),
      lb_([this] { return NextRandom(); }),
      mirrors_(loop_, counters_) {
  if (options_.telemetry != nullptr) {
    telemetry_ = options_.telemetry->NewWorker();
  }
  uint64_t seed =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (static_cast<uint64_t>(id) << 32) ^ reinterpret_cast<uintptr_t>(this);
  rng_[0] = seed | 1;
  rng_[1] = (seed * 0x9E3779B97F4A7C15ULL) | 2;
}

Worker::~Worker() {
  Stop();
  loop_.RunDeferred();
  connections_.clear();  // exchanges give their upstream streams back
  loop_.RunDeferred();
  listeners_.clear();
  loop_.RunDeferred();
}

uint64_t Worker::NextRandom() {
  // xorshift128+
  uint64_t s1 = rng_[0];
  const uint64_t s0 = rng_[1];
  rng_[0] = s0;
  s1 ^= s1 << 23;
  rng_[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
  return rng_[1] + s0;
}

void Worker::Start() {
  thread_ = std::thread([this] {
    SyncConfig();
    loop_.Run([this] {
      SyncConfig();
      if (drain_requested_.load(std::memory_order_acquire) && !draining_) {
        draining_ = true;
        listeners_.clear();  // stop accepting; connections in flight finish
        for (auto& [c, conn] : connections_) {
          conn->Drain();
        }
      }
      if (telemetry_ != nullptr) {
        telemetry_->Flush();
      }
    });
    if (telemetry_ != nullptr) {
      telemetry_->Flush();
    }
  });
}

void Worker::Stop() {
  if (thread_.joinable()) {
    loop_.Stop();
    thread_.join();
  }
}

void Worker::Drain() {
  drain_requested_.store(true, std::memory_order_release);
  loop_.Wake();
}

std::string Worker::last_error() const {
  std::lock_guard<std::mutex> lock(error_mu_);
  std::string out;
  for (const auto& [name, error] : listener_errors_) {
    out += (out.empty() ? "" : "; ") + error;
  }
  return out;
}

void Worker::SyncConfig() {
  uint64_t v = store_->version();
  if (v == seen_version_) {
    return;
  }
  seen_version_ = v;
  config_ = store_->Get();
  lb_.OnConfigChange();
  mirrors_.OnConfigChange();
  ReconcileListeners();
}

void Worker::ReconcileListeners() {
  if (draining_) {
    return;
  }
  std::set<std::string> wanted;
  std::map<std::string, std::string> errors;
  if (config_ != nullptr) {
    for (const auto& l : config_->listeners()) {
      std::string key = l.address + ":" + std::to_string(l.bind_port);
      wanted.insert(key);
      if (listeners_.count(key) != 0) {
        continue;
      }
      std::string error;
      int fd = net::ListenShared(l.address, static_cast<uint16_t>(l.bind_port), &error);
      if (fd < 0) {
        spdlog::error("worker {}: listener {}: {}", id_, l.name, error);
        errors[l.name] = "listener " + l.name + ": " + error;
        continue;
      }
      listeners_.emplace(key, std::make_unique<ListenerSlot>(*this, fd, l.address, l.bind_port));
    }
  }
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (wanted.count(it->first) == 0) {
      it = listeners_.erase(it);  // existing connections keep being served
    } else {
      ++it;
    }
  }
  // An error lasts only while its listener is configured and unbound.
  std::lock_guard<std::mutex> lock(error_mu_);
  listener_errors_ = std::move(errors);
}

void Worker::OnAccept(int fd, const std::string& address, uint32_t bind_port,
                      const std::string& peer) {
  const ListenerConfig* lc = nullptr;
  if (config_ != nullptr) {
    for (const auto& l : config_->listeners()) {
      if (l.bind_port == bind_port && l.address == address) {
        lc = &l;
        break;
      }
    }
  }
  if (lc == nullptr) {
    ::close(fd);
    return;
  }
  net::SetNoDelay(fd);
  counters_.downstream_cx_total.fetch_add(1, std::memory_order_relaxed);
  counters_.downstream_cx_active.fetch_add(1, std::memory_order_relaxed);
  std::unique_ptr<ActiveConnection> conn;
  if (!lc->filter_chains.empty()) {
    DownstreamInfo info;
    info.peer = peer;
    info.listener_address = lc->address;
    info.listener_bind_port = lc->bind_port;
    info.listener_port = lc->port;
    info.config = config_;  // the chains the inspector chooses from stay alive
    conn = std::make_unique<TlsInspector>(*this, fd, *lc, std::move(info));
  } else if (lc->tcp_route) {
    // A Gateway's TCP server: bytes to the tcp: route's destination (one pick per
    // connection when it has several).
    TcpProxy::Target target;
    target.cluster = lc->tcp_route->Pick(lc->tcp_route->total_weight > 0 ? NextRandom() : 0);
    if (target.cluster != nullptr) {
      target.source = target.cluster->source_address;
      conn = std::make_unique<TcpProxy>(*this, fd, std::string_view(), target);
    } else {
      ::close(fd);
    }
  } else if (lc->capture != v1::CAPTURE_NONE) {
    conn = ServeCaptured(*this, fd, *lc, peer);  // by the connection's original destination
  } else {
    DownstreamInfo info;
    info.peer = peer;
    info.listener_address = lc->address;
    info.listener_bind_port = lc->bind_port;
    info.listener_port = lc->port;
    conn = std::make_unique<DownstreamConnection>(*this, fd, std::move(info));
  }
  if (conn == nullptr) {
    counters_.downstream_cx_active.fetch_sub(1, std::memory_order_relaxed);
    return;
  }
  ActiveConnection* raw = conn.get();
  connections_.emplace(raw, std::move(conn));
  if (draining_) {
    raw->Drain();
  }
}

void Worker::Adopt(std::unique_ptr<ActiveConnection> connection) {
  // A connection handing its socket to another: the count of open connections stays.
  counters_.downstream_cx_active.fetch_add(1, std::memory_order_relaxed);
  ActiveConnection* raw = connection.get();
  connections_.emplace(raw, std::move(connection));
  if (draining_) {
    raw->Drain();
  }
}

void Worker::ConnectionClosed(ActiveConnection* connection) {
  loop_.Defer([this, connection] {
    if (connections_.erase(connection) > 0) {
      counters_.downstream_cx_active.fetch_sub(1, std::memory_order_relaxed);
    }
  });
}

}  // namespace skiff::proxy

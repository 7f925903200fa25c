#include "proxy/server/worker.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>

#include "proxy/net/socket.h"
#include "proxy/server/connection.h"
#include "proxy/server/mirror.h"

namespace skiff::proxy {

void ConfigStore::Publish(std::shared_ptr<const Config> config) {
  std::lock_guard<std::mutex> lock(mu_);
  config_ = std::move(config);
  version_.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<const Config> ConfigStore::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return config_;
}

// Accepts connections on one listening socket of this worker.
class ListenerHandler : public net::IoHandler {
 public:
  ListenerHandler(Worker* worker, int fd, std::string address, uint32_t bind_port)
      : worker_(worker), fd_(fd), address_(std::move(address)), bind_port_(bind_port) {}
  ~ListenerHandler() override {
    worker_->loop().Remove(fd_);
    ::close(fd_);
  }
  void OnEvents(uint32_t /*events*/) override {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      int fd =
          ::accept4(fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        return;  // EAGAIN, or a transient error (EMFILE, ECONNABORTED): try next event
      }
      net::SetNoDelay(fd);
      const auto& config = worker_->config();
      const ListenerConfig* lc = nullptr;
      if (config != nullptr) {
        for (const auto& l : config->listeners()) {
          if (l.bind_port == bind_port_ && l.address == address_) {
            lc = &l;
            break;
          }
        }
      }
      if (lc == nullptr) {
        ::close(fd);
        continue;
      }
      worker_->OnAccept(fd, *lc, net::PeerAddress(addr));
    }
  }
  int fd() const { return fd_; }

 private:
  Worker* worker_;
  int fd_;
  std::string address_;
  uint32_t bind_port_;
};

Worker::Worker(int id, const ProxyOptions& options, ConfigStore* store)
    : id_(id), options_(options), store_(store) {
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
  pending_.clear();
  connections_.clear();
  loop_.RunDeferred();
  for (auto* m : mirrors_) {
    delete m;
  }
  mirrors_.clear();
  for (auto& [key, list] : idle_) {
    for (auto* c : list) {
      delete c;
    }
  }
  idle_.clear();
  listeners_.clear();
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

std::string Worker::last_error() const {
  std::lock_guard<std::mutex> lock(error_mu_);
  return last_error_;
}

void Worker::SyncConfig() {
  uint64_t v = store_->version();
  if (v == seen_version_) {
    return;
  }
  seen_version_ = v;
  config_ = store_->Get();
  rr_.clear();
  mirror_rr_.clear();
  ReconcileListeners();
}

void Worker::ReconcileListeners() {
  std::set<std::string> wanted;
  if (config_ != nullptr) {
    for (const auto& l : config_->listeners()) {
      std::string key = l.address + ":" + std::to_string(l.bind_port);
      wanted.insert(key);
      if (listeners_.count(key) != 0) {
        continue;
      }
      std::string error;
      int fd = net::Listen(l.address, static_cast<uint16_t>(l.bind_port), &error);
      if (fd < 0) {
        spdlog::error("worker {}: listener {}: {}", id_, l.name, error);
        std::lock_guard<std::mutex> lock(error_mu_);
        last_error_ = "listener " + l.name + ": " + error;
        continue;
      }
      auto handler = std::make_unique<ListenerHandler>(this, fd, l.address, l.bind_port);
      loop_.Add(fd, EPOLLIN, handler.get());
      listeners_.emplace(key, std::move(handler));
    }
  }
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (wanted.count(it->first) == 0) {
      it = listeners_.erase(it);  // existing connections keep being served
    } else {
      ++it;
    }
  }
}

void Worker::OnAccept(int fd, const ListenerConfig& listener, const std::string& peer) {
  stats_.downstream_cx_total.fetch_add(1, std::memory_order_relaxed);
  stats_.downstream_cx_active.fetch_add(1, std::memory_order_relaxed);
  auto conn = std::make_unique<ServerConnection>(this, fd, listener, peer);
  ServerConnection* raw = conn.get();
  connections_.emplace(raw, std::move(conn));
}

void Worker::Closed(ServerConnection* conn) {
  if (connections_.erase(conn) > 0) {
    stats_.downstream_cx_active.fetch_sub(1, std::memory_order_relaxed);
  }
}

UpstreamConnection* Worker::AcquireIdle(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end() || it->second.empty()) {
    return nullptr;
  }
  UpstreamConnection* c = it->second.back();
  it->second.pop_back();
  c->timer_.Cancel();
  return c;
}

void Worker::ReleaseIdle(UpstreamConnection* conn) {
  if (conn->max_requests_ != 0 && conn->requests_ >= conn->max_requests_) {
    DestroyUpstream(conn);  // max_requests_per_connection reached
    return;
  }
  auto* cluster = conn->cluster_.get();
  if (cluster->rq_pending_active.load(std::memory_order_relaxed) > 0) {
    auto it = pending_.find(cluster);
    if (it == pending_.end() || it->second.empty()) {
      // Requests wait for a slot on another worker: free this one rather than keep it idle.
      DestroyUpstream(conn);
      return;
    }
  }
  auto& list = idle_[conn->key_];
  if (list.size() >= 1024) {
    DestroyUpstream(conn);
    return;
  }
  list.push_back(conn);
  conn->timer_.SetCallback([this, conn] { ForgetIdle(conn); });
  loop_.Schedule(&conn->timer_, options_.upstream_idle_timeout);
  conn->UpdateInterest(true, false);  // notice the upstream closing it
  WakePending(cluster);
}

void Worker::DestroyUpstream(UpstreamConnection* conn) {
  if (conn->dead_) {
    return;
  }
  conn->dead_ = true;
  conn->timer_.Cancel();
  conn->Uncount();
  WakePending(conn->cluster_.get());
  loop_.Remove(conn->fd_);
  // Events for it may still be pending in this loop turn: delete it afterwards.
  loop_.Defer([conn] { delete conn; });
}

void Worker::ForgetIdle(UpstreamConnection* conn) {
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
  DestroyUpstream(conn);
}

size_t Worker::NextRoundRobin(const upstream::Cluster* cluster) { return rr_[cluster]++; }

void Worker::AddPending(upstream::ClusterState* cluster, ServerConnection* conn) {
  pending_[cluster].push_back(conn);
  if (!pending_timer_.armed()) {
    pending_timer_.SetCallback([this] { PollPending(); });
    loop_.Schedule(&pending_timer_, std::chrono::milliseconds(5));
  }
}

void Worker::RemovePending(upstream::ClusterState* cluster, ServerConnection* conn) {
  auto it = pending_.find(cluster);
  if (it == pending_.end()) {
    return;
  }
  auto& q = it->second;
  for (auto i = q.begin(); i != q.end(); ++i) {
    if (*i == conn) {
      q.erase(i);
      break;
    }
  }
  if (q.empty()) {
    pending_.erase(it);
  }
}

void Worker::WakePending(upstream::ClusterState* cluster) {
  auto it = pending_.find(cluster);
  if (it == pending_.end() || it->second.empty()) {
    return;
  }
  // After the current callback: the waiter takes the slot (or keeps waiting).
  ServerConnection* first = it->second.front();
  loop_.Defer([this, cluster, first] {
    auto p = pending_.find(cluster);
    if (p != pending_.end() && !p->second.empty() && p->second.front() == first) {
      first->OnPoolReady();
    }
  });
}

void Worker::PollPending() {
  std::vector<std::pair<upstream::ClusterState*, ServerConnection*>> firsts;
  for (auto& [cluster, q] : pending_) {
    if (!q.empty()) {
      firsts.emplace_back(cluster, q.front());
    }
  }
  for (auto& [cluster, conn] : firsts) {
    auto p = pending_.find(cluster);
    if (p != pending_.end() && !p->second.empty() && p->second.front() == conn) {
      conn->OnPoolReady();
    }
  }
  if (!pending_.empty()) {
    loop_.Schedule(&pending_timer_, std::chrono::milliseconds(5));
  }
}

}  // namespace skiff::proxy

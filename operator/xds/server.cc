#include "operator/xds/server.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <system_error>
#include <thread>
#include <vector>

namespace skiff::xds {

translate::ProxyGroup GroupOf(const v1::Node& node) {
  translate::ProxyGroup g;
  g.role = node.role().empty() ? "gateway" : node.role();
  g.namespace_ = node.namespace_().empty() ? "default" : node.namespace_();
  for (const auto& [k, v] : node.labels()) {
    g.labels[k] = v;
  }
  return g;
}

struct XdsServer::TypeState {
  bool subscribed = false;
  std::string sent_nonce;
  std::string error;  // the last NACK's message, cleared by an ACK
  // State of the world.
  std::string sent_version;
  std::string acked_version;
  std::string nacked_version;
  // Delta: what the proxy has (ACKed), and what the response in flight would give it.
  std::map<std::string, std::string> confirmed;
  std::map<std::string, std::string> pending;
  bool awaiting = false;
  uint64_t sent_generation = 0;
  uint64_t nacked_generation = ~0ULL;
};

namespace {

// The index of a type URL in kTypeOrder, or -1.
int TypeIndex(const std::string& type_url) {
  for (size_t i = 0; i < kTypeOrder.size(); ++i) {
    if (type_url == kTypeOrder[i]) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

}  // namespace

// What one stream knows, guarded by its own lock. Reactions of one stream run one at a time
// for reads and for writes; Update and Shutdown reach a stream from other threads through
// Kick and Stop. gRPC never runs a read or write reaction inline in Start*, so Start* and
// Finish are called with the stream's lock held: no Start* after Finish, and the reactor is
// alive (OnDone comes only after Finish).
class XdsServer::StreamBase {
 public:
  StreamBase(XdsServer* server, bool delta) : server_(server), delta_(delta) {}
  virtual ~StreamBase() = default;
  StreamBase(const StreamBase&) = delete;
  StreamBase& operator=(const StreamBase&) = delete;

  // Sends what changed, unless a write is in flight (its completion sends it).
  void Kick() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_ && !writing_) {
      Push();
    }
  }
  void Stop() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_) {
      FinishLocked(grpc::Status::OK);
    }
  }

  struct View {
    v1::Node node;
    translate::ProxyGroup group;
    bool delta = false;
    std::map<std::string, TypeState> types;
  };
  // False until the proxy has said who it is.
  bool Describe(View* out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!has_node_) {
      return false;
    }
    out->node = node_;
    out->group = group_;
    out->delta = delta_;
    out->types = types_;
    return true;
  }

  uint64_t id_ = 0;
  std::shared_ptr<StreamBase> self_;  // keeps the reactor alive until OnDone

 protected:
  // With mu_ held, !writing_ and !finished_: starts the next write, if anything is to send.
  virtual void Push() = 0;
  virtual void FinishLocked(const grpc::Status& status) = 0;

  void SetNode(const v1::Node& node) {
    node_ = node;
    group_ = GroupOf(node);
    has_node_ = true;
    spdlog::info("proxy {} connected ({}, role {}, namespace {})", node.id(),
                 delta_ ? "delta" : "sotw", group_.role, group_.namespace_);
  }
  const GroupSnapshot& CurrentSnapshot() {
    if (snap_ == nullptr || snap_->generation != server_->generation()) {
      snap_ = server_->Snapshot(group_);
    }
    return *snap_;
  }
  // The state of a request's type; known types are indexed for the push path.
  TypeState& StateOf(const std::string& type_url) {
    TypeState& ts = types_[type_url];
    if (int i = TypeIndex(type_url); i >= 0) {
      by_order_[static_cast<size_t>(i)] = &ts;
    }
    return ts;
  }
  void CountPush() { server_->metrics_.pushes.fetch_add(1, std::memory_order_relaxed); }
  void Unregister() { server_->Close(id_); }
  std::string NextNonce() { return std::to_string(id_) + "-" + std::to_string(++nonce_); }

  std::mutex mu_;
  XdsServer* const server_;
  const bool delta_;
  bool has_node_ = false;
  v1::Node node_;
  translate::ProxyGroup group_;
  std::map<std::string, TypeState> types_;
  std::array<TypeState*, kTypeOrder.size()> by_order_{};  // subscribed known types, in types_
  uint64_t nonce_ = 0;
  bool writing_ = false;
  bool finished_ = false;
  std::shared_ptr<const GroupSnapshot> snap_;
};

namespace {

// The reactor half shared by both stream kinds: read loop, one write at a time, finish.
template <typename Request, typename Response, typename Base>
class Reactor : public Base, public grpc::ServerBidiReactor<Request, Response> {
 public:
  using Base::Base;

  void Start(bool shutting_down) {
    std::lock_guard<std::mutex> lock(this->mu_);
    if (shutting_down) {
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
      return;
    }
    this->StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::mutex> lock(this->mu_);
    if (this->finished_) {
      return;
    }
    if (!ok) {
      FinishLocked(grpc::Status::OK);  // the proxy closed its side or went away
      return;
    }
    if (!HandleRequest()) {
      FinishLocked(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed request"));
      return;
    }
    if (!this->writing_) {
      this->Push();
    }
    this->StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(this->mu_);
    this->writing_ = false;
    if (ok) {
      this->CountPush();
    }
    if (this->finished_) {
      return;
    }
    if (!ok) {
      FinishLocked(grpc::Status::OK);
      return;
    }
    this->Push();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(this->mu_);
    if (!this->finished_) {
      FinishLocked(grpc::Status::CANCELLED);
    }
  }

  void OnDone() override {
    this->Unregister();
    std::shared_ptr<Base> self;  // the last reference, perhaps: deletes this on return
    std::lock_guard<std::mutex> lock(this->mu_);
    if (this->has_node_) {
      spdlog::info("proxy {} disconnected", this->node_.id());
    }
    self = std::move(this->self_);
  }

 protected:
  // With mu_ held: the bookkeeping for in_; false if it cannot be decoded.
  virtual bool HandleRequest() = 0;

  void FinishLocked(const grpc::Status& status) override {
    this->finished_ = true;
    this->Finish(status);
  }
  // With mu_ held and no write in flight.
  void Write(const Response* response) {
    this->writing_ = true;
    this->StartWrite(response);
  }

  Request in_;
};

void DeleteSharedString(void* p) { delete static_cast<std::shared_ptr<const std::string>*>(p); }

// Field 5 (nonce), length-delimited, of DiscoveryResponse.
std::string NonceField(const std::string& nonce) {
  std::string out;
  out.push_back(static_cast<char>((5 << 3) | 2));
  size_t n = nonce.size();
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  out += nonce;
  return out;
}

}  // namespace

class XdsServer::SotwStream final : public Reactor<grpc::ByteBuffer, grpc::ByteBuffer, StreamBase> {
 public:
  explicit SotwStream(XdsServer* server) : Reactor(server, false) {}

 private:
  bool HandleRequest() override {
    v1::DiscoveryRequest req;
    if (!grpc::SerializationTraits<v1::DiscoveryRequest>::Deserialize(&in_, &req).ok()) {
      return false;
    }
    if (!has_node_ && req.has_node()) {
      SetNode(req.node());
    }
    TypeState& ts = StateOf(req.type_url());
    if (!ts.subscribed) {
      // A proxy that reconnects says which version it has: nothing to send if current.
      ts.subscribed = true;
      ts.sent_version = req.version_info();
      ts.acked_version = req.version_info();
      return true;
    }
    if (req.response_nonce() != ts.sent_nonce) {
      return true;  // stale: answers a response that a newer one replaced
    }
    if (req.has_error_detail()) {
      ts.nacked_version = ts.sent_version;
      ts.error = req.error_detail().message();
      server_->metrics_.nacks.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("proxy {} rejected {} version {}: {}", node_.id(), ShortType(req.type_url()),
                   ts.sent_version, ts.error);
    } else {
      ts.acked_version = req.version_info();
      ts.error.clear();
      ts.nacked_version.clear();
      server_->metrics_.acks.fetch_add(1, std::memory_order_relaxed);
    }
    return true;
  }

  // Push what changed, in Envoy's ADS order, one response at a time.
  void Push() override {
    if (!has_node_) {
      return;
    }
    const GroupSnapshot& snap = CurrentSnapshot();
    for (size_t i = 0; i < kTypeOrder.size(); ++i) {
      if (by_order_[i] == nullptr || !by_order_[i]->subscribed) {
        continue;
      }
      TypeState& ts = *by_order_[i];
      const GroupSnapshot::Type& type = snap.by_order[i];
      const std::string& version = type.version;
      if (version == ts.sent_version) {
        continue;  // up to date, or this very version was NACKed
      }
      ts.sent_version = version;
      ts.sent_nonce = NextNonce();
      // The group's shared bytes (no copy) followed by this stream's nonce.
      const std::shared_ptr<const std::string>& bytes = type.sotw_bytes;
      std::string nonce = NonceField(ts.sent_nonce);
      grpc::Slice slices[2] = {
          grpc::Slice(const_cast<char*>(bytes->data()), bytes->size(), &DeleteSharedString,
                      new std::shared_ptr<const std::string>(bytes)),
          grpc::Slice(nonce)};
      out_ = grpc::ByteBuffer(slices, 2);
      Write(&out_);
      return;
    }
  }

  grpc::ByteBuffer out_;
};

class XdsServer::DeltaStream final
    : public Reactor<v1::DeltaDiscoveryRequest, v1::DeltaDiscoveryResponse, StreamBase> {
 public:
  explicit DeltaStream(XdsServer* server) : Reactor(server, true) {}

 private:
  bool HandleRequest() override {
    const v1::DeltaDiscoveryRequest& req = in_;
    if (!has_node_ && req.has_node()) {
      SetNode(req.node());
    }
    TypeState& ts = StateOf(req.type_url());
    if (!ts.subscribed) {
      ts.subscribed = true;
      for (const auto& [name, version] : req.initial_resource_versions()) {
        ts.confirmed[name] = version;
      }
      return true;
    }
    if (req.response_nonce() != ts.sent_nonce || !ts.awaiting) {
      return true;
    }
    ts.awaiting = false;
    if (req.has_error_detail()) {
      ts.error = req.error_detail().message();
      ts.nacked_generation = ts.sent_generation;
      ts.pending.clear();
      server_->metrics_.nacks.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("proxy {} rejected {} (delta): {}", node_.id(), ShortType(req.type_url()),
                   ts.error);
    } else {
      ts.confirmed = std::move(ts.pending);
      ts.pending.clear();
      ts.error.clear();
      server_->metrics_.acks.fetch_add(1, std::memory_order_relaxed);
    }
    return true;
  }

  void Push() override {
    if (!has_node_) {
      return;
    }
    const GroupSnapshot& snap = CurrentSnapshot();
    for (size_t i = 0; i < kTypeOrder.size(); ++i) {
      if (by_order_[i] == nullptr || !by_order_[i]->subscribed) {
        continue;
      }
      TypeState& ts = *by_order_[i];
      if (ts.awaiting || snap.generation == ts.nacked_generation) {
        continue;
      }
      const ResourceMap& resources = *snap.by_order[i].resources;
      const std::map<std::string, std::string>& versions = snap.by_order[i].resource_versions;
      if (ts.confirmed == versions) {
        continue;
      }
      out_.Clear();
      auto v = versions.begin();  // same keys, same order as resources
      for (const auto& [name, any] : resources) {
        auto c = ts.confirmed.find(name);
        if (c == ts.confirmed.end() || c->second != v->second) {
          auto* r = out_.add_resources();
          r->set_name(name);
          r->set_version(v->second);
          *r->mutable_resource() = any;
        }
        ++v;
      }
      for (const auto& [name, version] : ts.confirmed) {
        if (versions.count(name) == 0) {
          out_.add_removed_resources(name);
        }
      }
      if (out_.resources_size() == 0 && out_.removed_resources_size() == 0) {
        continue;
      }
      out_.set_type_url(kTypeOrder[i]);
      out_.set_system_version_info(snap.by_order[i].version);
      ts.pending = versions;
      ts.awaiting = true;
      ts.sent_generation = snap.generation;
      ts.sent_nonce = NextNonce();
      out_.set_nonce(ts.sent_nonce);
      Write(&out_);
      return;
    }
  }

  v1::DeltaDiscoveryResponse out_;
};

XdsServer::XdsServer() = default;

XdsServer::~XdsServer() { Shutdown(); }

void MsHistogram::Observe(std::chrono::microseconds d) {
  double ms = static_cast<double>(d.count()) / 1000.0;
  size_t i = 0;
  while (i < kBounds.size() && ms > kBounds[i]) {
    ++i;
  }
  if (i < kBounds.size()) {
    buckets[i].fetch_add(1, std::memory_order_relaxed);
  }
  count.fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<uint64_t>(d.count()), std::memory_order_relaxed);
}

std::string MsHistogram::Render(const std::string& name, const std::string& help) const {
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets[i].load(std::memory_order_relaxed);
    char le[32];
    std::snprintf(le, sizeof le, "%g", kBounds[i]);
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  uint64_t n = std::max(count.load(std::memory_order_relaxed), cumulative);
  char sum[64];
  std::snprintf(sum, sizeof sum, "%.3f",
                static_cast<double>(sum_us.load(std::memory_order_relaxed)) / 1000.0);
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(n) + "\n";
  out += name + "_sum " + sum + "\n";
  out += name + "_count " + std::to_string(n) + "\n";
  return out;
}

void XdsServer::Update(std::shared_ptr<const translate::Translator> translator) {
  auto started = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    translator_ = std::move(translator);
    cache_.clear();
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  std::vector<std::shared_ptr<StreamBase>> streams;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    streams.reserve(streams_.size());
    for (const auto& [id, s] : streams_) {
      streams.push_back(s);
    }
  }
  // Each push is a gRPC write (with a connection per proxy, a syscall): spread them over the
  // cores. The caller takes part, so a helper that cannot start only costs time.
  size_t helpers = std::min<size_t>(std::clamp(std::thread::hardware_concurrency(), 1U, 4U) - 1,
                                    streams.size() / 256);
  std::atomic<size_t> next{0};
  auto kick = [&streams, &next] {
    for (size_t i = next.fetch_add(1); i < streams.size(); i = next.fetch_add(1)) {
      streams[i]->Kick();
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < helpers; ++i) {
    try {
      threads.emplace_back(kick);
    } catch (const std::system_error&) {
      break;
    }
  }
  kick();
  for (auto& t : threads) {
    t.join();
  }
  if (!streams.empty()) {
    metrics_.push_time.Observe(std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started));
  }
}

void XdsServer::Shutdown() {
  std::vector<std::shared_ptr<StreamBase>> streams;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    shutdown_ = true;
    for (const auto& [id, s] : streams_) {
      streams.push_back(s);
    }
  }
  for (const auto& s : streams) {
    s->Stop();
  }
}

std::shared_ptr<const GroupSnapshot> XdsServer::Snapshot(const translate::ProxyGroup& group) {
  std::lock_guard<std::mutex> lock(cache_mu_);
  auto it = cache_.find(group);
  if (it != cache_.end()) {
    return it->second;
  }
  auto snap = std::make_shared<GroupSnapshot>();
  snap->generation = generation_.load(std::memory_order_acquire);
  auto start = std::chrono::steady_clock::now();
  snap->resources =
      SplitSnapshot(translator_ != nullptr ? translator_->Build(group) : v1::Snapshot());
  for (const auto& [type, map] : snap->resources) {
    snap->versions[type] = TypeVersion(map);
  }
  for (size_t i = 0; i < kTypeOrder.size(); ++i) {
    const char* type = kTypeOrder[i];
    GroupSnapshot::Type& t = snap->by_order[i];
    t.resources = &snap->resources.at(type);
    t.version = snap->versions.at(type);
    v1::DiscoveryResponse response;
    response.set_version_info(t.version);
    response.set_type_url(type);
    for (const auto& [name, any] : *t.resources) {
      t.resource_versions.emplace_hint(t.resource_versions.end(), name, ResourceVersion(any));
      *response.add_resources() = any;
    }
    t.sotw_bytes = std::make_shared<const std::string>(response.SerializeAsString());
  }
  metrics_.translations.fetch_add(1, std::memory_order_relaxed);
  metrics_.translation_us_total.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count()),
      std::memory_order_relaxed);
  cache_[group] = snap;
  return snap;
}

template <typename S>
S* XdsServer::Open(grpc::CallbackServerContext* /*context*/) {
  auto s = std::make_shared<S>(this);
  bool shutting_down = false;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    s->id_ = ++next_stream_id_;
    shutting_down = shutdown_;
    if (!shutting_down) {
      streams_[s->id_] = s;
    }
  }
  metrics_.connected.fetch_add(1);
  metrics_.streams_total.fetch_add(1);
  s->self_ = s;
  s->Start(shutting_down);
  return s.get();
}

void XdsServer::Close(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    streams_.erase(id);
  }
  metrics_.connected.fetch_sub(1);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* XdsServer::StreamAggregatedResources(
    grpc::CallbackServerContext* context) {
  return Open<SotwStream>(context);
}

grpc::ServerBidiReactor<v1::DeltaDiscoveryRequest, v1::DeltaDiscoveryResponse>*
XdsServer::DeltaAggregatedResources(grpc::CallbackServerContext* context) {
  return Open<DeltaStream>(context);
}

grpc::Status XdsServer::ListProxies(grpc::ServerContext* /*context*/,
                                    const v1::ProxyStatusRequest* /*request*/,
                                    v1::ProxyStatusResponse* response) {
  std::vector<std::shared_ptr<StreamBase>> streams;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    for (const auto& [id, s] : streams_) {
      streams.push_back(s);
    }
  }
  for (const auto& s : streams) {
    StreamBase::View view;
    if (!s->Describe(&view)) {
      continue;
    }
    auto snap = Snapshot(view.group);
    v1::ProxyStatus ps;
    *ps.mutable_node() = view.node;
    ps.set_stream(view.delta ? "delta" : "sotw");
    for (size_t i = 0; i < kTypeOrder.size(); ++i) {
      const char* type = kTypeOrder[i];
      auto* t = ps.add_types();
      t->set_type_url(type);
      const std::string& current = snap->by_order[i].version;
      auto it = view.types.find(type);
      if (it == view.types.end() || !it->second.subscribed) {
        t->set_state("NOT_SENT");
        continue;
      }
      const TypeState& ts = it->second;
      t->set_error(ts.error);
      if (!view.delta) {
        t->set_sent_version(ts.sent_version);
        t->set_acked_version(ts.acked_version);
        if (!ts.error.empty() && ts.nacked_version == ts.sent_version) {
          t->set_state("NACKED");
        } else {
          t->set_state(ts.acked_version == current ? "SYNCED" : "STALE");
        }
      } else {
        t->set_sent_version(current);
        if (!ts.error.empty() && ts.nacked_generation == snap->generation) {
          t->set_state("NACKED");
        } else {
          bool synced = ts.confirmed == snap->by_order[i].resource_versions;
          t->set_state(synced ? "SYNCED" : "STALE");
          if (synced) {
            t->set_acked_version(current);
          }
        }
      }
    }
    *response->add_proxies() = std::move(ps);
  }
  std::sort(response->mutable_proxies()->begin(), response->mutable_proxies()->end(),
            [](const auto& a, const auto& b) { return a.node().id() < b.node().id(); });
  return grpc::Status::OK;
}

}  // namespace skiff::xds

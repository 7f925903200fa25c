#include "operator/xds/server.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <thread>

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

struct XdsServer::StreamState {
  uint64_t id = 0;
  bool delta = false;
  bool has_node = false;
  v1::Node node;
  translate::ProxyGroup group;
  std::map<std::string, TypeState> types;
  std::condition_variable cv;
  uint64_t nonce = 0;
};

XdsServer::XdsServer() = default;

XdsServer::~XdsServer() { Shutdown(); }

void XdsServer::Update(std::shared_ptr<const translate::Translator> translator) {
  std::lock_guard<std::mutex> lock(mu_);
  translator_ = std::move(translator);
  ++generation_;
  cache_.clear();
  for (auto* s : streams_) {
    s->cv.notify_all();
  }
}

void XdsServer::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutdown_ = true;
  for (auto* s : streams_) {
    s->cv.notify_all();
  }
}

std::shared_ptr<const GroupSnapshot> XdsServer::Snapshot(const translate::ProxyGroup& group) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = cache_.find(group);
  if (it != cache_.end()) {
    return it->second;
  }
  auto snap = std::make_shared<GroupSnapshot>();
  snap->generation = generation_;
  auto start = std::chrono::steady_clock::now();
  snap->resources =
      SplitSnapshot(translator_ != nullptr ? translator_->Build(group) : v1::Snapshot());
  for (const auto& [type, map] : snap->resources) {
    snap->versions[type] = TypeVersion(map);
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

namespace {

const v1::Node* NodeOf(const v1::DiscoveryRequest& r) { return r.has_node() ? &r.node() : nullptr; }
const v1::Node* NodeOf(const v1::DeltaDiscoveryRequest& r) {
  return r.has_node() ? &r.node() : nullptr;
}

}  // namespace

template <typename Request, typename Response>
grpc::Status XdsServer::Serve(grpc::ServerContext* context,
                              grpc::ServerReaderWriter<Response, Request>* stream, bool delta) {
  StreamState st;
  st.delta = delta;
  std::deque<Request> queue;
  bool reader_done = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st.id = ++next_stream_id_;
    streams_.insert(&st);
  }
  metrics_.connected.fetch_add(1);
  metrics_.streams_total.fetch_add(1);
  std::thread reader([&] {
    Request req;
    while (stream->Read(&req)) {
      std::lock_guard<std::mutex> lock(mu_);
      queue.push_back(req);
      st.cv.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    reader_done = true;
    st.cv.notify_all();
  });

  uint64_t seen_generation = ~0ULL;
  bool ok = true;
  while (ok) {
    std::deque<Request> batch;
    uint64_t generation = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      st.cv.wait(lock, [&] {
        return !queue.empty() || reader_done || shutdown_ ||
               (st.has_node && generation_ != seen_generation);
      });
      if (shutdown_ || (reader_done && queue.empty())) {
        break;
      }
      batch.swap(queue);
      generation = generation_;
    }
    // ACK / NACK bookkeeping.
    for (const auto& req : batch) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!st.has_node) {
        if (const v1::Node* n = NodeOf(req)) {
          st.node = *n;
          st.group = GroupOf(*n);
          st.has_node = true;
          spdlog::info("proxy {} connected ({}, role {}, namespace {})", n->id(),
                       delta ? "delta" : "sotw", st.group.role, st.group.namespace_);
        }
      }
      TypeState& ts = st.types[req.type_url()];
      if constexpr (std::is_same_v<Request, v1::DiscoveryRequest>) {
        if (!ts.subscribed) {
          // A proxy that reconnects says which version it has: nothing to send if current.
          ts.subscribed = true;
          ts.sent_version = req.version_info();
          ts.acked_version = req.version_info();
          continue;
        }
        if (req.response_nonce() != ts.sent_nonce) {
          continue;  // stale: answers a response that a newer one replaced
        }
        if (req.has_error_detail()) {
          ts.nacked_version = ts.sent_version;
          ts.error = req.error_detail().message();
          metrics_.nacks.fetch_add(1);
          spdlog::warn("proxy {} rejected {} version {}: {}", st.node.id(),
                       ShortType(req.type_url()), ts.sent_version, ts.error);
        } else {
          ts.acked_version = req.version_info();
          ts.error.clear();
          ts.nacked_version.clear();
          metrics_.acks.fetch_add(1);
        }
      } else {
        if (!ts.subscribed) {
          ts.subscribed = true;
          for (const auto& [name, version] : req.initial_resource_versions()) {
            ts.confirmed[name] = version;
          }
          continue;
        }
        if (req.response_nonce() != ts.sent_nonce || !ts.awaiting) {
          continue;
        }
        ts.awaiting = false;
        if (req.has_error_detail()) {
          ts.error = req.error_detail().message();
          ts.nacked_generation = ts.sent_generation;
          ts.pending.clear();
          metrics_.nacks.fetch_add(1);
          spdlog::warn("proxy {} rejected {} (delta): {}", st.node.id(), ShortType(req.type_url()),
                       ts.error);
        } else {
          ts.confirmed = std::move(ts.pending);
          ts.pending.clear();
          ts.error.clear();
          metrics_.acks.fetch_add(1);
        }
      }
    }
    if (!st.has_node) {
      continue;
    }
    seen_generation = generation;
    auto snap = Snapshot(st.group);
    // Push what changed, in Envoy's ADS order.
    for (const char* type : kTypeOrder) {
      Response resp;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = st.types.find(type);
        if (it == st.types.end() || !it->second.subscribed) {
          continue;
        }
        TypeState& ts = it->second;
        const ResourceMap& resources = snap->resources.at(type);
        if constexpr (std::is_same_v<Response, v1::DiscoveryResponse>) {
          const std::string& version = snap->versions.at(type);
          if (version == ts.sent_version) {
            continue;  // up to date, or this very version was NACKed
          }
          resp.set_version_info(version);
          resp.set_type_url(type);
          for (const auto& [name, any] : resources) {
            *resp.add_resources() = any;
          }
          ts.sent_version = version;
          ts.sent_nonce = std::to_string(st.id) + "-" + std::to_string(++st.nonce);
          resp.set_nonce(ts.sent_nonce);
        } else {
          if (ts.awaiting || snap->generation == ts.nacked_generation) {
            continue;
          }
          std::map<std::string, std::string> next;
          for (const auto& [name, any] : resources) {
            std::string v = ResourceVersion(any);
            auto c = ts.confirmed.find(name);
            if (c == ts.confirmed.end() || c->second != v) {
              auto* r = resp.add_resources();
              r->set_name(name);
              r->set_version(v);
              *r->mutable_resource() = any;
            }
            next[name] = v;
          }
          for (const auto& [name, v] : ts.confirmed) {
            if (next.count(name) == 0) {
              resp.add_removed_resources(name);
            }
          }
          if (resp.resources_size() == 0 && resp.removed_resources_size() == 0) {
            continue;
          }
          resp.set_type_url(type);
          resp.set_system_version_info(snap->versions.at(type));
          ts.pending = std::move(next);
          ts.awaiting = true;
          ts.sent_generation = snap->generation;
          ts.sent_nonce = std::to_string(st.id) + "-" + std::to_string(++st.nonce);
          resp.set_nonce(ts.sent_nonce);
        }
      }
      if (!stream->Write(resp)) {
        ok = false;
        break;
      }
      metrics_.pushes.fetch_add(1);
    }
  }
  context->TryCancel();
  reader.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.erase(&st);
  }
  metrics_.connected.fetch_sub(1);
  if (st.has_node) {
    spdlog::info("proxy {} disconnected", st.node.id());
  }
  return grpc::Status::OK;
}

grpc::Status XdsServer::StreamAggregatedResources(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::DiscoveryResponse, v1::DiscoveryRequest>* stream) {
  return Serve(context, stream, false);
}

grpc::Status XdsServer::DeltaAggregatedResources(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::DeltaDiscoveryResponse, v1::DeltaDiscoveryRequest>* stream) {
  return Serve(context, stream, true);
}

grpc::Status XdsServer::ListProxies(grpc::ServerContext* /*context*/,
                                    const v1::ProxyStatusRequest* /*request*/,
                                    v1::ProxyStatusResponse* response) {
  std::vector<std::pair<translate::ProxyGroup, v1::ProxyStatus>> rows;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto* s : streams_) {
      if (!s->has_node) {
        continue;
      }
      v1::ProxyStatus ps;
      *ps.mutable_node() = s->node;
      ps.set_stream(s->delta ? "delta" : "sotw");
      rows.emplace_back(s->group, ps);
    }
  }
  for (auto& [group, ps] : rows) {
    auto snap = Snapshot(group);
    std::lock_guard<std::mutex> lock(mu_);
    StreamState* s = nullptr;
    for (auto* candidate : streams_) {
      if (candidate->has_node && candidate->node.id() == ps.node().id()) {
        s = candidate;
      }
    }
    for (const char* type : kTypeOrder) {
      auto* t = ps.add_types();
      t->set_type_url(type);
      const std::string& current = snap->versions.at(type);
      if (s == nullptr || s->types.count(type) == 0 || !s->types.at(type).subscribed) {
        t->set_state("NOT_SENT");
        continue;
      }
      const TypeState& ts = s->types.at(type);
      t->set_error(ts.error);
      if (!s->delta) {
        t->set_sent_version(ts.sent_version);
        t->set_acked_version(ts.acked_version);
        if (!ts.error.empty() && ts.nacked_version == ts.sent_version) {
          t->set_state("NACKED");
        } else {
          t->set_state(ts.acked_version == current ? "SYNCED" : "STALE");
        }
      } else {
        std::map<std::string, std::string> want;
        for (const auto& [name, any] : snap->resources.at(type)) {
          want[name] = ResourceVersion(any);
        }
        t->set_sent_version(current);
        if (!ts.error.empty() && ts.nacked_generation == snap->generation) {
          t->set_state("NACKED");
        } else {
          bool synced = ts.confirmed == want;
          t->set_state(synced ? "SYNCED" : "STALE");
          if (synced) {
            t->set_acked_version(current);
          }
        }
      }
    }
    *response->add_proxies() = ps;
  }
  std::sort(response->mutable_proxies()->begin(), response->mutable_proxies()->end(),
            [](const auto& a, const auto& b) { return a.node().id() < b.node().id(); });
  return grpc::Status::OK;
}

}  // namespace skiff::xds

#include "operator/xds/server.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <system_error>
#include <thread>
#include <vector>

#include "operator/xds/stream.h"

namespace skiff::xds {

XdsServer::XdsServer(XdsServerOptions options)
    : registry_(options.max_streams), cache_({options.max_groups}, &metrics_) {
  // A group's first snapshot, built on the cache's thread: its streams push it.
  cache_.SetOnPublished([this](const translate::ProxyGroup& group) {
    for (const auto& s : registry_.OfGroup(group)) {
      s->Kick();
    }
  });
}

XdsServer::~XdsServer() {
  Shutdown();
  cache_.Stop();
}

void XdsServer::Update(std::shared_ptr<const translate::Translator> translator) {
  auto started = std::chrono::steady_clock::now();
  cache_.Update(std::move(translator));
  KickAll(started);
}

void XdsServer::UpdateEndpoints(std::shared_ptr<const translate::EndpointTranslator> endpoints) {
  auto started = std::chrono::steady_clock::now();
  cache_.UpdateEndpoints(std::move(endpoints));
  KickAll(started);
}

void XdsServer::KickAll(std::chrono::steady_clock::time_point started) {
  std::vector<std::shared_ptr<StreamBase>> streams = registry_.All();
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
  for (const auto& s : registry_.Shutdown()) {
    s->Stop();
  }
}

template <typename S>
S* XdsServer::Open() {
  auto s = std::make_shared<S>(StreamContext{&cache_, &registry_, &metrics_});
  grpc::Status refuse = registry_.Add(s);
  if (refuse.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
    metrics_.refused.fetch_add(1, std::memory_order_relaxed);
  }
  metrics_.connected.fetch_add(1);
  metrics_.streams_total.fetch_add(1);
  s->self_ = s;
  s->Start(refuse);
  return s.get();
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* XdsServer::StreamAggregatedResources(
    grpc::CallbackServerContext* /*context*/) {
  return Open<SotwStream>();
}

grpc::ServerBidiReactor<v1::DeltaDiscoveryRequest, v1::DeltaDiscoveryResponse>*
XdsServer::DeltaAggregatedResources(grpc::CallbackServerContext* /*context*/) {
  return Open<DeltaStream>();
}

grpc::Status XdsServer::ListProxies(grpc::ServerContext* /*context*/,
                                    const v1::ProxyStatusRequest* /*request*/,
                                    v1::ProxyStatusResponse* response) {
  for (const auto& s : registry_.All()) {
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
      const std::string& current = snap->type(i).version;
      t->set_current_version(current);
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
        // Delta: the system version of the last response sent and of the last one ACKed;
        // SYNCED compares what the proxy confirmed resource by resource.
        t->set_sent_version(ts.sent_version);
        if (!ts.error.empty() && ts.nacked_generation == snap->generation) {
          t->set_state("NACKED");
          t->set_acked_version(ts.acked_version);
        } else {
          bool synced = ts.confirmed == snap->type(i).resource_versions;
          t->set_state(synced ? "SYNCED" : "STALE");
          // Resources equal to the current ones: the proxy has the current version, even
          // when it got them on an earlier stream.
          t->set_acked_version(synced ? current : ts.acked_version);
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

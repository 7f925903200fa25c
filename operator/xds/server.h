#pragma once
// The operator's xDS server: ADS over one gRPC bidi stream per proxy, state of the world
// (sotw_stream.cc) and delta (delta_stream.cc). Proxies with the same (role, labels,
// namespace) share one snapshot from the snapshot cache, which builds them off the gRPC
// threads; the proxy registry (proxy_registry.h) knows the open streams. Per stream and
// type it tracks what was sent, ACKed and NACKed; a NACKed version is not sent again until
// the snapshot changes, and stale nonces are ignored.
//
// Streams use gRPC's callback API (a reactor per stream, no thread per stream). Each stream
// has its own lock; a state-of-the-world response is serialized once per (group snapshot,
// type) and the same bytes are shared by every stream of the group; only the nonce is per
// stream.
#include <grpcpp/support/byte_buffer.h>

#include <memory>

#include "operator/translate/translate.h"
#include "operator/xds/metrics.h"
#include "operator/xds/proxy_registry.h"
#include "operator/xds/snapshot_cache.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace skiff::xds {

struct XdsServerOptions {
  // Groups in the snapshot cache at most. An entry lives while a stream of its group is
  // open (reference counted) and is evicted with the last one; a stream of a further group
  // is refused with RESOURCE_EXHAUSTED.
  size_t max_groups = 4096;
  // Open streams at most; further streams are refused with RESOURCE_EXHAUSTED.
  size_t max_streams = 65536;
};

// State of the world is served raw (shared pre-serialized bytes), delta with typed messages;
// ListProxies is synchronous.
using AdsCallbackService =
    v1::AggregatedDiscoveryService::WithRawCallbackMethod_StreamAggregatedResources<
        v1::AggregatedDiscoveryService::WithCallbackMethod_DeltaAggregatedResources<
            v1::AggregatedDiscoveryService::Service>>;

class XdsServer final : public AdsCallbackService, public v1::ProxyStatusService::Service {
 public:
  explicit XdsServer(XdsServerOptions options = {});
  ~XdsServer() override;

  // New inputs: the snapshots of every connected group are built for them (on the caller's
  // thread), then pushed to every stream.
  void Update(std::shared_ptr<const translate::Translator> translator);
  // Only EndpointSlices and Pods changed: every connected group's endpoints are recomputed
  // and only they are pushed.
  void UpdateEndpoints(std::shared_ptr<const translate::EndpointTranslator> endpoints);
  // Finishes every stream (and any that opens later); call before grpc::Server::Shutdown.
  void Shutdown();

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamAggregatedResources(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<v1::DeltaDiscoveryRequest, v1::DeltaDiscoveryResponse>*
  DeltaAggregatedResources(grpc::CallbackServerContext* context) override;
  grpc::Status ListProxies(grpc::ServerContext* context, const v1::ProxyStatusRequest* request,
                           v1::ProxyStatusResponse* response) override;

  const ServerMetrics& metrics() const { return metrics_; }
  // The snapshot of a group: its streams' (see SnapshotCache::Snapshot).
  std::shared_ptr<const GroupSnapshot> Snapshot(const translate::ProxyGroup& group) {
    return cache_.Snapshot(group);
  }
  // Groups in the snapshot cache now.
  size_t cached_groups() const { return cache_.groups(); }
  // The current generation (bumped by each Update and UpdateEndpoints).
  uint64_t generation() const { return cache_.generation(); }

 private:
  template <typename S>
  S* Open();
  void KickAll(std::chrono::steady_clock::time_point started);

  ServerMetrics metrics_;
  ProxyRegistry registry_;
  SnapshotCache cache_;
};

translate::ProxyGroup GroupOf(const v1::Node& node);

}  // namespace skiff::xds

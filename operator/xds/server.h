#pragma once
// The operator's xDS server: ADS over one gRPC bidi stream per proxy, state of the world and
// delta. Proxies with the same (role, labels, namespace) share one computed snapshot. Per
// stream and type it tracks what was sent, ACKed and NACKed; a NACKed version is not sent
// again until the snapshot changes, and stale nonces are ignored.
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "operator/translate/translate.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace skiff::xds {

struct GroupSnapshot {
  uint64_t generation = 0;
  TypedResources resources;
  std::map<std::string, std::string> versions;  // type -> content version
};

struct ServerMetrics {
  std::atomic<uint64_t> pushes{0};  // responses sent, all types
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> nacks{0};      // rejects
  std::atomic<uint64_t> connected{0};  // streams open now
  std::atomic<uint64_t> streams_total{0};
  std::atomic<uint64_t> translations{0};
  std::atomic<uint64_t> translation_us_total{0};
};

class XdsServer final : public v1::AggregatedDiscoveryService::Service,
                        public v1::ProxyStatusService::Service {
 public:
  XdsServer();
  ~XdsServer() override;

  // New inputs: later snapshots come from this translator. Wakes every stream.
  void Update(std::shared_ptr<const translate::Translator> translator);
  void Shutdown();

  grpc::Status StreamAggregatedResources(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::DiscoveryResponse, v1::DiscoveryRequest>* stream) override;
  grpc::Status DeltaAggregatedResources(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::DeltaDiscoveryResponse, v1::DeltaDiscoveryRequest>* stream)
      override;
  grpc::Status ListProxies(grpc::ServerContext* context, const v1::ProxyStatusRequest* request,
                           v1::ProxyStatusResponse* response) override;

  const ServerMetrics& metrics() const { return metrics_; }
  // The snapshot of a group for the current inputs (computed once per generation).
  std::shared_ptr<const GroupSnapshot> Snapshot(const translate::ProxyGroup& group);

 private:
  struct TypeState;
  struct StreamState;
  template <typename Request, typename Response>
  grpc::Status Serve(grpc::ServerContext* context,
                     grpc::ServerReaderWriter<Response, Request>* stream, bool delta);

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;
  bool shutdown_ = false;
  std::shared_ptr<const translate::Translator> translator_;
  std::map<translate::ProxyGroup, std::shared_ptr<const GroupSnapshot>> cache_;
  std::set<StreamState*> streams_;
  uint64_t next_stream_id_ = 0;
  ServerMetrics metrics_;
};

translate::ProxyGroup GroupOf(const v1::Node& node);

}  // namespace skiff::xds

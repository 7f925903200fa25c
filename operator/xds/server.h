#pragma once
// The operator's xDS server: ADS over one gRPC bidi stream per proxy, state of the world and
// delta. Proxies with the same (role, labels, namespace) share one computed snapshot. Per
// stream and type it tracks what was sent, ACKed and NACKed; a NACKed version is not sent
// again until the snapshot changes, and stale nonces are ignored.
//
// Streams use gRPC's callback API (a reactor per stream, no thread per stream). Each stream
// has its own lock; the server-wide locks guard only the snapshot cache and the stream
// registry. A state-of-the-world response is serialized once per (group snapshot, type) and
// the same bytes are shared by every stream of the group; only the nonce is per stream.
#include <grpcpp/support/byte_buffer.h>

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "operator/translate/translate.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace skiff::xds {

struct GroupSnapshot {
  uint64_t generation = 0;
  TypedResources resources;
  std::map<std::string, std::string> versions;  // type -> content version
  // Per type in kTypeOrder (index i is kTypeOrder[i]), for the push path:
  struct Type {
    const ResourceMap* resources = nullptr;  // points into `resources` above
    std::string version;
    std::map<std::string, std::string> resource_versions;  // name -> ResourceVersion (delta)
    // The serialized state-of-the-world DiscoveryResponse without its nonce; every stream of
    // the group sends these bytes (no copy) followed by its own nonce field.
    std::shared_ptr<const std::string> sotw_bytes;
  };
  std::array<Type, kTypeOrder.size()> by_order;

  GroupSnapshot() = default;
  GroupSnapshot(const GroupSnapshot&) = delete;  // by_order points into resources
  GroupSnapshot& operator=(const GroupSnapshot&) = delete;
};

// A Prometheus histogram of milliseconds, updated with relaxed atomics.
struct MsHistogram {
  static constexpr std::array<double, 12> kBounds = {1,   5,   10,   25,   50,   100,
                                                     250, 500, 1000, 2500, 5000, 10000};
  std::array<std::atomic<uint64_t>, 12> buckets{};  // non-cumulative
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_us{0};
  void Observe(std::chrono::microseconds d);
  // "# HELP/# TYPE" and the _bucket/_sum/_count lines.
  [[nodiscard]] std::string Render(const std::string& name, const std::string& help) const;
};

struct ServerMetrics {
  std::atomic<uint64_t> pushes{0};  // responses sent, all types
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> nacks{0};      // rejects
  std::atomic<uint64_t> connected{0};  // streams open now
  std::atomic<uint64_t> streams_total{0};
  std::atomic<uint64_t> translations{0};
  std::atomic<uint64_t> translation_us_total{0};
  // Time to compute the snapshots of one change and start the pushes to every stream.
  MsHistogram push_time;
};

// State of the world is served raw (shared pre-serialized bytes), delta with typed messages;
// ListProxies is synchronous.
using AdsCallbackService =
    v1::AggregatedDiscoveryService::WithRawCallbackMethod_StreamAggregatedResources<
        v1::AggregatedDiscoveryService::WithCallbackMethod_DeltaAggregatedResources<
            v1::AggregatedDiscoveryService::Service>>;

class XdsServer final : public AdsCallbackService, public v1::ProxyStatusService::Service {
 public:
  XdsServer();
  ~XdsServer() override;

  // New inputs: later snapshots come from this translator. Pushes to every stream.
  void Update(std::shared_ptr<const translate::Translator> translator);
  // Finishes every stream (and any that opens later); call before grpc::Server::Shutdown.
  void Shutdown();

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamAggregatedResources(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<v1::DeltaDiscoveryRequest, v1::DeltaDiscoveryResponse>*
  DeltaAggregatedResources(grpc::CallbackServerContext* context) override;
  grpc::Status ListProxies(grpc::ServerContext* context, const v1::ProxyStatusRequest* request,
                           v1::ProxyStatusResponse* response) override;

  const ServerMetrics& metrics() const { return metrics_; }
  // The snapshot of a group for the current inputs (computed once per generation).
  std::shared_ptr<const GroupSnapshot> Snapshot(const translate::ProxyGroup& group);
  // The current generation (bumped by each Update).
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  struct TypeState;
  class StreamBase;

 private:
  class SotwStream;
  class DeltaStream;
  template <typename S>
  S* Open(grpc::CallbackServerContext* context);
  void Close(uint64_t id);

  // Snapshot cache: translator, generation and per-group snapshots.
  std::mutex cache_mu_;
  std::atomic<uint64_t> generation_{0};
  std::shared_ptr<const translate::Translator> translator_;
  std::map<translate::ProxyGroup, std::shared_ptr<const GroupSnapshot>> cache_;
  // Stream registry.
  std::mutex streams_mu_;
  bool shutdown_ = false;
  std::map<uint64_t, std::shared_ptr<StreamBase>> streams_;
  uint64_t next_stream_id_ = 0;
  ServerMetrics metrics_;
};

translate::ProxyGroup GroupOf(const v1::Node& node);

}  // namespace skiff::xds

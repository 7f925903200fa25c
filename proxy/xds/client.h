#pragma once
// The proxy's xDS client: one ADS stream (state of the world or delta) to the operator. Each
// response is validated completely (the resulting Config is built) before it is published
// and ACKed; an invalid one is NACKed with the reason and the old Config keeps serving. When
// the operator is unreachable the last good Config stays and the client reconnects with
// jittered backoff (0.5 s -> 30 s), telling the operator which versions it already has.
//
// gRPC's own 4 MiB receive limit is lifted: a response larger than `max_response_bytes`
// (--xds-max-response-bytes, 512 MiB by default) is NACKed with its size, so it shows in
// skiffctl proxy-status instead of silently breaking the stream.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "proto/resources.h"
#include "proxy/config/config_store.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace grpc {
class ClientContext;
}

namespace skiff::proxy {

struct XdsClientOptions {
  std::string address;  // host:port
  v1::Node node;
  bool delta = false;
  std::map<uint32_t, uint32_t> port_map;
  int64_t max_response_bytes = int64_t{512} << 20;
};

class XdsClient {
 public:
  XdsClient(XdsClientOptions options, ConfigStore* store, std::function<void()> on_publish);
  ~XdsClient();
  void Start();
  void Stop();

  [[nodiscard]] bool connected() const { return connected_.load(); }
  [[nodiscard]] uint64_t accepted() const { return accepted_count_.load(); }
  [[nodiscard]] uint64_t rejected() const { return rejected_count_.load(); }
  [[nodiscard]] std::string last_error() const;
  // type -> accepted version
  [[nodiscard]] std::map<std::string, std::string> versions() const;
  // True once a response of every resource type has been accepted (the configuration is
  // complete); until then `missing` (if given) names the types still missing.
  [[nodiscard]] bool complete(std::string* missing = nullptr) const;

 private:
  void Run();
  bool SessionSotw(v1::AggregatedDiscoveryService::Stub* stub);
  bool SessionDelta(v1::AggregatedDiscoveryService::Stub* stub);
  // Builds a Config from `candidate`; on success publishes it and adopts the candidate.
  bool TryApply(const xds::TypedResources& candidate, std::string* error);
  // Rebuilds the accepted configuration (DNS answers changed); on the resolver's thread.
  void ReapplyForDns();
  bool ApplyLocked(const xds::TypedResources& candidate, bool adopt, std::string* error);

  XdsClientOptions options_;
  ConfigStore* store_;
  std::function<void()> on_publish_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> accepted_count_{0};
  std::atomic<uint64_t> rejected_count_{0};
  mutable std::mutex mu_;  // guards the fields below and context_
  xds::TypedResources accepted_;
  std::map<std::string, std::string> versions_;
  std::set<std::string> accepted_types_;  // types accepted at least once
  std::string last_error_;
  uint64_t config_version_ = 0;
  grpc::ClientContext* context_ = nullptr;
  std::mutex apply_mu_;    // one Config build and publish at a time (xDS or DNS thread)
  bool dns_used_ = false;  // guarded by apply_mu_
};

}  // namespace skiff::proxy

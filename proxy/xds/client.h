#pragma once
// The proxy's xDS client: one ADS stream (state of the world or delta) to the operator. Each
// response is validated completely (the resulting Config is built) before it is published
// and ACKed; an invalid one is NACKed with the reason and the old Config keeps serving. When
// the operator is unreachable the last good Config stays and the client reconnects with
// jittered backoff (0.5 s -> 30 s), telling the operator which versions it already has.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "proto/resources.h"
#include "proxy/server/worker.h"
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

 private:
  void Run();
  bool SessionSotw(v1::AggregatedDiscoveryService::Stub* stub);
  bool SessionDelta(v1::AggregatedDiscoveryService::Stub* stub);
  // Builds a Config from `candidate`; on success publishes it and adopts the candidate.
  bool TryApply(const xds::TypedResources& candidate, std::string* error);

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
  std::string last_error_;
  uint64_t config_version_ = 0;
  grpc::ClientContext* context_ = nullptr;
};

}  // namespace skiff::proxy

#pragma once
// The proxy registry: the open ADS streams, by id and by proxy group, so that an update
// reaches every stream and a group's first snapshot reaches that group's streams. Bounded
// (further streams are refused); after Shutdown every new stream is refused.
#include <grpcpp/support/status.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "operator/translate/translate.h"

namespace skiff::xds {

class StreamBase;

class ProxyRegistry {
 public:
  explicit ProxyRegistry(size_t max_streams) : max_streams_(max_streams) {}

  // Gives the stream its id and registers it; not OK (UNAVAILABLE when shutting down,
  // RESOURCE_EXHAUSTED at the limit) when it is refused.
  grpc::Status Add(const std::shared_ptr<StreamBase>& stream);
  // The stream's proxy said who it is.
  void SetGroup(uint64_t id, const translate::ProxyGroup& group);
  void Remove(uint64_t id);

  [[nodiscard]] std::vector<std::shared_ptr<StreamBase>> All() const;
  [[nodiscard]] std::vector<std::shared_ptr<StreamBase>> OfGroup(
      const translate::ProxyGroup& group) const;
  // Refuses every later stream; returns the open ones.
  std::vector<std::shared_ptr<StreamBase>> Shutdown();

 private:
  const size_t max_streams_;
  mutable std::mutex mu_;
  bool shutdown_ = false;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::shared_ptr<StreamBase>> streams_;
  std::map<uint64_t, translate::ProxyGroup> group_of_;
  std::map<translate::ProxyGroup, std::set<uint64_t>> by_group_;
};

}  // namespace skiff::xds

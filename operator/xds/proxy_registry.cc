#include "operator/xds/proxy_registry.h"

#include <string>

#include "operator/xds/stream.h"

namespace skiff::xds {

grpc::Status ProxyRegistry::Add(const std::shared_ptr<StreamBase>& stream) {
  std::lock_guard<std::mutex> lock(mu_);
  stream->id_ = ++next_id_;
  if (shutdown_) {
    return {grpc::StatusCode::UNAVAILABLE, "server shutting down"};
  }
  if (streams_.size() >= max_streams_) {
    return {
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        "too many xDS streams: " + std::to_string(max_streams_) + " are open (--max-xds-streams)"};
  }
  streams_[stream->id_] = stream;
  return grpc::Status::OK;
}

void ProxyRegistry::SetGroup(uint64_t id, const translate::ProxyGroup& group) {
  std::lock_guard<std::mutex> lock(mu_);
  if (streams_.count(id) == 0) {
    return;
  }
  group_of_[id] = group;
  by_group_[group].insert(id);
}

void ProxyRegistry::Remove(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(id);
  auto g = group_of_.find(id);
  if (g != group_of_.end()) {
    auto it = by_group_.find(g->second);
    if (it != by_group_.end()) {
      it->second.erase(id);
      if (it->second.empty()) {
        by_group_.erase(it);
      }
    }
    group_of_.erase(g);
  }
}

std::vector<std::shared_ptr<StreamBase>> ProxyRegistry::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<StreamBase>> out;
  out.reserve(streams_.size());
  for (const auto& [id, s] : streams_) {
    out.push_back(s);
  }
  return out;
}

std::vector<std::shared_ptr<StreamBase>> ProxyRegistry::OfGroup(
    const translate::ProxyGroup& group) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<StreamBase>> out;
  auto it = by_group_.find(group);
  if (it != by_group_.end()) {
    for (uint64_t id : it->second) {
      auto s = streams_.find(id);
      if (s != streams_.end()) {
        out.push_back(s->second);
      }
    }
  }
  return out;
}

std::vector<std::shared_ptr<StreamBase>> ProxyRegistry::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shutdown_ = true;
  std::vector<std::shared_ptr<StreamBase>> out;
  for (const auto& [id, s] : streams_) {
    out.push_back(s);
  }
  return out;
}

}  // namespace skiff::xds

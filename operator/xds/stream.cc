#include "operator/xds/stream.h"

#include "operator/xds/proxy_registry.h"

namespace skiff::xds {

namespace {
// A node whose labels take more than this is refused (Kubernetes labels are at most 63-byte
// values under 317-byte keys): its group would be a cache key of that size.
constexpr size_t kMaxNodeLabels = 256;
constexpr size_t kMaxNodeLabelBytes = 64 * 1024;
constexpr size_t kMaxAdminAddressBytes = 256;
}  // namespace

translate::ProxyGroup GroupOf(const v1::Node& node) {
  translate::ProxyGroup g;
  g.role = node.role().empty() ? "gateway" : node.role();
  g.namespace_ = node.namespace_().empty() ? "default" : node.namespace_();
  g.capture = g.role == "sidecar" && node.interception_mode() == "REDIRECT";
  for (const auto& [k, v] : node.labels()) {
    g.labels[k] = v;
  }
  return g;
}

int TypeIndex(const std::string& type_url) {
  for (size_t i = 0; i < kTypeOrder.size(); ++i) {
    if (type_url == kTypeOrder[i]) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

bool StreamBase::Describe(View* out) {
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

grpc::Status StreamBase::SetNode(const v1::Node& node) {
  size_t bytes = 0;
  for (const auto& [k, v] : node.labels()) {
    bytes += k.size() + v.size();
  }
  if (node.labels_size() > static_cast<int>(kMaxNodeLabels) || bytes > kMaxNodeLabelBytes) {
    ctx_.metrics->refused.fetch_add(1, std::memory_order_relaxed);
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "node " + node.id().substr(0, 256) + ": " + std::to_string(node.labels_size()) +
                " labels of " + std::to_string(bytes) + " bytes; at most " +
                std::to_string(kMaxNodeLabels) + " labels of " +
                std::to_string(kMaxNodeLabelBytes) + " bytes"};
  }
  translate::ProxyGroup group = GroupOf(node);
  std::string error;
  entry_ = ctx_.cache->Acquire(group, &error);
  if (entry_ == nullptr) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED, error};
  }
  node_ = node;
  if (node_.admin_address().size() > kMaxAdminAddressBytes) {
    node_.clear_admin_address();  // not an address; only descriptive anyway
  }
  group_ = std::move(group);
  has_node_ = true;
  ctx_.registry->SetGroup(id_, group_);
  spdlog::info("proxy {} connected ({}, role {}, namespace {})", node.id(),
               delta_ ? "delta" : "sotw", group_.role, group_.namespace_);
  return grpc::Status::OK;
}

void StreamBase::ReleaseGroupLocked() {
  if (entry_ != nullptr) {
    ctx_.cache->Release(entry_);
    entry_.reset();
  }
}

void StreamBase::Unregister() {
  ctx_.registry->Remove(id_);
  ctx_.metrics->connected.fetch_sub(1);
}

}  // namespace skiff::xds

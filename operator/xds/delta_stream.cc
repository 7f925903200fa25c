// Delta ADS: per type what the proxy confirmed resource by resource; a response sends only
// the resources that differ and the names removed; the first response of a type goes out
// even when empty; a NACKed response is not sent again until the group's snapshot changes.
#include "operator/xds/stream.h"

namespace skiff::xds {

grpc::Status DeltaStream::HandleRequest() {
  const v1::DeltaDiscoveryRequest& req = in_;
  if (!has_node_ && req.has_node()) {
    if (grpc::Status status = SetNode(req.node()); !status.ok()) {
      return status;
    }
  }
  if (TypeIndex(req.type_url()) < 0) {
    return grpc::Status::OK;  // a type this server does not serve: no state kept for it
  }
  TypeState& ts = StateOf(req.type_url());
  if (!ts.subscribed) {
    ts.subscribed = true;
    for (const auto& [name, version] : req.initial_resource_versions()) {
      ts.confirmed[name] = version;
    }
    return grpc::Status::OK;
  }
  if (req.response_nonce() != ts.sent_nonce || !ts.awaiting) {
    return grpc::Status::OK;
  }
  ts.awaiting = false;
  if (req.has_error_detail()) {
    ts.error = req.error_detail().message();
    ts.nacked_generation = ts.sent_generation;
    ts.pending.clear();
    ctx_.metrics->nacks.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("proxy {} rejected {} (delta): {}", node_.id(), ShortType(req.type_url()),
                 ts.error);
  } else {
    ts.confirmed = std::move(ts.pending);
    ts.pending.clear();
    ts.acked_version = ts.sent_version;
    ts.error.clear();
    ctx_.metrics->acks.fetch_add(1, std::memory_order_relaxed);
  }
  return grpc::Status::OK;
}

void DeltaStream::Push() {
  if (!has_node_) {
    return;
  }
  const GroupSnapshot* snap = CurrentSnapshot();
  if (snap == nullptr) {
    return;  // the group's first snapshot is being built; the builder kicks the stream
  }
  for (size_t i = 0; i < kTypeOrder.size(); ++i) {
    if (by_order_[i] == nullptr || !by_order_[i]->subscribed) {
      continue;
    }
    TypeState& ts = *by_order_[i];
    if (ts.awaiting || snap->generation == ts.nacked_generation) {
      continue;
    }
    const TypeSnapshot& type = snap->type(i);
    const ResourceMap& resources = type.resources;
    const std::map<std::string, std::string>& versions = type.resource_versions;
    if (ts.confirmed == versions && ts.responded) {
      continue;
    }
    out_.Clear();
    auto v = versions.begin();  // same keys, same order as resources
    for (const auto& [name, any] : resources) {
      auto c = ts.confirmed.find(name);
      if (c == ts.confirmed.end() || c->second != v->second) {
        auto* r = out_.add_resources();
        r->set_name(name);
        r->set_version(v->second);
        *r->mutable_resource() = any;
      }
      ++v;
    }
    for (const auto& [name, version] : ts.confirmed) {
      if (versions.count(name) == 0) {
        out_.add_removed_resources(name);
      }
    }
    if (out_.resources_size() == 0 && out_.removed_resources_size() == 0 && ts.responded) {
      continue;
    }
    // The first response of a type goes out even when it changes nothing (an empty type,
    // or a reconnecting proxy that is current): it tells the proxy the type is complete.
    ts.responded = true;
    out_.set_type_url(kTypeOrder[i]);
    out_.set_system_version_info(type.version);
    ts.sent_version = type.version;
    ts.pending = versions;
    ts.awaiting = true;
    ts.sent_generation = snap->generation;
    ts.sent_nonce = NextNonce();
    out_.set_nonce(ts.sent_nonce);
    Write(&out_, i);
    return;
  }
}

}  // namespace skiff::xds

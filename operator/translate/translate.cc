// The translation as its phases: index the objects and check them once (index.cc), a
// status per Istio resource (status.cc); then, per proxy group, the listeners of its role
// with their routes (gateway_listeners.cc, or sidecar_listeners.cc and for a captured
// sidecar sidecar_inbound.cc; routes.cc), the clusters those routes name with their
// endpoints (clusters.cc), and a stable order.
#include "operator/translate/translate.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "operator/translate/builder.h"
#include "operator/translate/index.h"
#include "operator/translate/status.h"

namespace skiff::translate {

Translator::Translator(std::vector<api::Object> objects, MeshConfig mesh)
    : index_(std::make_unique<Index>(std::move(objects))),
      mesh_(mesh),
      statuses_(MakeStatuses(*index_)) {}

Translator::~Translator() = default;

const std::vector<ResourceStatus>& Translator::Statuses() const { return statuses_; }

void Translator::Build(const ProxyGroup& group, v1::Snapshot* snapshot) const {
  Builder(*index_, mesh_, group, snapshot).Build();
}

v1::Snapshot Translator::Build(const ProxyGroup& group) const {
  v1::Snapshot snapshot;
  Build(group, &snapshot);
  return snapshot;
}

void Builder::Build() {
  snapshot_->Clear();
  if (group_.role == "sidecar") {
    BuildSidecar();
    if (group_.capture) {
      BuildInbound();
    }
  } else {
    BuildGateway();
  }
  BuildClusters();
  EmitSecrets();
  if (group_.role == "sidecar") {
    // Only now: the cluster table is keyed by cluster names that the virtual hosts hold.
    DropOverwritten(snapshot_->mutable_route_tables(0)->mutable_virtual_hosts());
  }
  std::sort(snapshot_->mutable_listeners()->begin(), snapshot_->mutable_listeners()->end(),
            [](const auto& a, const auto& b) { return a.port() < b.port(); });
}

EndpointTranslator::EndpointTranslator(std::vector<api::Object> objects) {
  std::erase_if(objects, [](const api::Object& o) {
    return o.kind != api::Kind::kService && o.kind != api::Kind::kEndpointSlice &&
           o.kind != api::Kind::kPod && o.kind != api::Kind::kDestinationRule &&
           o.kind != api::Kind::kServiceEntry;
  });
  index_ = std::make_unique<Index>(std::move(objects));
}

EndpointTranslator::~EndpointTranslator() = default;

void EndpointTranslator::Build(
    const google::protobuf::RepeatedPtrField<v1::Cluster>& clusters,
    google::protobuf::RepeatedPtrField<v1::ClusterLoadAssignment>* endpoints) const {
  endpoints->Clear();
  endpoints->Reserve(clusters.size());
  for (const auto& c : clusters) {
    if (c.original_destination()) {
      continue;  // a captured sidecar's inbound cluster: no endpoints, as BuildClusters
    }
    Builder::ClusterEndpoints(*index_, c, endpoints->Add());
  }
}

std::string SnapshotToJson(const v1::Snapshot& snapshot) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  (void)google::protobuf::util::MessageToJsonString(snapshot, &out, options);
  auto j = nlohmann::json::parse(out);
  // Key material is never printed (skiffctl translate, golden files): private keys show as
  // "[redacted]", as the proxy's /config_dump shows them.
  if (auto it = j.find("secrets"); it != j.end() && it->is_array()) {
    for (auto& s : *it) {
      if (s.contains("privateKey")) {
        s["privateKey"] = "[redacted]";
      }
    }
  }
  return j.dump(2) + "\n";
}

}  // namespace skiff::translate

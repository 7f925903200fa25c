#pragma once
// Translation: a pure, deterministic function from the decoded objects to (a) one snapshot
// per proxy group and (b) a status for every Istio resource. No I/O, no clock, no
// Kubernetes client: the same inputs always give byte-identical outputs.
#include <google/protobuf/arena.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "operator/api/types.h"
#include "skiff/v1/config.pb.h"

namespace skiff::translate {

inline constexpr const char* kDomainSuffix = "svc.cluster.local";
inline constexpr uint32_t kSidecarOutboundPort = 15001;

// Proxies with the same role, labels and namespace share one snapshot.
struct ProxyGroup {
  std::string role = "gateway";  // "gateway" or "sidecar"
  api::Labels labels;
  std::string namespace_ = "default";
  bool operator<(const ProxyGroup& o) const {
    return std::tie(role, labels, namespace_) < std::tie(o.role, o.labels, o.namespace_);
  }
  bool operator==(const ProxyGroup& o) const = default;
};

struct Condition {
  std::string type;    // Accepted, ResolvedRefs
  std::string status;  // "True" / "False"
  std::string reason;
  std::string message;
  bool operator==(const Condition&) const = default;
};

struct ResourceStatus {
  api::Kind kind = api::Kind::kVirtualService;
  std::string namespace_;
  std::string name;
  int64_t observed_generation = 0;
  std::vector<Condition> conditions;
  std::vector<std::string> warnings;
  [[nodiscard]] std::string Ref() const;
  [[nodiscard]] bool Accepted() const;
  bool operator==(const ResourceStatus&) const = default;
};

class Index;  // the objects, indexed and checked once for all proxy groups

class Translator {
 public:
  // Takes every object of the store (pass with std::move to avoid a copy). Objects with
  // error-level messages are not translated; their problems show in Statuses().
  explicit Translator(std::vector<api::Object> objects);
  ~Translator();
  Translator(const Translator&) = delete;
  Translator& operator=(const Translator&) = delete;

  // Status of every Gateway, VirtualService and DestinationRule, sorted by kind/ns/name.
  [[nodiscard]] const std::vector<ResourceStatus>& Statuses() const;
  // Fills `snapshot` (clearing it first) with the snapshot for one proxy group. A snapshot
  // on an arena builds faster and frees at once:
  //   google::protobuf::Arena arena(SnapshotArenaOptions());
  //   auto* snapshot = google::protobuf::Arena::CreateMessage<v1::Snapshot>(&arena);
  //   translator.Build(group, snapshot);
  void Build(const ProxyGroup& group, skiff::v1::Snapshot* snapshot) const;
  // The same, returned on the heap (simpler to keep; slower to build for large snapshots).
  [[nodiscard]] skiff::v1::Snapshot Build(const ProxyGroup& group) const;

 private:
  std::unique_ptr<Index> index_;
  std::vector<ResourceStatus> statuses_;
};

// Options for an arena that holds snapshots: its blocks grow to 2 MiB, and blocks that
// large are backed by transparent huge pages where the system allows it, so that a large
// snapshot costs a few dozen page faults instead of tens of thousands. Small snapshots
// stay in small blocks.
google::protobuf::ArenaOptions SnapshotArenaOptions();

// Resolves a short host ("catalog") to its FQDN in `ns`; hosts with a dot and "*" are kept.
std::string ResolveHost(const std::string& host, const std::string& ns);
// "outbound|<port>|<subset>|<fqdn>"
std::string ClusterName(uint32_t port, const std::string& subset, const std::string& fqdn);
// The intersection of a VirtualService host and a Gateway server host, or "" if none.
std::string IntersectHosts(const std::string& vs_host, const std::string& server_host);

// Protobuf JSON of a snapshot, pretty-printed with sorted, stable layout.
std::string SnapshotToJson(const skiff::v1::Snapshot& snapshot);
std::string StatusesToJson(const std::vector<ResourceStatus>& statuses);

}  // namespace skiff::translate

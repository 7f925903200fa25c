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
inline constexpr uint32_t kSidecarInboundPort = 15006;
// Where a sidecar's inbound clusters connect from (as Istio): the pod's capture rules let
// connections from it reach the app instead of redirecting them to the sidecar again.
inline constexpr const char* kInboundSourceAddress = "127.0.0.6";

// Proxies with the same role, labels, namespace and interception share one snapshot.
struct ProxyGroup {
  std::string role = "gateway";  // "gateway" or "sidecar"
  api::Labels labels;
  std::string namespace_ = "default";
  // A sidecar whose pod's traffic skiff-init redirects to it (the node's interception
  // mode REDIRECT, as Istio's): its 15001 listener routes captured connections by their
  // original destination and it has the inbound listener 15006. Without it, apps use the
  // sidecar as their HTTP proxy.
  bool capture = false;
  bool operator<(const ProxyGroup& o) const {
    return std::tie(role, labels, namespace_, capture) <
           std::tie(o.role, o.labels, o.namespace_, o.capture);
  }
  bool operator==(const ProxyGroup& o) const = default;
};

// Mesh-wide settings (Istio's meshConfig).
struct MeshConfig {
  // outboundTrafficPolicy.mode: a captured connection to a destination that is no Service
  // passes through (ALLOW_ANY, Istio's default) or is refused (REGISTRY_ONLY).
  enum class OutboundTrafficPolicy { kAllowAny, kRegistryOnly };
  OutboundTrafficPolicy outbound_traffic_policy = OutboundTrafficPolicy::kAllowAny;
};

// How a Service port is served to captured connections, from its appProtocol or its name
// (Istio's protocol selection: "<protocol>[-<suffix>]"). HTTP/1.x is served with routes;
// gRPC (always HTTP/2) and TLS-carrying or other non-HTTP protocols are proxied as TCP;
// HTTP/2 names and names that say nothing are detected per connection (HTTP/1 is routed,
// anything else, an HTTP/2 client's preface included, is TCP). Ports that are not TCP
// (UDP, SCTP) are not captured at all.
// kHttp2: HTTP/2 (grpc, http2, h2c): served as HTTP, and its clusters speak HTTP/2.
enum class PortProtocol { kHttp, kHttp2, kTcp, kDetect, kNotTcp };
PortProtocol ServicePortProtocol(const api::ServicePort& port);

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
  explicit Translator(std::vector<api::Object> objects, MeshConfig mesh = {});
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
  MeshConfig mesh_;
  std::vector<ResourceStatus> statuses_;
};

// Endpoints alone, for a change of EndpointSlices and Pods only (as Contour's EndpointSlice
// path skips the rebuild): the endpoints Translator::Build gives a snapshot's clusters,
// from the Services, EndpointSlices, Pods and DestinationRules (for subsets) of `objects`,
// without translating a route. Other kinds are ignored.
class EndpointTranslator {
 public:
  explicit EndpointTranslator(std::vector<api::Object> objects);
  ~EndpointTranslator();
  EndpointTranslator(const EndpointTranslator&) = delete;
  EndpointTranslator& operator=(const EndpointTranslator&) = delete;

  // One ClusterLoadAssignment per cluster, in the clusters' order (each cluster's name,
  // service, port and subset are read).
  void Build(const google::protobuf::RepeatedPtrField<skiff::v1::Cluster>& clusters,
             google::protobuf::RepeatedPtrField<skiff::v1::ClusterLoadAssignment>* endpoints) const;

 private:
  std::unique_ptr<Index> index_;
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

#pragma once
// The snapshot of one proxy group, built in phases (translate.cc lists them): the listeners
// of its role with their route tables, then the clusters the routes refer to with their
// endpoints. One Builder per snapshot; it holds the cluster table and scratch buffers.
#include <google/protobuf/repeated_ptr_field.h>

#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "operator/translate/index.h"
#include "operator/translate/translate.h"

namespace skiff::translate {

// Sorts virtual hosts by name, keeping the order in which they were added among those with
// one name (a Service that lists a port twice gives two): the last one counts.
void SortByName(google::protobuf::RepeatedPtrField<v1::VirtualHost>* vhosts);

// Of virtual hosts sorted by SortByName, drops all but the last of each name.
void DropOverwritten(google::protobuf::RepeatedPtrField<v1::VirtualHost>* vhosts);

class Builder {
 public:
  Builder(const Index& index, const MeshConfig& mesh, const ProxyGroup& group,
          v1::Snapshot* snapshot)
      : index_(index), mesh_(mesh), group_(group), snapshot_(snapshot) {}

  // Fills the snapshot (translate.cc).
  void Build();

  // The endpoints of one cluster of a snapshot, as BuildClusters gives them (clusters.cc),
  // for the EndpointTranslator.
  static void ClusterEndpoints(const Index& index, const v1::Cluster& c,
                               v1::ClusterLoadAssignment* cla);

 private:
  // -- listeners, by role (gateway_listeners.cc, sidecar_listeners.cc, sidecar_inbound.cc) --
  // A server host, split: `ns/host`, `./host`, `*/host` or `host`.
  struct ServerHost {
    bool any_namespace = true;
    std::string_view ns;
    std::string_view host;
  };
  // A server bound to this proxy, with its gateway.
  struct Bound {
    const api::Object* gateway;
    std::string key;  // "ns/name" of the gateway
    std::vector<ServerHost> hosts;
    bool https_redirect = false;  // tls.httpsRedirect: every request goes to https
    const api::Server* server = nullptr;
    size_t server_index = 0;  // in the gateway's spec.servers
  };
  void BuildGateway();
  // The virtual hosts of the servers `bounds` (one port) into `table`.
  void FillGatewayTable(uint32_t port, const std::vector<const Bound*>& bounds,
                        v1::RouteTable* table);
  // A TLS server's filter chain (none when its certificates cannot be had).
  void AddFilterChain(uint32_t port, const Bound& b, v1::Listener* listener);
  static void SetServerNames(const Bound& b, v1::FilterChain* fc);
  // PASSTHROUGH: the VirtualServices' tls: routes bound to the server.
  void AddSniRoutes(uint32_t port, const Bound& b, v1::FilterChain* fc);
  // The first tcp: route of `vs` that applies to this proxy group on `port`, or null;
  // `bound(refs)` says whether a gateways list names where it is served (a Gateway of a
  // TCP server, or the mesh for a captured sidecar's TCP port).
  template <typename Bound>
  const api::TCPRoute* FirstTcpRoute(const api::VirtualService& vs, uint32_t port,
                                     const Bound& bound) const {
    for (const auto& route : vs.tcp) {
      if (route.route.empty()) {
        continue;
      }
      bool applies = route.match.empty() && bound(vs.gateways);
      for (const auto& m : route.match) {
        applies =
            applies || (bound(m.gateways.empty() ? vs.gateways : m.gateways) &&
                        (m.port == 0 || m.port == port) && !m.destination_subnets &&
                        (m.source_namespace.empty() || m.source_namespace == group_.namespace_) &&
                        LabelsMatch(m.source_labels, group_.labels));
      }
      if (applies) {
        return &route;
      }
    }
    return nullptr;
  }
  // TCP servers: the first VirtualService tcp: route bound to one of them; false if none.
  bool SetTcpRoute(uint32_t port, const std::vector<const Bound*>& bounds, v1::TcpRoute* out);
  // A tcp:/tls: route's destinations: the heaviest as `cluster`, all of them weighted when
  // there are several.
  template <typename Out>
  void SetL4Destinations(const std::vector<api::RouteDestination>& route, const std::string& ns,
                         uint32_t port, Out* out) {
    const api::RouteDestination* best = &route[0];
    for (const auto& rd : route) {
      if (rd.weight > best->weight) {
        best = &rd;
      }
    }
    SetDestinationCluster(best->destination, ns, port, out->mutable_cluster());
    if (route.size() > 1) {
      for (const auto& rd : route) {
        auto* wc = out->add_clusters();
        SetDestinationCluster(rd.destination, ns, port, wc->mutable_cluster());
        wc->set_weight(static_cast<uint32_t>(rd.weight));
      }
    }
  }

  // -- TLS (tls.cc) --
  // A terminating server's context, its Secrets added to the snapshot; false when its
  // credentialName cannot be resolved (the Gateway's status says why).
  bool ServerTlsContext(const Bound& b, v1::TlsServerContext* ctx);
  // DestinationRule trafficPolicy.tls on a cluster (`tls` may be null: none, or DISABLE).
  void ApplyClientTls(const api::ClientTLSSettings* tls, std::string_view host, v1::Cluster* c);
  // A Secret for the snapshot (once per name); returns its name.
  const std::string& AddSecret(v1::Secret secret);
  // The Secrets the listeners and clusters name, sorted, into the snapshot.
  void EmitSecrets();
  // The outbound listener (15001), with the captured Services when the group is captured.
  void BuildSidecar();
  // A captured sidecar's inbound listener (15006), its route tables and clusters.
  void BuildInbound();

  // -- routes (routes.cc) --
  void AddDefaultRoute(const Index::ServiceEntry& svc, uint32_t port, v1::VirtualHost* vh);

  static void SetDefaultRetry(v1::RetryPolicy* rp);

  // Appends the routes of `vs_obj` that apply to this gateway (`gateway_key`, or "mesh"),
  // listener port (gateways) or service port (sidecars).
  void AppendRoutes(const api::Object& vs_obj, std::string_view gateway_key, uint32_t listener_port,
                    uint32_t service_port, v1::VirtualHost* vh);

  // One rule: a route per match block that applies here (or one route, with no match).
  // `ns`: where the rule's hosts and gateway references resolve; `mirror_ns`: its mirrors'.
  void AppendRule(const api::HTTPRoute& http, const std::string& ns, const std::string& mirror_ns,
                  std::string_view gateway_key, uint32_t port, uint32_t service_port,
                  std::string* source, v1::VirtualHost* vh);

  // Does a match block apply to this gateway (or "mesh"), port and proxy group?
  bool MatchApplies(const api::HTTPMatchRequest& m, std::string_view ns,
                    std::string_view gateway_key, uint32_t port) const;

  // The routes of the delegate VirtualService a root rule names, merged with the rule.
  void AppendDelegated(const api::HTTPRoute& root, const std::string& root_ns,
                       std::string_view gateway_key, uint32_t port, uint32_t service_port,
                       std::string root_source, v1::VirtualHost* vh);

  void EmitRoute(const api::HTTPRoute& http, const api::HTTPMatchRequest* m, const std::string& ns,
                 const std::string& mirror_ns, uint32_t request_port, uint32_t service_port,
                 const std::string& source, v1::VirtualHost* vh);

  void SetRetry(const api::HTTPRetry& in, v1::RetryPolicy* rp);

  // -- clusters and endpoints (clusters.cc) --
  // The Service of a host (FQDN). The destinations of one VirtualService mostly share a
  // host, so the last one is remembered.
  const Index::ServiceEntry* ServiceFor(std::string_view fqdn);

  // Writes the name of the cluster a destination goes to into `*name`, and registers it.
  void SetDestinationCluster(const api::Destination& d, const std::string& ns,
                             uint32_t service_port, std::string* name);

  // Writes "outbound|<port>|<subset>|<fqdn>" into `*name`, a string of the snapshot, and
  // registers the cluster (keyed by a view of that string, which lives as long as the
  // snapshot).
  void SetCluster(std::string_view fqdn, uint32_t port, std::string_view subset,
                  const Index::ServiceEntry* svc, std::string* name);

  // The sections of a DestinationRule's traffic policy that apply to one cluster (null:
  // the defaults).
  struct EffectivePolicy {
    const api::LoadBalancerSettings* load_balancer = nullptr;
    const api::ConnectionPoolSettings* connection_pool = nullptr;
    const api::OutlierDetection* outlier_detection = nullptr;
    const api::ClientTLSSettings* tls = nullptr;
  };
  // As Istio merges them for service port `port`: the top-level policy, where its
  // portLevelSettings name the port replaced by that entry as a whole; then each section
  // the subset's policy sets, and where the subset's portLevelSettings name the port,
  // replaced by that entry as a whole.
  static EffectivePolicy PolicyFor(const api::TrafficPolicy* base, const api::TrafficPolicy* subset,
                                   uint32_t port);
  static void ApplyPolicy(const EffectivePolicy& policy, v1::Cluster* c);

  void BuildClusters();

  static void AddEndpoints(const Index::ServiceEntry& entry, uint32_t port,
                           const api::Subset* subset, v1::ClusterLoadAssignment* cla);

  // A cluster the routes refer to, by name ("outbound|<port>|<subset>|<fqdn>"): the name
  // ends with the subset and the FQDN, whose sizes are kept.
  struct ClusterKey {
    uint32_t port = 0;
    size_t subset_size = 0;
    size_t fqdn_size = 0;
    const Index::ServiceEntry* service = nullptr;  // of the FQDN
  };

  const Index& index_;
  const MeshConfig& mesh_;
  const ProxyGroup& group_;
  v1::Snapshot* snapshot_;
  std::unordered_map<std::string_view, ClusterKey> clusters_;  // views of snapshot strings
  std::map<std::string, v1::Secret> secrets_;                  // by name
  // Scratch buffers, reused to keep allocations out of the per-route work.
  std::string fqdn_buf_, source_buf_;
  std::string last_service_fqdn_;
  const Index::ServiceEntry* last_service_ = nullptr;
  bool have_last_service_ = false;
  std::vector<std::string_view> conds_;
  std::vector<uint32_t> codes_;
};

}  // namespace skiff::translate

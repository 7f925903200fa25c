#pragma once
// The objects of one translation, indexed and checked once for all proxy groups: the first
// object of each key, the valid Istio resources in creation order, Services by FQDN with
// their EndpointSlices and the Pod of each endpoint, DestinationRules by host, delegates.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "operator/api/types.h"
#include "operator/translate/support.h"

namespace skiff::translate {

class Index {
 public:
  explicit Index(std::vector<api::Object> objects);

  // An EndpointSlice, with the Pod each of its endpoints targets (or nullptr).
  struct Slice {
    const api::Object* object;
    std::vector<const api::Object*> pods;
  };
  // A Service, with its EndpointSlices by name; or one host of a ServiceEntry, as a
  // Service made from it (ports, addresses) with a slice per endpoint (each with a Pod that
  // carries the endpoint's labels, or the Pod its workloadSelector selected).
  struct ServiceEntry {
    std::string fqdn;
    const api::Object* object;
    std::vector<Slice> slices;
    const api::Object* service_entry = nullptr;  // the ServiceEntry this host comes from
  };

  [[nodiscard]] const ServiceEntry* ServiceEntryFor(std::string_view fqdn) const {
    auto it = service_lookup.find(fqdn);
    return it == service_lookup.end() ? nullptr : it->second;
  }
  [[nodiscard]] const api::Object* Service(std::string_view fqdn) const {
    const ServiceEntry* entry = ServiceEntryFor(fqdn);
    return entry == nullptr ? nullptr : entry->object;
  }
  [[nodiscard]] const api::Object* DestinationRuleFor(std::string_view fqdn) const;
  // The subset of DestinationRule `dr` (which may be null) called `subset`, if any.
  [[nodiscard]] static const api::Subset* FindSubset(const api::Object* dr,
                                                     std::string_view subset) {
    if (dr == nullptr) {
      return nullptr;
    }
    for (const auto& s : dr->As<api::DestinationRule>().subsets) {
      if (s.name == subset) {
        return &s;
      }
    }
    return nullptr;
  }
  [[nodiscard]] bool GatewayExists(std::string_view key) const {
    return gateway_by_key.find(key) != gateway_by_key.end();
  }

  // The VirtualService a root's http[].delegate names, if it can be one: valid, without
  // hosts, and exported to the root's namespace. Otherwise null, and `*why` says why.
  [[nodiscard]] const api::Object* Delegate(const api::Delegate& d, const std::string& root_ns,
                                            std::string* why) const;

  // The port a destination without an explicit port goes to (`svc`: the Service of its
  // host, if any).
  [[nodiscard]] static uint32_t DestinationPort(const api::Destination& d, const api::Object* svc,
                                                uint32_t context_port);

  // A TLS Secret, its material checked once (secrets.cc) when a Gateway or a
  // DestinationRule names it.
  struct SecretEntry {
    const api::Object* object = nullptr;
    bool checked = false;
    // Why its chain and key cannot serve, why its CA certificates cannot be used ("" when
    // they can; an unchecked Secret is never used).
    std::string cert_problem = "was not checked";
    std::string ca_problem = "was not checked";
    [[nodiscard]] const api::Secret& secret() const { return object->As<api::Secret>(); }
  };
  [[nodiscard]] const SecretEntry* SecretFor(std::string_view ns, std::string_view name) const;

  // What a TLS server's certificates come from, or why it cannot be served. As Istio, its
  // credentialName is a Secret of the gateway proxy's namespace (`proxy_ns`); when that
  // namespace has none of that name (or is not known: empty), the Gateway's own (`ns`).
  struct ServerCredentials {
    const SecretEntry* cert = nullptr;  // credentialName
    const SecretEntry* ca = nullptr;    // its own CA, or the `<name>-cacert` Secret's
    std::string ns;                     // the namespace they were taken from
    std::string problem;                // "spec.servers[N].tls.credentialName: ..." or empty
  };
  [[nodiscard]] ServerCredentials CredentialsFor(const std::string& ns,
                                                 const api::ServerTLSSettings& tls,
                                                 size_t server_index,
                                                 const std::string& proxy_ns = "") const;

  std::vector<api::Object> owned;
  // Every Gateway, VirtualService and DestinationRule (valid or not) by kind/ns/name.
  std::vector<const api::Object*> istio;
  // The valid ones, in creation order.
  std::vector<const api::Object*> gateways, virtual_services, destination_rules, service_entries;
  std::map<std::string, const api::Object*, std::less<>> gateway_by_key;  // "ns/name"
  std::map<std::string, const api::Object*, std::less<>>
      vs_by_key;                       // every VirtualService, "ns/name"
  std::vector<ServiceEntry> services;  // by FQDN
  std::unordered_map<std::string_view, const ServiceEntry*> service_lookup;  // into services
  StringMap<const api::Object*> dr_by_host;  // resolved host -> first DestinationRule
  std::vector<std::pair<std::string_view, const api::Object*>> wildcard_drs;  // sorted by host
  std::unordered_map<const api::Object*, const api::Object*> shadowed_drs;    // ignored -> first
  StringMap<SecretEntry> secrets;                                             // "ns/name"
  // The Services, EndpointSlices and Pods made from ServiceEntries (stable addresses).
  std::deque<api::Object> made;
  // Hosts of valid ServiceEntries that have no endpoints skiff can serve (resolution NONE,
  // or DNS names only): not made into services, so that a captured sidecar's connections
  // to them still pass through to where the client connected; known to the status checks.
  std::set<std::string, std::less<>> unserved_entry_hosts;
  [[nodiscard]] bool KnownHost(std::string_view fqdn) const {
    return service_lookup.find(fqdn) != service_lookup.end() ||
           unserved_entry_hosts.find(fqdn) != unserved_entry_hosts.end();
  }

 private:
  struct IstioKeys;
  // Sorts `istio` by (kind, namespace, name), and lists the valid Gateways,
  // VirtualServices and DestinationRules in creation order: (creationTimestamp, namespace,
  // name).
  void SortIstio(IstioKeys* istio_keys);
  // Adds the hosts of the valid ServiceEntries to `services` (after the Kubernetes
  // Services, which win a shared host; of two ServiceEntries the older one does).
  void AddServiceEntries(const std::vector<const api::Object*>& pods);
  // Checks the PEM of the Secrets Gateways and DestinationRules name (secrets.cc).
  void CheckReferencedSecrets();
};

}  // namespace skiff::translate

#include "operator/translate/index.h"

#include <algorithm>
#include <tuple>

#include "common/strings.h"
#include "operator/api/names.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

using api::Kind;
using api::Object;

namespace {

// The objects by (kind, namespace, name), the first of each key only: an open-addressing
// table of object indexes, cheap enough to run over the whole store.
class KeySet {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  explicit KeySet(const std::vector<Object>& objects) : objects_(objects) {
    size_t capacity = 16;
    while (capacity < 2 * objects.size()) {
      capacity *= 2;
    }
    table_.assign(capacity, kNone);
  }
  // Adds objects[i]; false if an object with its key was added before.
  bool Insert(size_t i) {
    const Object& o = objects_[i];
    uint32_t& slot = Slot(o.kind, o.meta.namespace_, o.meta.name);
    if (slot != kNone) {
      return false;
    }
    slot = static_cast<uint32_t>(i);  // a store holds far fewer than 2^32 objects
    return true;
  }
  // The index of the object with this key, or kNone.
  uint32_t Find(Kind kind, std::string_view ns, std::string_view name) {
    return Slot(kind, ns, name);
  }

 private:
  uint32_t& Slot(Kind kind, std::string_view ns, std::string_view name) {
    const size_t mask = table_.size() - 1;
    std::hash<std::string_view> hash;
    for (size_t h = (hash(ns) * 31 + hash(name)) * 7 + static_cast<size_t>(kind);; ++h) {
      uint32_t& slot = table_[h & mask];
      if (slot == kNone) {
        return slot;
      }
      const Object& o = objects_[slot];
      if (o.kind == kind && o.meta.name == name && o.meta.namespace_ == ns) {
        return slot;
      }
    }
  }

  const std::vector<Object>& objects_;
  std::vector<uint32_t> table_;
};

// Numbers strings so that comparing the numbers compares the strings.
class Ranker {
 public:
  uint32_t Id(std::string_view s) {
    auto [it, inserted] = ids_.try_emplace(s, static_cast<uint32_t>(values_.size()));
    if (inserted) {
      values_.push_back(s);
    }
    return it->second;
  }
  // Call once all strings have an Id; then Rank(Id(s)) orders as s does.
  void Finish() {
    std::vector<uint32_t> order(values_.size());
    for (uint32_t i = 0; i < order.size(); ++i) {
      order[i] = i;
    }
    std::sort(order.begin(), order.end(),
              [this](uint32_t a, uint32_t b) { return values_[a] < values_[b]; });
    ranks_.resize(values_.size());
    for (uint32_t r = 0; r < order.size(); ++r) {
      ranks_[order[r]] = r;
    }
  }
  [[nodiscard]] uint32_t Rank(uint32_t id) const { return ranks_[id]; }

 private:
  std::unordered_map<std::string_view, uint32_t> ids_;
  std::vector<std::string_view> values_;
  std::vector<uint32_t> ranks_;
};

}  // namespace

// Sort keys of the Gateways, VirtualServices and DestinationRules: strings as ranks
// and 8-byte prefixes, so that sorting compares numbers instead of chasing pointers into
// the large, scattered objects.
struct Index::IstioKeys {
  struct Key {
    Kind kind;
    bool valid;
    uint32_t ns;
    uint32_t timestamp;
    uint64_t name_prefix;
    const Object* object;
  };
  void Add(const Object& o, bool valid) {
    keys.push_back({o.kind, valid, namespaces.Id(o.meta.namespace_),
                    timestamps.Id(o.meta.creation_timestamp), Prefix(o.meta.name), &o});
  }
  std::vector<Key> keys;
  Ranker namespaces;
  Ranker timestamps;
};

Index::Index(std::vector<Object> objects) : owned(std::move(objects)) {
  // One pass over the objects (there are many, and they are large): keep the first of
  // each key, and sort each kind into its place.
  std::vector<const Object*> slices;
  std::vector<const Object*> pods;
  std::vector<bool> valid_objects(owned.size());
  IstioKeys keys;
  KeySet seen(owned);
  for (size_t i = 0; i < owned.size(); ++i) {
    if (!seen.Insert(i)) {
      continue;  // a duplicate (the store never holds two): the first one counts
    }
    const Object& o = owned[i];
    bool valid = o.Valid();
    valid_objects[i] = valid;
    switch (o.kind) {
      case Kind::kGateway:
      case Kind::kVirtualService:
      case Kind::kDestinationRule:
      case Kind::kServiceEntry:
        keys.Add(o, valid);
        if (o.kind == Kind::kGateway && valid) {
          gateway_by_key[o.meta.namespace_ + "/" + o.meta.name] = &o;
        }
        if (o.kind == Kind::kVirtualService) {
          vs_by_key[o.meta.namespace_ + "/" + o.meta.name] = &o;
        }
        break;
      case Kind::kService:
        if (valid) {
          std::string fqdn;
          fqdn.reserve(o.meta.name.size() + o.meta.namespace_.size() + 19);
          fqdn.append(o.meta.name).append(".").append(o.meta.namespace_).append(".");
          fqdn.append(kDomainSuffix);
          services.push_back({std::move(fqdn), &o, {}});
        }
        break;
      case Kind::kEndpointSlice:
        if (valid) {
          slices.push_back(&o);
        }
        break;
      case Kind::kPod:
        if (valid) {
          pods.push_back(&o);  // (and found through `seen`)
        }
        break;
      case Kind::kSecret:
        // Invalid ones too: a Gateway that names one says why it cannot be served.
        secrets[o.meta.namespace_ + "/" + o.meta.name].object = &o;
        break;
    }
  }
  // The valid object of a kind with this namespace and name, if any.
  auto find = [&](Kind kind, std::string_view ns, std::string_view name) -> const Object* {
    uint32_t i = seen.Find(kind, ns, name);
    return i != KeySet::kNone && valid_objects[i] ? &owned[i] : nullptr;
  };
  SortIstio(&keys);

  dr_by_host.reserve(destination_rules.size());
  for (const Object* dr : destination_rules) {
    std::string host = ResolveHost(dr->As<api::DestinationRule>().host, dr->meta.namespace_);
    auto [it, inserted] = dr_by_host.emplace(std::move(host), dr);
    if (!inserted) {
      shadowed_drs[dr] = it->second;
    }
  }
  for (const auto& [host, dr] : dr_by_host) {
    if (StartsWith(host, "*")) {
      wildcard_drs.emplace_back(host, dr);
    }
  }
  std::sort(wildcard_drs.begin(), wildcard_drs.end());

  CheckReferencedSecrets();
  AddServiceEntries(pods);

  // By FQDN; of two Services with one FQDN the first one counts.
  std::stable_sort(services.begin(), services.end(),
                   [](const auto& a, const auto& b) { return a.fqdn < b.fqdn; });
  services.erase(std::unique(services.begin(), services.end(),
                             [](const auto& a, const auto& b) { return a.fqdn == b.fqdn; }),
                 services.end());
  service_lookup.reserve(services.size());
  std::vector<ServiceEntry*> entry_of(owned.size(), nullptr);  // by object index
  for (auto& entry : services) {
    service_lookup.emplace(entry.fqdn, &entry);
    if (entry.service_entry == nullptr) {
      entry_of[static_cast<size_t>(entry.object - owned.data())] = &entry;
    }
  }
  // Each Service's EndpointSlices by name, and the Pod each endpoint targets: resolved
  // once here rather than for every cluster (and proxy group) that uses them.
  for (const Object* slice : slices) {
    const auto& spec = slice->As<api::EndpointSlice>();
    const Object* svc = find(Kind::kService, slice->meta.namespace_, spec.service_name);
    ServiceEntry* entry =
        svc != nullptr ? entry_of[static_cast<size_t>(svc - owned.data())] : nullptr;
    if (entry == nullptr) {
      continue;
    }
    Slice& out = entry->slices.emplace_back(Slice{slice, {}});
    out.pods.reserve(spec.endpoints.size());
    for (const auto& e : spec.endpoints) {
      out.pods.push_back(
          e.target_kind == "Pod" ? find(Kind::kPod, e.target_namespace, e.target_name) : nullptr);
    }
  }
  for (auto& entry : services) {
    if (entry.service_entry != nullptr) {
      continue;  // in endpoint order
    }
    std::sort(entry.slices.begin(), entry.slices.end(), [](const Slice& a, const Slice& b) {
      return a.object->meta.name < b.object->meta.name;
    });
  }
}

void Index::AddServiceEntries(const std::vector<const Object*>& pods) {
  for (const Object* se_obj : service_entries) {
    const auto& se = se_obj->As<api::ServiceEntry>();
    const std::string& ns = se_obj->meta.namespace_;
    api::Service svc;
    for (const auto& p : se.ports) {
      api::ServicePort sp;
      sp.name = p.name;
      sp.port = p.number;
      if (p.target_port != 0) {
        sp.target_port = std::to_string(p.target_port);
      }
      sp.protocol = p.protocol == "UDP" ? "UDP" : "";
      // http, http2, grpc, https, tls, tcp, ...; unset: detected (Istio does not read a
      // ServiceEntry port's name for its protocol).
      sp.app_protocol = p.protocol.empty() ? "auto" : ToLower(p.protocol);
      svc.ports.push_back(std::move(sp));
    }
    for (const auto& a : se.addresses) {
      std::string_view ip = a;
      if (EndsWith(ip, "/32") || EndsWith(ip, "/128")) {
        ip = ip.substr(0, ip.find('/'));
      }
      if (api::IsValidIp(ip)) {
        svc.cluster_ips.emplace_back(ip);
      }
    }
    if (!svc.cluster_ips.empty()) {
      svc.cluster_ip = svc.cluster_ips[0];
    }
    // The port an endpoint takes for each service port: its own port of that name, else
    // targetPort, else the port's number.
    auto slice_ports = [&](const api::WorkloadEntry* e) {
      std::vector<api::EndpointSlice::Port> out;
      for (const auto& p : se.ports) {
        uint32_t port = p.target_port != 0 ? p.target_port : p.number;
        if (e != nullptr) {
          if (auto it = e->ports.find(p.name); it != e->ports.end()) {
            port = it->second;
          }
        }
        out.push_back({p.name, port});
      }
      return out;
    };
    auto make = [&](Kind kind, std::string name, api::Spec spec) -> const Object* {
      Object& o = made.emplace_back();
      o.kind = kind;
      o.meta.name = std::move(name);
      o.meta.namespace_ = ns;
      o.meta.creation_timestamp = se_obj->meta.creation_timestamp;
      o.spec = std::move(spec);
      o.origin = se_obj->origin;
      return &o;
    };
    std::vector<Slice> se_slices;
    auto add_endpoint = [&](const std::string& address, bool ready, const api::WorkloadEntry* e,
                            const Object* pod) {
      api::EndpointSlice slice;
      slice.address_type = address.find(':') == std::string::npos ? "IPv4" : "IPv6";
      slice.endpoints.push_back({{address}, ready, "", "", ""});
      slice.ports = slice_ports(e);
      std::string name = std::to_string(se_slices.size());
      se_slices.push_back({make(Kind::kEndpointSlice, std::move(name), std::move(slice)), {pod}});
    };
    const bool dns = se.resolution == "DNS" || se.resolution == "DNS_ROUND_ROBIN";
    if (!dns && se.resolution != "STATIC") {
      // NONE: no endpoints to send to; the hosts stay known (see unserved_entry_hosts).
      for (const auto& host : se.hosts) {
        unserved_entry_hosts.insert(host);
      }
      continue;
    }
    if (se.workload_selector) {
      for (const Object* pod : pods) {
        const auto& p = pod->As<api::Pod>();
        if (pod->meta.namespace_ == ns && !p.pod_ip.empty() &&
            LabelsMatch(*se.workload_selector, pod->meta.labels)) {
          add_endpoint(p.pod_ip, p.ready, nullptr, pod);
        }
      }
    } else {
      for (const auto& e : se.endpoints) {
        // IPs; under DNS also names, which the proxy resolves. Not unix:// (see its status).
        if (!api::IsValidIp(e.address) && (!dns || StartsWith(e.address, "unix://"))) {
          continue;
        }
        Object& labels = made.emplace_back();  // the endpoint's labels, for subsets
        labels.kind = Kind::kPod;
        labels.meta.namespace_ = ns;
        labels.meta.labels = e.labels;
        labels.spec = api::Pod{e.address, true};
        add_endpoint(e.address, true, &e, &labels);
      }
    }
    // DNS without endpoints: each host is resolved itself, on each port's targetPort (or
    // number).
    const bool host_is_endpoint = dns && se.endpoints.empty() && !se.workload_selector;
    const std::vector<Slice> shared = se_slices;
    for (const auto& host : se.hosts) {
      if (host.find('*') != std::string::npos) {
        continue;  // a wildcard is no one host to send to (see its status)
      }
      if (host_is_endpoint) {
        se_slices.clear();
        add_endpoint(host, true, nullptr, nullptr);
      }
      services.push_back(
          {host, make(Kind::kService, host, svc), host_is_endpoint ? se_slices : shared, se_obj});
    }
  }
}

void Index::SortIstio(IstioKeys* istio_keys) {
  using Key = IstioKeys::Key;
  auto& keys = istio_keys->keys;
  istio_keys->namespaces.Finish();
  istio_keys->timestamps.Finish();
  for (auto& k : keys) {
    k.ns = istio_keys->namespaces.Rank(k.ns);
    k.timestamp = istio_keys->timestamps.Rank(k.timestamp);
  }
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    if (std::tie(a.kind, a.ns, a.name_prefix) != std::tie(b.kind, b.ns, b.name_prefix)) {
      return std::tie(a.kind, a.ns, a.name_prefix) < std::tie(b.kind, b.ns, b.name_prefix);
    }
    return a.object->meta.name < b.object->meta.name;
  });
  istio.reserve(keys.size());
  for (const auto& k : keys) {
    istio.push_back(k.object);
  }
  // (kind, namespace, name) -> (kind, creationTimestamp, namespace, name)
  std::stable_sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return std::tie(a.kind, a.timestamp) < std::tie(b.kind, b.timestamp);
  });
  for (const auto& k : keys) {
    if (!k.valid) {
      continue;
    }
    switch (k.kind) {
      case Kind::kGateway:
        gateways.push_back(k.object);
        break;
      case Kind::kVirtualService:
        virtual_services.push_back(k.object);
        break;
      case Kind::kDestinationRule:
        destination_rules.push_back(k.object);
        break;
      case Kind::kServiceEntry:
        service_entries.push_back(k.object);
        break;
      default:
        break;
    }
  }
}

const Object* Index::DestinationRuleFor(std::string_view fqdn) const {
  auto it = dr_by_host.find(fqdn);
  if (it != dr_by_host.end()) {
    return it->second;
  }
  // A wildcard DestinationRule host ("*.example.com") applies when no exact one does.
  const Object* best = nullptr;
  size_t best_len = 0;
  for (const auto& [host, dr] : wildcard_drs) {
    if (HostMatches(fqdn, host) && host.size() > best_len) {
      best = dr;
      best_len = host.size();
    }
  }
  return best;
}

const Object* Index::Delegate(const api::Delegate& d, const std::string& root_ns,
                              std::string* why) const {
  std::string key = (d.namespace_.empty() ? root_ns : d.namespace_) + "/" + d.name;
  auto it = vs_by_key.find(key);
  if (it == vs_by_key.end()) {
    *why = "VirtualService " + key + " does not exist";
    return nullptr;
  }
  const Object* o = it->second;
  if (!o->Valid()) {
    *why = o->Ref() + " is invalid (see its status)";
    return nullptr;
  }
  const auto& vs = o->As<api::VirtualService>();
  if (!vs.IsDelegate()) {
    *why = o->Ref() + " has hosts: it is not a delegate (a delegate VirtualService has none)";
    return nullptr;
  }
  if (!vs.export_to.empty()) {
    bool exported = false;
    for (const auto& e : vs.export_to) {
      exported =
          exported || e == "*" || e == root_ns || (e == "." && o->meta.namespace_ == root_ns);
    }
    if (!exported) {
      *why = o->Ref() + " is not exported to namespace " + root_ns;
      return nullptr;
    }
  }
  return o;
}

uint32_t Index::DestinationPort(const api::Destination& d, const Object* svc,
                                uint32_t context_port) {
  if (d.port) {
    return *d.port;
  }
  if (svc != nullptr) {
    const auto& ports = svc->As<api::Service>().ports;
    if (ports.size() == 1) {
      return ports[0].port;
    }
    for (const auto& p : ports) {
      if (p.port == context_port) {
        return p.port;
      }
    }
    if (!ports.empty()) {
      return ports[0].port;
    }
  }
  return context_port != 0 ? context_port : 80;
}

}  // namespace skiff::translate

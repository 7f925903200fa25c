#include "operator/translate/translate.h"

#include <google/protobuf/util/json_util.h>
#include <sys/mman.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <deque>
#include <new>
#include <nlohmann/json.hpp>
#include <tuple>
#include <unordered_map>

#include "common/strings.h"

namespace skiff::translate {

using api::Kind;
using api::Object;

namespace {

// Hash maps with std::string keys that can be looked up with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

void AppendNumber(std::string* out, uint64_t n) {
  char buf[20];
  auto res = std::to_chars(buf, buf + sizeof(buf), n);
  out->append(buf, res.ptr);
}

void SetDuration(google::protobuf::Duration* out, api::Duration d) {
  out->set_seconds(d.count() / 1000000000);
  out->set_nanos(static_cast<int32_t>(d.count() % 1000000000));
}

void SetStringMatch(v1::StringMatch* out, const api::StringMatch& in, bool ignore_case) {
  switch (in.type) {
    case api::StringMatch::Type::kExact:
      out->set_exact(in.value);
      break;
    case api::StringMatch::Type::kPrefix:
      out->set_prefix(in.value);
      break;
    case api::StringMatch::Type::kRegex:
      out->set_regex(in.value);
      break;
    case api::StringMatch::Type::kUnset:
      break;
  }
  if (ignore_case && in.type != api::StringMatch::Type::kRegex) {
    out->set_ignore_case(true);
  }
}

void SetHeaderOps(v1::HeaderOperations* out, const api::HeaderOperations& in) {
  for (const auto& [k, v] : in.set) {
    auto* h = out->add_set();
    h->set_name(k);
    h->set_value(v);
  }
  for (const auto& [k, v] : in.add) {
    auto* h = out->add_add();
    h->set_name(k);
    h->set_value(v);
  }
  for (const auto& r : in.remove) {
    out->add_remove(r);
  }
}

bool Empty(const api::HeaderOperations& h) {
  return h.set.empty() && h.add.empty() && h.remove.empty();
}

bool HasHeaders(const api::Boxed<api::Headers>& h) {
  return h && (!Empty(h->request) || !Empty(h->response));
}

void SetHeaders(v1::Headers* out, const api::Headers& in) {
  if (!Empty(in.request)) {
    SetHeaderOps(out->mutable_request(), in.request);
  }
  if (!Empty(in.response)) {
    SetHeaderOps(out->mutable_response(), in.response);
  }
}

bool LabelsMatch(const api::Labels& selector, const api::Labels& labels) {
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) {
      return false;
    }
  }
  return true;
}

// Does a VirtualService gateway reference (`name` in the VirtualService's namespace
// `ns`, `ns/name`, or `mesh`) name `key` ("ns/name" or "mesh")?
bool RefersTo(std::string_view ref, std::string_view ns, std::string_view key) {
  if (ref == "mesh" || ref.find('/') != std::string_view::npos) {
    return ref == key;
  }
  return key.size() == ns.size() + 1 + ref.size() && StartsWith(key, ns) && key[ns.size()] == '/' &&
         EndsWith(key, ref);
}

// ResolveHost without allocating: `host` itself, or the FQDN written to `*buf`.
std::string_view ResolveHostView(std::string_view host, std::string_view ns, std::string* buf) {
  if (host == "*" || host.find('.') != std::string_view::npos) {
    return host;
  }
  constexpr std::string_view kSuffix = kDomainSuffix;
  buf->resize(host.size() + 1 + ns.size() + 1 + kSuffix.size());
  char* p = buf->data();
  p = std::copy(host.begin(), host.end(), p);
  *p++ = '.';
  p = std::copy(ns.begin(), ns.end(), p);
  *p++ = '.';
  std::copy(kSuffix.begin(), kSuffix.end(), p);
  return *buf;
}

void AppendClusterName(std::string* out, uint32_t port, std::string_view subset,
                       std::string_view fqdn) {
  out->reserve(out->size() + 21 + subset.size() + fqdn.size());
  out->append("outbound|");
  AppendNumber(out, port);
  out->push_back('|');
  out->append(subset);
  out->push_back('|');
  out->append(fqdn);
}

// Does `host` (no wildcard) match the wildcard or exact `pattern`?
bool HostMatches(std::string_view host, std::string_view pattern) {
  if (pattern == "*") {
    return true;
  }
  if (StartsWith(pattern, "*")) {
    return EndsWith(host, pattern.substr(1)) && host.size() > pattern.size() - 1;
  }
  return host == pattern;
}

// IntersectHosts as a view of one of its arguments.
std::string_view IntersectHostsView(std::string_view vs_host, std::string_view server_host) {
  bool vs_wild = StartsWith(vs_host, "*");
  bool server_wild = StartsWith(server_host, "*");
  if (!vs_wild && !server_wild) {
    return vs_host == server_host ? vs_host : std::string_view();
  }
  if (!vs_wild) {
    return HostMatches(vs_host, server_host) ? vs_host : std::string_view();
  }
  if (!server_wild) {
    return HostMatches(server_host, vs_host) ? server_host : std::string_view();
  }
  // Both wildcards: the more specific one, if one contains the other.
  if (EndsWith(vs_host.substr(1), server_host.substr(1))) {
    return vs_host;
  }
  if (EndsWith(server_host.substr(1), vs_host.substr(1))) {
    return server_host;
  }
  return {};
}

}  // namespace

std::string ResolveHost(const std::string& host, const std::string& ns) {
  std::string buf;
  return std::string(ResolveHostView(host, ns, &buf));
}

std::string ClusterName(uint32_t port, const std::string& subset, const std::string& fqdn) {
  std::string out;
  AppendClusterName(&out, port, subset, fqdn);
  return out;
}

std::string IntersectHosts(const std::string& vs_host, const std::string& server_host) {
  return std::string(IntersectHostsView(vs_host, server_host));
}

std::string ResourceStatus::Ref() const {
  return std::string(api::KindName(kind)) + " " + namespace_ + "/" + name;
}

bool ResourceStatus::Accepted() const {
  for (const auto& c : conditions) {
    if (c.type == "Accepted") {
      return c.status == "True";
    }
  }
  return false;
}

// ---- Index -------------------------------------------------------------------------------

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

// The first 8 bytes of `s` as a big-endian number (zero-padded): a < b for two prefixes
// means the same for the strings; equal prefixes say nothing.
uint64_t Prefix(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) {
    v = v << 8 | (i < s.size() ? static_cast<unsigned char>(s[i]) : 0U);
  }
  return v;
}

}  // namespace

class Index {
 public:
  explicit Index(std::vector<Object> objects) : owned(std::move(objects)) {
    // One pass over the objects (there are many, and they are large): keep the first of
    // each key, and sort each kind into its place.
    std::vector<const Object*> slices;
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
          keys.Add(o, valid);
          if (o.kind == Kind::kGateway && valid) {
            gateway_by_key[o.meta.namespace_ + "/" + o.meta.name] = &o;
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
          break;  // found through `seen`
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
      entry_of[static_cast<size_t>(entry.object - owned.data())] = &entry;
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
      std::sort(entry.slices.begin(), entry.slices.end(), [](const Slice& a, const Slice& b) {
        return a.object->meta.name < b.object->meta.name;
      });
    }
  }

  // Sort keys of the Gateways, VirtualServices and DestinationRules: strings as ranks
  // and 8-byte prefixes, so that sorting compares numbers instead of chasing pointers into
  // the large, scattered objects.
  struct IstioKeys {
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

  // Sorts `istio` by (kind, namespace, name), and lists the valid Gateways,
  // VirtualServices and DestinationRules in creation order: (creationTimestamp, namespace,
  // name).
  void SortIstio(IstioKeys* istio_keys) {
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
        default:
          break;
      }
    }
  }

  // An EndpointSlice, with the Pod each of its endpoints targets (or nullptr).
  struct Slice {
    const Object* object;
    std::vector<const Object*> pods;
  };
  // A Service, with its EndpointSlices by name.
  struct ServiceEntry {
    std::string fqdn;
    const Object* object;
    std::vector<Slice> slices;
  };

  [[nodiscard]] const ServiceEntry* ServiceEntryFor(std::string_view fqdn) const {
    auto it = service_lookup.find(fqdn);
    return it == service_lookup.end() ? nullptr : it->second;
  }
  [[nodiscard]] const Object* Service(std::string_view fqdn) const {
    const ServiceEntry* entry = ServiceEntryFor(fqdn);
    return entry == nullptr ? nullptr : entry->object;
  }
  [[nodiscard]] const Object* DestinationRuleFor(std::string_view fqdn) const {
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
  // The subset of DestinationRule `dr` (which may be null) called `subset`, if any.
  [[nodiscard]] static const api::Subset* FindSubset(const Object* dr, std::string_view subset) {
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

  // The port a destination without an explicit port goes to (`svc`: the Service of its
  // host, if any).
  [[nodiscard]] static uint32_t DestinationPort(const api::Destination& d, const Object* svc,
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

  std::vector<Object> owned;
  // Every Gateway, VirtualService and DestinationRule (valid or not) by kind/ns/name.
  std::vector<const Object*> istio;
  // The valid ones, in creation order.
  std::vector<const Object*> gateways, virtual_services, destination_rules;
  std::map<std::string, const Object*, std::less<>> gateway_by_key;          // "ns/name"
  std::vector<ServiceEntry> services;                                        // by FQDN
  std::unordered_map<std::string_view, const ServiceEntry*> service_lookup;  // into services
  StringMap<const Object*> dr_by_host;  // resolved host -> first DestinationRule
  std::vector<std::pair<std::string_view, const Object*>> wildcard_drs;  // sorted by host
  std::unordered_map<const Object*, const Object*> shadowed_drs;         // ignored -> first
};

// ---- statuses -------------------------------------------------------------------------------

namespace {

// "spec.http[3].route[1].destination"-style paths, built only when there is a problem.
std::string HttpPath(size_t i, const char* list, size_t j, const char* suffix) {
  std::string out = "spec.http[";
  AppendNumber(&out, i);
  out.append("].").append(list).append("[");
  AppendNumber(&out, j);
  out.append("]").append(suffix);
  return out;
}

// Buffers reused from one resource to the next, to keep allocations out of the checks.
struct Scratch {
  std::string host;       // a resolved host or gateway key
  std::string last_host;  // the destination host looked up last
};

void CheckVirtualServiceRefs(const Index& index, const Object& vs_obj,
                             std::vector<std::string>* problems, Scratch* scratch) {
  const auto& vs = vs_obj.As<api::VirtualService>();
  const std::string& ns = vs_obj.meta.namespace_;
  std::string& buf = scratch->host;
  auto check_gateways = [&](const std::vector<std::string>& refs, const auto& path) {
    for (size_t i = 0; i < refs.size(); ++i) {
      const std::string& ref = refs[i];
      if (ref == "mesh") {
        continue;
      }
      std::string_view key = ref;
      if (ref.find('/') == std::string::npos) {
        buf.assign(ns).append("/").append(ref);
        key = buf;
      }
      if (!index.GatewayExists(key)) {
        problems->push_back(path() + "[" + std::to_string(i) + "]: Gateway " + std::string(key) +
                            " does not exist (or is invalid)");
      }
    }
  };
  check_gateways(vs.gateways, [] { return std::string("spec.gateways"); });
  bool mesh = vs.gateways.empty() ||
              std::find(vs.gateways.begin(), vs.gateways.end(), "mesh") != vs.gateways.end();
  // The destinations of one VirtualService mostly share a host: its Service and
  // DestinationRule are looked up once.
  std::string& last_fqdn = scratch->last_host;
  const Object* last_svc = nullptr;
  const Object* last_dr = nullptr;
  bool have_last = false;
  bool have_last_dr = false;
  auto check_dest = [&](const api::Destination& d, const auto& path) {
    std::string_view fqdn_view = ResolveHostView(d.host, ns, &buf);
    if (!have_last || fqdn_view != last_fqdn) {
      last_fqdn.assign(fqdn_view);
      last_svc = index.Service(fqdn_view);
      have_last = true;
      have_last_dr = false;
    }
    const Object* svc = last_svc;
    const Object* dr = nullptr;
    bool subset_missing = false;
    if (!d.subset.empty()) {
      if (!have_last_dr) {
        last_dr = index.DestinationRuleFor(fqdn_view);
        have_last_dr = true;
      }
      dr = last_dr;
      subset_missing = Index::FindSubset(dr, d.subset) == nullptr;
    }
    bool port_missing = false;
    bool port_ambiguous = false;
    if (svc != nullptr) {
      const auto& ports = svc->As<api::Service>().ports;
      if (d.port) {
        port_missing = std::none_of(ports.begin(), ports.end(),
                                    [&](const api::ServicePort& p) { return p.port == *d.port; });
      } else {
        port_ambiguous = ports.size() > 1 && !mesh;
      }
    }
    if (svc != nullptr && !subset_missing && !port_missing && !port_ambiguous) {
      return;  // the common case: no problem, no strings
    }
    std::string fqdn(fqdn_view);
    if (svc == nullptr) {
      problems->push_back(path() + ".host: host \"" + d.host + "\" (" + fqdn +
                          ") does not match any Service");
    }
    if (subset_missing) {
      problems->push_back(path() + ".subset: subset \"" + d.subset + "\" is not defined" +
                          (dr ? " in " + dr->Ref() : " (no DestinationRule for " + fqdn + ")"));
    }
    if (port_missing) {
      problems->push_back(path() + ".port.number: Service " + fqdn + " has no port " +
                          std::to_string(*d.port));
    }
    if (port_ambiguous) {
      problems->push_back(path() + ".port: Service " + fqdn +
                          " has several ports; set port.number");
    }
  };
  for (size_t i = 0; i < vs.http.size(); ++i) {
    const auto& r = vs.http[i];
    for (size_t j = 0; j < r.match.size(); ++j) {
      check_gateways(r.match[j].gateways, [&] { return HttpPath(i, "match", j, ".gateways"); });
    }
    for (size_t j = 0; j < r.route.size(); ++j) {
      check_dest(r.route[j].destination, [&] { return HttpPath(i, "route", j, ".destination"); });
    }
    for (size_t j = 0; j < r.mirrors.size(); ++j) {
      check_dest(r.mirrors[j].destination, [&] { return HttpPath(i, "mirrors", j, ""); });
    }
  }
}

ResourceStatus MakeStatus(const Index& index, const Object& o, Scratch* scratch) {
  ResourceStatus st;
  st.kind = o.kind;
  st.namespace_ = o.meta.namespace_;
  st.name = o.meta.name;
  st.observed_generation = o.meta.generation;
  st.conditions.reserve(2);
  std::vector<std::string> errors;
  for (const auto& m : o.messages) {
    if (m.level == api::Message::Level::kError) {
      errors.push_back(m.Format());
    } else {
      st.warnings.push_back(m.Format());
    }
  }
  if (errors.empty()) {
    st.conditions.push_back({"Accepted", "True", "Accepted", "the resource is valid"});
  } else {
    st.conditions.push_back({"Accepted", "False", "Invalid", Join(errors, "; ")});
    return st;  // an invalid resource is not served: no ResolvedRefs
  }
  std::vector<std::string> problems;
  if (o.kind == Kind::kVirtualService) {
    CheckVirtualServiceRefs(index, o, &problems, scratch);
  } else if (o.kind == Kind::kDestinationRule) {
    auto it = index.shadowed_drs.find(&o);
    if (it != index.shadowed_drs.end()) {
      problems.push_back("spec.host: " + it->second->Ref() +
                         " already configures this host; this DestinationRule is ignored");
    }
    std::string_view fqdn =
        ResolveHostView(o.As<api::DestinationRule>().host, o.meta.namespace_, &scratch->host);
    if (fqdn.find('*') == std::string_view::npos && index.Service(fqdn) == nullptr) {
      st.warnings.push_back("spec.host: host \"" + std::string(fqdn) +
                            "\" does not match any Service");
    }
  } else if (o.kind == Kind::kGateway) {
    const auto& gw = o.As<api::Gateway>();
    for (size_t i = 0; i < gw.servers.size(); ++i) {
      const auto& s = gw.servers[i];
      if (s.port && s.port->protocol != "HTTP" && s.port->protocol != "HTTP2") {
        st.warnings.push_back("spec.servers[" + std::to_string(i) +
                              "].port.protocol: " + s.port->protocol +
                              " servers are not supported by skiff yet; "
                              "this server is ignored");
      } else if (s.has_tls) {
        st.warnings.push_back("spec.servers[" + std::to_string(i) +
                              "].tls: TLS is not supported by skiff yet; ignored");
      }
    }
  }
  if (problems.empty()) {
    st.conditions.push_back({"ResolvedRefs", "True", "ResolvedRefs", "all references resolved"});
  } else {
    st.conditions.push_back({"ResolvedRefs", "False", "RefNotFound", Join(problems, "; ")});
  }
  return st;
}

// ---- snapshot building ---------------------------------------------------------------------

// Sorts virtual hosts by name, keeping the order in which they were added among those with
// one name (a Service that lists a port twice gives two): the last one counts.
void SortByName(google::protobuf::RepeatedPtrField<v1::VirtualHost>* vhosts) {
  std::stable_sort(
      vhosts->pointer_begin(), vhosts->pointer_end(),
      [](const v1::VirtualHost* a, const v1::VirtualHost* b) { return a->name() < b->name(); });
}

// Of virtual hosts sorted by SortByName, drops all but the last of each name.
void DropOverwritten(google::protobuf::RepeatedPtrField<v1::VirtualHost>* vhosts) {
  for (int i = 0; i + 1 < vhosts->size();) {
    if (vhosts->Get(i).name() == vhosts->Get(i + 1).name()) {
      vhosts->DeleteSubrange(i, 1);
    } else {
      ++i;
    }
  }
}

class Builder {
 public:
  Builder(const Index& index, const ProxyGroup& group, v1::Snapshot* snapshot)
      : index_(index), group_(group), snapshot_(snapshot) {}

  void Build() {
    snapshot_->Clear();
    if (group_.role == "sidecar") {
      BuildSidecar();
    } else {
      BuildGateway();
    }
    BuildClusters();
    if (group_.role == "sidecar") {
      // Only now: the cluster table is keyed by cluster names that the virtual hosts hold.
      DropOverwritten(snapshot_->mutable_route_tables(0)->mutable_virtual_hosts());
    }
    std::sort(snapshot_->mutable_listeners()->begin(), snapshot_->mutable_listeners()->end(),
              [](const auto& a, const auto& b) { return a.port() < b.port(); });
  }

 private:
  // -- gateway role --
  void BuildGateway() {
    // A server host, split: `ns/host`, `./host`, `*/host` or `host`.
    struct ServerHost {
      bool any_namespace = true;
      std::string_view ns;
      std::string_view host;
    };
    // A server bound to this proxy, with its gateway.
    struct Bound {
      const Object* gateway;
      std::string key;  // "ns/name" of the gateway
      std::vector<ServerHost> hosts;
    };
    // port -> bound servers, in gateway order.
    std::map<uint32_t, std::vector<Bound>> by_port;
    for (const Object* gw : index_.gateways) {
      const auto& spec = gw->As<api::Gateway>();
      if (!LabelsMatch(spec.selector, group_.labels)) {
        continue;
      }
      for (const auto& s : spec.servers) {
        if (!s.port || (s.port->protocol != "HTTP" && s.port->protocol != "HTTP2")) {
          continue;
        }
        Bound b{gw, gw->meta.namespace_ + "/" + gw->meta.name, {}};
        for (const auto& raw : s.hosts) {
          ServerHost sh;
          sh.host = raw;
          auto slash = raw.find('/');
          if (slash != std::string::npos) {
            sh.ns = std::string_view(raw).substr(0, slash);
            sh.host = std::string_view(raw).substr(slash + 1);
            if (sh.ns == ".") {
              sh.ns = gw->meta.namespace_;
            }
            sh.any_namespace = sh.ns == "*";
          }
          b.hosts.push_back(sh);
        }
        by_port[s.port->number].push_back(std::move(b));
      }
    }
    // One virtual host per domain; its routes come from the VirtualServices with that
    // domain, in VirtualService order.
    struct Entry {
      uint64_t prefix;  // of the domain, to sort without reading the strings (mostly)
      std::string_view domain;
      const Object* vs;
      const std::string* gateway_key;
    };
    std::vector<Entry> entries;
    std::deque<std::string> resolved;  // owns domains that are resolved short hosts
    for (const auto& [port, bounds] : by_port) {
      std::string table_name = "http." + std::to_string(port);
      auto* l = snapshot_->add_listeners();
      l->set_name("0.0.0.0_" + std::to_string(port));
      l->set_address("0.0.0.0");
      l->set_port(port);
      l->set_protocol("HTTP");
      l->set_route_table(table_name);
      auto* table = snapshot_->add_route_tables();
      table->set_name(std::move(table_name));
      entries.clear();
      resolved.clear();
      for (const Object* vs_obj : index_.virtual_services) {
        const auto& vs = vs_obj->As<api::VirtualService>();
        const std::string& vs_ns = vs_obj->meta.namespace_;
        // Hosts of this VS on this port, across all the servers it binds to, in order.
        size_t first = entries.size();
        for (const auto& b : bounds) {
          bool bound =
              std::any_of(vs.gateways.begin(), vs.gateways.end(),
                          [&](const std::string& ref) { return RefersTo(ref, vs_ns, b.key); });
          if (!bound) {
            continue;
          }
          for (const auto& sh : b.hosts) {
            if (!sh.any_namespace && sh.ns != vs_ns) {
              continue;
            }
            for (const auto& h : vs.hosts) {
              std::string_view host = ResolveHostView(h, vs_ns, &fqdn_buf_);
              std::string_view domain = IntersectHostsView(host, sh.host);
              if (domain.empty() ||
                  std::any_of(entries.begin() + static_cast<ptrdiff_t>(first), entries.end(),
                              [&](const Entry& e) { return e.domain == domain; })) {
                continue;
              }
              if (domain.data() == fqdn_buf_.data()) {
                domain = resolved.emplace_back(domain);
              }
              entries.push_back({Prefix(domain), domain, vs_obj, &b.key});
            }
          }
        }
      }
      std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.prefix != b.prefix ? a.prefix < b.prefix : a.domain < b.domain;
      });
      for (size_t i = 0; i < entries.size();) {
        std::string_view domain = entries[i].domain;
        auto* vh = table->add_virtual_hosts();
        std::string name;
        name.reserve(domain.size() + 6);
        name.append(domain).push_back(':');
        AppendNumber(&name, port);
        vh->set_name(std::move(name));
        vh->add_domains(domain.data(), domain.size());
        for (; i < entries.size() && entries[i].domain == domain; ++i) {
          AppendRoutes(*entries[i].vs, *entries[i].gateway_key, port, 0, vh);
        }
      }
    }
  }

  // -- sidecar role --
  void BuildSidecar() {
    auto* l = snapshot_->add_listeners();
    l->set_name("virtualOutbound");
    l->set_address("0.0.0.0");
    l->set_port(kSidecarOutboundPort);
    l->set_protocol("HTTP");
    l->set_route_table("outbound");
    auto* table = snapshot_->add_route_tables();
    table->set_name("outbound");

    // Mesh VirtualServices by the FQDN of each host (first one wins, as Istio does).
    StringMap<const Object*> vs_by_host;
    std::vector<std::pair<std::string, const Object*>> external;  // hosts that are no Service
    for (const Object* vs_obj : index_.virtual_services) {
      const auto& vs = vs_obj->As<api::VirtualService>();
      bool mesh = vs.gateways.empty() ||
                  std::find(vs.gateways.begin(), vs.gateways.end(), "mesh") != vs.gateways.end();
      if (!mesh) {
        continue;
      }
      for (const auto& h : vs.hosts) {
        std::string fqdn = ResolveHost(h, vs_obj->meta.namespace_);
        if (vs_by_host.emplace(fqdn, vs_obj).second && index_.Service(fqdn) == nullptr) {
          external.emplace_back(std::move(fqdn), vs_obj);
        }
      }
    }
    auto* vhosts = table->mutable_virtual_hosts();
    for (const auto& entry : index_.services) {
      const std::string& fqdn = entry.fqdn;
      const Object* svc_obj = entry.object;
      const auto& svc = svc_obj->As<api::Service>();
      const std::string& name = svc_obj->meta.name;
      const std::string& ns = svc_obj->meta.namespace_;
      for (const auto& port : svc.ports) {
        std::string p = std::to_string(port.port);
        auto* vh = vhosts->Add();
        vh->set_name(fqdn + ":" + p);
        std::vector<std::string> names = {fqdn, name + "." + ns + ".svc", name + "." + ns};
        if (ns == group_.namespace_) {
          names.push_back(name);
        }
        if (!svc.cluster_ip.empty() && svc.cluster_ip != "None") {
          names.push_back(svc.cluster_ip);
        }
        for (const auto& n : names) {
          vh->add_domains(n + ":" + p);
          if (port.port == 80) {
            vh->add_domains(n);
          }
        }
        auto vs_it = vs_by_host.find(fqdn);
        if (vs_it != vs_by_host.end()) {
          AppendRoutes(*vs_it->second, "mesh", 0, port.port, vh);
        } else {
          AddDefaultRoute(entry, port.port, vh);
        }
      }
    }
    for (const auto& [fqdn, vs_obj] : external) {
      auto* vh = vhosts->Add();
      vh->set_name(fqdn + ":80");
      vh->add_domains(fqdn);
      vh->add_domains(fqdn + ":80");
      AppendRoutes(*vs_obj, "mesh", 0, 80, vh);
    }
    SortByName(vhosts);  // duplicates go after BuildClusters (see Build)
  }

  void AddDefaultRoute(const Index::ServiceEntry& svc, uint32_t port, v1::VirtualHost* vh) {
    auto* route = vh->add_routes();
    route->set_name("default");
    auto* action = route->mutable_route();
    auto* wc = action->add_clusters();
    SetCluster(svc.fqdn, port, "", &svc, wc->mutable_cluster());
    wc->set_weight(100);
    SetDefaultRetry(action->mutable_retry_policy());
    route->set_source("Service " + svc.fqdn);
  }

  static void SetDefaultRetry(v1::RetryPolicy* rp) {
    // Istio's default when a route has no `retries`.
    rp->set_num_retries(2);
    rp->mutable_retry_on()->Reserve(5);
    for (const char* c : {"connect-failure", "refused-stream", "unavailable", "cancelled",
                          "retriable-status-codes"}) {
      rp->add_retry_on(c);
    }
    rp->add_retriable_status_codes(503);
  }

  // Appends the routes of `vs_obj` that apply to this gateway (`gateway_key`, or "mesh"),
  // listener port (gateways) or service port (sidecars).
  void AppendRoutes(const Object& vs_obj, std::string_view gateway_key, uint32_t listener_port,
                    uint32_t service_port, v1::VirtualHost* vh) {
    const auto& vs = vs_obj.As<api::VirtualService>();
    const std::string& ns = vs_obj.meta.namespace_;
    // "VirtualService <ns>/<name> spec.http[<i>].match[<j>]"
    std::string& source = source_buf_;
    source.assign("VirtualService ").append(ns).append("/").append(vs_obj.meta.name);
    source.append(" spec.http[");
    const size_t prefix = source.size();
    for (size_t i = 0; i < vs.http.size(); ++i) {
      const auto& http = vs.http[i];
      source.resize(prefix);
      AppendNumber(&source, i);
      source.push_back(']');
      if (http.match.empty()) {
        EmitRoute(http, nullptr, ns, service_port, source, vh);
        continue;
      }
      const size_t base = source.size();
      for (size_t j = 0; j < http.match.size(); ++j) {
        const auto& m = http.match[j];
        if (!m.gateways.empty() &&
            std::none_of(m.gateways.begin(), m.gateways.end(),
                         [&](const std::string& g) { return RefersTo(g, ns, gateway_key); })) {
          continue;
        }
        uint32_t port = listener_port != 0 ? listener_port : service_port;
        if (m.port != 0 && m.port != port) {
          continue;
        }
        source.resize(base);
        source.append(".match[");
        AppendNumber(&source, j);
        source.push_back(']');
        EmitRoute(http, &m, ns, service_port, source, vh);
      }
    }
  }

  // The Service of a host (FQDN). The destinations of one VirtualService mostly share a
  // host, so the last one is remembered.
  const Index::ServiceEntry* ServiceFor(std::string_view fqdn) {
    if (!have_last_service_ || fqdn != last_service_fqdn_) {
      last_service_fqdn_.assign(fqdn);
      last_service_ = index_.ServiceEntryFor(fqdn);
      have_last_service_ = true;
    }
    return last_service_;
  }

  // Writes the name of the cluster a destination goes to into `*name`, and registers it.
  void SetDestinationCluster(const api::Destination& d, const std::string& ns,
                             uint32_t service_port, std::string* name) {
    std::string_view fqdn = ResolveHostView(d.host, ns, &fqdn_buf_);
    const Index::ServiceEntry* svc = ServiceFor(fqdn);
    uint32_t port = Index::DestinationPort(d, svc != nullptr ? svc->object : nullptr, service_port);
    SetCluster(fqdn, port, d.subset, svc, name);
  }

  // Writes "outbound|<port>|<subset>|<fqdn>" into `*name`, a string of the snapshot, and
  // registers the cluster (keyed by a view of that string, which lives as long as the
  // snapshot).
  void SetCluster(std::string_view fqdn, uint32_t port, std::string_view subset,
                  const Index::ServiceEntry* svc, std::string* name) {
    name->clear();
    AppendClusterName(name, port, subset, fqdn);
    clusters_.try_emplace(*name, ClusterKey{port, subset.size(), fqdn.size(), svc});
  }

  void EmitRoute(const api::HTTPRoute& http, const api::HTTPMatchRequest* m, const std::string& ns,
                 uint32_t service_port, const std::string& source, v1::VirtualHost* vh) {
    auto* route = vh->add_routes();
    if (m != nullptr && !m->name.empty()) {
      route->set_name(http.name + "." + m->name);
    } else if (!http.name.empty()) {
      route->set_name(http.name);
    }
    route->set_source(source);
    if (m != nullptr) {
      auto* rm = route->mutable_match();
      if (!m->name.empty()) {
        rm->set_name(m->name);
      }
      if (m->uri) {
        SetStringMatch(rm->mutable_uri(), *m->uri, m->ignore_uri_case);
      }
      if (m->scheme) {
        SetStringMatch(rm->mutable_scheme(), *m->scheme, false);
      }
      if (m->method) {
        SetStringMatch(rm->mutable_method(), *m->method, false);
      }
      if (m->authority) {
        SetStringMatch(rm->mutable_authority(), *m->authority, false);
      }
      for (const auto& [name, sm] : m->headers) {
        auto* h = rm->add_headers();
        h->set_name(name);
        if (sm.type != api::StringMatch::Type::kUnset) {
          SetStringMatch(h->mutable_value(), sm, false);
        }
      }
      for (const auto& [name, sm] : m->without_headers) {
        auto* h = rm->add_without_headers();
        h->set_name(name);
        if (sm.type != api::StringMatch::Type::kUnset) {
          SetStringMatch(h->mutable_value(), sm, false);
        }
      }
      for (const auto& [name, sm] : m->query_params) {
        auto* q = rm->add_query_params();
        q->set_name(name);
        if (sm.type != api::StringMatch::Type::kUnset) {
          SetStringMatch(q->mutable_value(), sm, false);
        }
      }
      rm->set_port(m->port);
    }
    if (HasHeaders(http.headers)) {
      SetHeaders(route->mutable_headers(), *http.headers);
    }
    if (http.fault) {
      auto* f = route->mutable_fault();
      if (http.fault->delay) {
        auto* d = f->mutable_delay();
        if (http.fault->delay->fixed_delay) {
          SetDuration(d->mutable_fixed_delay(), *http.fault->delay->fixed_delay);
        }
        d->set_percentage(http.fault->delay->percentage.value_or(api::Percent{}).value);
      }
      if (http.fault->abort) {
        auto* a = f->mutable_abort();
        a->set_http_status(static_cast<uint32_t>(http.fault->abort->http_status));
        a->set_percentage(http.fault->abort->percentage.value_or(api::Percent{}).value);
      }
    }
    if (http.cors_policy) {
      auto* c = route->mutable_cors();
      for (const auto& o : http.cors_policy->allow_origins) {
        SetStringMatch(c->add_allow_origins(), o, false);
      }
      for (const auto& s : http.cors_policy->allow_methods) {
        c->add_allow_methods(s);
      }
      for (const auto& s : http.cors_policy->allow_headers) {
        c->add_allow_headers(s);
      }
      for (const auto& s : http.cors_policy->expose_headers) {
        c->add_expose_headers(s);
      }
      if (http.cors_policy->max_age) {
        SetDuration(c->mutable_max_age(), *http.cors_policy->max_age);
      }
      c->set_allow_credentials(http.cors_policy->allow_credentials);
    }
    if (http.redirect) {
      auto* r = route->mutable_redirect();
      r->set_uri(http.redirect->uri);
      r->set_authority(http.redirect->authority);
      r->set_port(http.redirect->port);
      r->set_scheme(http.redirect->scheme);
      r->set_response_code(
          static_cast<uint32_t>(http.redirect->redirect_code ? http.redirect->redirect_code : 301));
      return;
    }
    if (http.direct_response) {
      auto* d = route->mutable_direct_response();
      d->set_status(static_cast<uint32_t>(http.direct_response->status));
      d->set_body(http.direct_response->body);
      return;
    }
    auto* action = route->mutable_route();
    for (const auto& rd : http.route) {
      auto* wc = action->add_clusters();
      SetDestinationCluster(rd.destination, ns, service_port, wc->mutable_cluster());
      wc->set_weight(static_cast<uint32_t>(
          http.route.size() == 1 && !rd.weight_set ? 100 : std::max<int64_t>(rd.weight, 0)));
      if (HasHeaders(rd.headers)) {
        SetHeaders(wc->mutable_headers(), *rd.headers);
      }
    }
    if (http.timeout && http.timeout->count() > 0) {
      SetDuration(action->mutable_timeout(), *http.timeout);
    }
    if (!http.retries) {
      SetDefaultRetry(action->mutable_retry_policy());
    } else if (http.retries->attempts > 0) {
      SetRetry(*http.retries, action->mutable_retry_policy());
    }
    for (const auto& mirror : http.mirrors) {
      auto* mp = action->add_mirrors();
      SetDestinationCluster(mirror.destination, ns, service_port, mp->mutable_cluster());
      mp->set_percentage(mirror.percentage.value_or(api::Percent{}).value);
    }
    if (http.rewrite) {
      auto* rw = action->mutable_rewrite();
      rw->set_uri(http.rewrite->uri);
      rw->set_authority(http.rewrite->authority);
      if (http.rewrite->uri_regex) {
        rw->mutable_uri_regex()->set_pattern(http.rewrite->uri_regex->first);
        rw->mutable_uri_regex()->set_substitution(http.rewrite->uri_regex->second);
      }
    }
  }

  void SetRetry(const api::HTTPRetry& in, v1::RetryPolicy* rp) {
    rp->set_num_retries(static_cast<uint32_t>(in.attempts));
    if (in.per_try_timeout) {
      SetDuration(rp->mutable_per_try_timeout(), *in.per_try_timeout);
    }
    // retryOn: comma-separated conditions (kept once each, in order) and status codes.
    std::vector<std::string_view>& conds = conds_;
    std::vector<uint32_t>& codes = codes_;
    conds.clear();
    codes.clear();
    std::string_view rest = in.retry_on;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      std::string_view c = Trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (c.empty()) {
        continue;
      }
      if (c.find_first_not_of("0123456789") == std::string_view::npos) {
        uint32_t code = 0;
        std::from_chars(c.data(), c.data() + c.size(), code);  // validated: 3 digits
        codes.push_back(code);
      } else if (std::find(conds.begin(), conds.end(), c) == conds.end()) {
        conds.push_back(c);
      }
    }
    if (conds.empty() && codes.empty()) {
      // attempts without retryOn: Istio's default conditions.
      conds = {"connect-failure", "refused-stream", "unavailable", "cancelled",
               "retriable-status-codes"};
      codes = {503};
    }
    if (!codes.empty() &&
        std::find(conds.begin(), conds.end(), "retriable-status-codes") == conds.end()) {
      conds.emplace_back("retriable-status-codes");
    }
    for (std::string_view c : conds) {
      rp->add_retry_on(c.data(), c.size());
    }
    for (uint32_t c : codes) {
      rp->add_retriable_status_codes(c);
    }
  }

  // -- clusters and endpoints --

  // The sections of a DestinationRule's traffic policy, each overridden by the subset's.
  static void ApplyPolicy(const api::TrafficPolicy* base, const api::TrafficPolicy* subset,
                          v1::Cluster* c) {
    auto pick = [&](auto member) {
      if (subset != nullptr && (subset->*member)) {
        return &*(subset->*member);
      }
      return base != nullptr && (base->*member) ? &*(base->*member) : nullptr;
    };
    if (const auto* lb_in = pick(&api::TrafficPolicy::load_balancer)) {
      auto* lb = c->mutable_load_balancer();
      const auto& in = *lb_in;
      if (in.consistent_hash) {
        lb->set_policy(v1::LoadBalancer::CONSISTENT_HASH);
        auto* ch = lb->mutable_consistent_hash();
        const auto& h = *in.consistent_hash;
        if (!h.http_header_name.empty()) {
          ch->set_http_header_name(ToLower(h.http_header_name));
        } else if (h.use_source_ip) {
          ch->set_use_source_ip(true);
        } else if (!h.http_query_parameter_name.empty()) {
          ch->set_http_query_parameter_name(h.http_query_parameter_name);
        } else {
          auto* cookie = ch->mutable_http_cookie();
          cookie->set_name(h.cookie_name);
          cookie->set_path(h.cookie_path);
          if (h.cookie_ttl) {
            SetDuration(cookie->mutable_ttl(), *h.cookie_ttl);
          }
        }
      } else if (in.simple == api::LoadBalancerSettings::Simple::kLeastRequest) {
        lb->set_policy(v1::LoadBalancer::LEAST_REQUEST);
      } else if (in.simple == api::LoadBalancerSettings::Simple::kRandom) {
        lb->set_policy(v1::LoadBalancer::RANDOM);
      }
    }
    if (const auto* cp_in = pick(&api::TrafficPolicy::connection_pool)) {
      const auto& in = *cp_in;
      auto* cp = c->mutable_connection_pool();
      cp->set_max_connections(static_cast<uint32_t>(in.max_connections));
      cp->set_max_pending_requests(static_cast<uint32_t>(in.http1_max_pending_requests));
      cp->set_max_requests(static_cast<uint32_t>(in.http2_max_requests));
      cp->set_max_requests_per_connection(static_cast<uint32_t>(in.max_requests_per_connection));
      cp->set_max_retries(static_cast<uint32_t>(in.max_retries));
      if (in.connect_timeout) {
        SetDuration(cp->mutable_connect_timeout(), *in.connect_timeout);
      }
      if (in.idle_timeout) {
        SetDuration(cp->mutable_idle_timeout(), *in.idle_timeout);
      }
    }
    if (const auto* od_in = pick(&api::TrafficPolicy::outlier_detection)) {
      const auto& in = *od_in;
      auto* od = c->mutable_outlier_detection();
      // Istio's defaults for fields left out: 5 consecutive 5xx, 10s interval, 30s base
      // ejection time, 10% max ejection.
      od->set_consecutive_5xx_errors(static_cast<uint32_t>(in.consecutive_5xx_errors));
      od->set_consecutive_gateway_errors(static_cast<uint32_t>(in.consecutive_gateway_errors));
      if (in.consecutive_5xx_errors == 0 && in.consecutive_gateway_errors == 0) {
        od->set_consecutive_5xx_errors(5);
      }
      SetDuration(od->mutable_interval(), in.interval.value_or(std::chrono::seconds(10)));
      SetDuration(od->mutable_base_ejection_time(),
                  in.base_ejection_time.value_or(std::chrono::seconds(30)));
      od->set_max_ejection_percent(
          static_cast<uint32_t>(in.max_ejection_percent ? in.max_ejection_percent : 10));
      od->set_min_health_percent(static_cast<uint32_t>(in.min_health_percent));
    }
  }

  void BuildClusters() {
    // Sorted by (fqdn, port, subset).
    struct Sorted {
      uint64_t prefix;  // of the FQDN, to sort without reading the strings (mostly)
      std::string_view name;
      std::string_view fqdn;
      uint32_t port;
      std::string_view subset;
      const Index::ServiceEntry* service;
    };
    std::vector<Sorted> sorted;
    sorted.reserve(clusters_.size());
    for (const auto& [name, key] : clusters_) {
      std::string_view fqdn = name.substr(name.size() - key.fqdn_size);
      sorted.push_back(
          {Prefix(fqdn), name, fqdn, key.port,
           name.substr(name.size() - key.fqdn_size - 1 - key.subset_size, key.subset_size),
           key.service});
    }
    std::sort(sorted.begin(), sorted.end(), [](const Sorted& a, const Sorted& b) {
      if (a.prefix != b.prefix) {
        return a.prefix < b.prefix;
      }
      return std::tie(a.fqdn, a.port, a.subset) < std::tie(b.fqdn, b.port, b.subset);
    });
    snapshot_->mutable_clusters()->Reserve(static_cast<int>(sorted.size()));
    snapshot_->mutable_endpoints()->Reserve(static_cast<int>(sorted.size()));
    const Object* dr = nullptr;  // of the last FQDN: clusters of one host are consecutive
    std::string_view dr_fqdn;
    bool have_dr = false;
    for (const auto& key : sorted) {
      auto* c = snapshot_->add_clusters();
      c->set_name(key.name.data(), key.name.size());
      c->set_service(key.fqdn.data(), key.fqdn.size());
      c->set_port(key.port);
      c->set_subset(key.subset.data(), key.subset.size());
      const Index::ServiceEntry* entry = key.service;
      const Object* svc = entry != nullptr ? entry->object : nullptr;
      if (svc != nullptr) {
        c->set_service_name(svc->meta.name);
        c->set_service_namespace(svc->meta.namespace_);
      } else {
        auto parts = Split(key.fqdn, '.');
        if (parts.empty()) {
          c->set_service_name(key.fqdn.data(), key.fqdn.size());
        } else {
          c->set_service_name(parts[0]);
        }
        if (parts.size() > 1 && EndsWith(key.fqdn, kDomainSuffix)) {
          c->set_service_namespace(parts[1]);
        }
      }
      if (!have_dr || key.fqdn != dr_fqdn) {
        dr = index_.DestinationRuleFor(key.fqdn);
        dr_fqdn = key.fqdn;
        have_dr = true;
      }
      const api::Subset* subset = key.subset.empty() ? nullptr : Index::FindSubset(dr, key.subset);
      if (dr != nullptr) {
        ApplyPolicy(dr->As<api::DestinationRule>().traffic_policy.get(),
                    subset != nullptr ? subset->traffic_policy.get() : nullptr, c);
      }
      auto* cla = snapshot_->add_endpoints();
      cla->set_cluster_name(key.name.data(), key.name.size());
      if (svc != nullptr && (key.subset.empty() || subset != nullptr)) {
        AddEndpoints(*entry, key.port, subset, cla);
      }
    }
  }

  void AddEndpoints(const Index::ServiceEntry& entry, uint32_t port, const api::Subset* subset,
                    v1::ClusterLoadAssignment* cla) {
    const auto& svc = entry.object->As<api::Service>();
    const api::ServicePort* sp = nullptr;
    for (const auto& p : svc.ports) {
      if (p.port == port) {
        sp = &p;
      }
    }
    if (sp == nullptr) {
      return;
    }
    for (const auto& [slice_obj, pods] : entry.slices) {
      const auto& slice = slice_obj->As<api::EndpointSlice>();
      // The slice port that carries this service port: same name (or the only one).
      uint32_t target = 0;
      for (const auto& p : slice.ports) {
        if (p.name == sp->name || (slice.ports.size() == 1 && svc.ports.size() == 1)) {
          target = p.port;
          break;
        }
      }
      if (target == 0) {
        continue;
      }
      for (size_t i = 0; i < slice.endpoints.size(); ++i) {
        const auto& e = slice.endpoints[i];
        const Object* pod = pods[i];
        if (subset != nullptr &&
            (pod == nullptr || !LabelsMatch(subset->labels, pod->meta.labels))) {
          continue;
        }
        for (const auto& addr : e.addresses) {
          auto* ep = cla->add_endpoints();
          ep->set_address(addr);
          ep->set_port(target);
          ep->set_healthy(e.ready);
          if (pod != nullptr) {
            std::string ref;
            ref.reserve(pod->meta.namespace_.size() + 1 + pod->meta.name.size());
            ref.append(pod->meta.namespace_).append("/").append(pod->meta.name);
            ep->set_pod(std::move(ref));
            for (const auto& [k, v] : pod->meta.labels) {
              auto* l = ep->add_labels();
              l->set_name(k);
              l->set_value(v);
            }
          }
        }
      }
    }
    auto* eps = cla->mutable_endpoints();
    std::sort(eps->pointer_begin(), eps->pointer_end(),
              [](const v1::Endpoint* a, const v1::Endpoint* b) {
                return std::forward_as_tuple(a->address(), a->port(), a->pod()) <
                       std::forward_as_tuple(b->address(), b->port(), b->pod());
              });
  }

  // A cluster the routes refer to, by name ("outbound|<port>|<subset>|<fqdn>"): the name
  // ends with the subset and the FQDN, whose sizes are kept.
  struct ClusterKey {
    uint32_t port = 0;
    size_t subset_size = 0;
    size_t fqdn_size = 0;
    const Index::ServiceEntry* service = nullptr;  // of the FQDN
  };

  const Index& index_;
  const ProxyGroup& group_;
  v1::Snapshot* snapshot_;
  std::unordered_map<std::string_view, ClusterKey> clusters_;  // views of snapshot strings
  // Scratch buffers, reused to keep allocations out of the per-route work.
  std::string fqdn_buf_, source_buf_;
  std::string last_service_fqdn_;
  const Index::ServiceEntry* last_service_ = nullptr;
  bool have_last_service_ = false;
  std::vector<std::string_view> conds_;
  std::vector<uint32_t> codes_;
};

}  // namespace

Translator::Translator(std::vector<Object> objects)
    : index_(std::make_unique<Index>(std::move(objects))) {
  // Index::istio is sorted by kind/ns/name, so the statuses are too.
  statuses_.reserve(index_->istio.size());
  Scratch scratch;
  for (const Object* o : index_->istio) {
    statuses_.push_back(MakeStatus(*index_, *o, &scratch));
  }
}

Translator::~Translator() = default;

const std::vector<ResourceStatus>& Translator::Statuses() const { return statuses_; }

void Translator::Build(const ProxyGroup& group, v1::Snapshot* snapshot) const {
  Builder(*index_, group, snapshot).Build();
}

v1::Snapshot Translator::Build(const ProxyGroup& group) const {
  v1::Snapshot snapshot;
  Build(group, &snapshot);
  return snapshot;
}

namespace {

constexpr size_t kHugePage = size_t{2} << 20;

void* AllocateArenaBlock(size_t size) {
  if (size < kHugePage) {
    return ::operator new(size);
  }
  // Map a 2 MiB-aligned range, so that the kernel can back it with huge pages.
  size_t length = size + kHugePage;
  void* mapped = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) {
    throw std::bad_alloc();
  }
  auto start = reinterpret_cast<uintptr_t>(mapped);
  uintptr_t block = (start + kHugePage - 1) & ~(kHugePage - 1);
  uintptr_t block_end = (block + size + 4095) & ~uintptr_t{4095};
  if (block > start) {
    munmap(mapped, block - start);
  }
  if (start + length > block_end) {
    munmap(reinterpret_cast<void*>(block_end), start + length - block_end);
  }
  (void)madvise(reinterpret_cast<void*>(block), size, MADV_HUGEPAGE);  // a hint only
  return reinterpret_cast<void*>(block);
}

void DeallocateArenaBlock(void* block, size_t size) {
  if (size < kHugePage) {
    ::operator delete(block);
  } else {
    munmap(block, size);
  }
}

}  // namespace

google::protobuf::ArenaOptions SnapshotArenaOptions() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 4096;
  options.max_block_size = kHugePage;
  options.block_alloc = AllocateArenaBlock;
  options.block_dealloc = DeallocateArenaBlock;
  return options;
}

std::string SnapshotToJson(const v1::Snapshot& snapshot) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  (void)google::protobuf::util::MessageToJsonString(snapshot, &out, options);
  return nlohmann::json::parse(out).dump(2) + "\n";
}

std::string StatusesToJson(const std::vector<ResourceStatus>& statuses) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& s : statuses) {
    nlohmann::json j;
    j["kind"] = api::KindName(s.kind);
    j["namespace"] = s.namespace_;
    j["name"] = s.name;
    j["observedGeneration"] = s.observed_generation;
    nlohmann::json conds = nlohmann::json::array();
    for (const auto& c : s.conditions) {
      conds.push_back(
          {{"type", c.type}, {"status", c.status}, {"reason", c.reason}, {"message", c.message}});
    }
    j["conditions"] = conds;
    if (!s.warnings.empty()) {
      j["warnings"] = s.warnings;
    }
    arr.push_back(j);
  }
  return arr.dump(2) + "\n";
}

}  // namespace skiff::translate

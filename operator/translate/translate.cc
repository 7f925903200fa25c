#include "operator/translate/translate.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <unordered_map>

#include "common/strings.h"

namespace skiff::translate {

using api::Kind;
using api::Object;

namespace {

// Keys that point into the translator's own copy of the objects (which never moves).
using NsNameView = std::pair<std::string_view, std::string_view>;
struct NsNameHash {
  size_t operator()(const NsNameView& k) const {
    return std::hash<std::string_view>()(k.first) * 31 + std::hash<std::string_view>()(k.second);
  }
};

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

void SetHeaders(v1::Headers* out, const api::Headers& in) {
  if (!Empty(in.request)) {
    SetHeaderOps(out->mutable_request(), in.request);
  }
  if (!Empty(in.response)) {
    SetHeaderOps(out->mutable_response(), in.response);
  }
}

bool HasHeaders(const api::Headers& h) { return !Empty(h.request) || !Empty(h.response); }

bool LabelsMatch(const api::Labels& selector, const api::Labels& labels) {
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) {
      return false;
    }
  }
  return true;
}

// "name" in the VS namespace, "ns/name", or "mesh".
std::string GatewayKey(const std::string& ref, const std::string& ns) {
  if (ref == "mesh" || ref.find('/') != std::string::npos) {
    return ref;
  }
  return ns + "/" + ref;
}

struct ClusterKey {
  std::string fqdn;
  uint32_t port = 0;
  std::string subset;
  bool operator<(const ClusterKey& o) const {
    return std::tie(fqdn, port, subset) < std::tie(o.fqdn, o.port, o.subset);
  }
};

}  // namespace

std::string ResolveHost(const std::string& host, const std::string& ns) {
  if (host == "*" || host.find('.') != std::string::npos) {
    return host;
  }
  return host + "." + ns + "." + kDomainSuffix;
}

std::string ClusterName(uint32_t port, const std::string& subset, const std::string& fqdn) {
  return "outbound|" + std::to_string(port) + "|" + subset + "|" + fqdn;
}

namespace {
// Does `host` (no wildcard) match the wildcard or exact `pattern`?
bool HostMatches(const std::string& host, const std::string& pattern) {
  if (pattern == "*") {
    return true;
  }
  if (StartsWith(pattern, "*")) {
    return EndsWith(host, pattern.substr(1)) && host.size() > pattern.size() - 1;
  }
  return host == pattern;
}
}  // namespace

std::string IntersectHosts(const std::string& vs_host, const std::string& server_host) {
  bool vs_wild = StartsWith(vs_host, "*");
  bool server_wild = StartsWith(server_host, "*");
  if (!vs_wild && !server_wild) {
    return vs_host == server_host ? vs_host : "";
  }
  if (!vs_wild) {
    return HostMatches(vs_host, server_host) ? vs_host : "";
  }
  if (!server_wild) {
    return HostMatches(server_host, vs_host) ? server_host : "";
  }
  // Both wildcards: the more specific one, if one contains the other.
  std::string vs_suffix = vs_host.substr(1);
  std::string server_suffix = server_host.substr(1);
  if (EndsWith(vs_suffix, server_suffix)) {
    return vs_host;
  }
  if (EndsWith(server_suffix, vs_suffix)) {
    return server_host;
  }
  return "";
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

class Index {
 public:
  explicit Index(std::vector<Object> objects) : owned(std::move(objects)) {
    // A duplicate key (the store never holds two) keeps the first.
    std::set<std::tuple<Kind, std::string_view, std::string_view>> seen;
    std::vector<bool> skip(owned.size(), false);
    for (size_t i = 0; i < owned.size(); ++i) {
      const auto& o = owned[i];
      skip[i] = !seen.insert({o.kind, o.meta.namespace_, o.meta.name}).second;
    }
    auto order = [](const Object* a, const Object* b) {
      return std::tie(a->meta.creation_timestamp, a->meta.namespace_, a->meta.name) <
             std::tie(b->meta.creation_timestamp, b->meta.namespace_, b->meta.name);
    };
    for (size_t i = 0; i < owned.size(); ++i) {
      if (skip[i]) {
        continue;
      }
      const Object& o = owned[i];
      switch (o.kind) {
        case Kind::kGateway:
          all_istio.push_back(&o);
          if (o.Valid()) {
            gateways.push_back(&o);
            gateway_by_key[o.meta.namespace_ + "/" + o.meta.name] = &o;
          }
          break;
        case Kind::kVirtualService:
          all_istio.push_back(&o);
          if (o.Valid()) {
            virtual_services.push_back(&o);
          }
          break;
        case Kind::kDestinationRule:
          all_istio.push_back(&o);
          if (o.Valid()) {
            destination_rules.push_back(&o);
          }
          break;
        case Kind::kService:
          if (o.Valid()) {
            services.emplace(o.meta.name + "." + o.meta.namespace_ + "." + kDomainSuffix, &o);
          }
          break;
        case Kind::kEndpointSlice:
          if (o.Valid()) {
            slices[{o.meta.namespace_, o.As<api::EndpointSlice>().service_name}].push_back(&o);
          }
          break;
        case Kind::kPod:
          if (o.Valid()) {
            pods[{o.meta.namespace_, o.meta.name}] = &o;
          }
          break;
      }
    }
    std::sort(gateways.begin(), gateways.end(), order);
    std::sort(virtual_services.begin(), virtual_services.end(), order);
    std::sort(destination_rules.begin(), destination_rules.end(), order);
    for (const Object* dr : destination_rules) {
      std::string host = ResolveHost(dr->As<api::DestinationRule>().host, dr->meta.namespace_);
      auto [it, inserted] = dr_by_host.emplace(host, dr);
      if (!inserted) {
        shadowed_drs[dr] = it->second;
      }
    }
    for (const auto& [fqdn, svc] : services) {
      service_lookup.emplace(fqdn, svc);
    }
    for (auto& [key, list] : slices) {
      std::sort(list.begin(), list.end(),
                [](const Object* a, const Object* b) { return a->meta.name < b->meta.name; });
    }
  }

  [[nodiscard]] const Object* Service(const std::string& fqdn) const {
    auto it = service_lookup.find(fqdn);
    return it == service_lookup.end() ? nullptr : it->second;
  }
  [[nodiscard]] const Object* DestinationRuleFor(const std::string& fqdn) const {
    auto it = dr_by_host.find(fqdn);
    if (it != dr_by_host.end()) {
      return it->second;
    }
    // A wildcard DestinationRule host ("*.example.com") applies when no exact one does.
    const Object* best = nullptr;
    size_t best_len = 0;
    for (const auto& [host, dr] : dr_by_host) {
      if (StartsWith(host, "*") && HostMatches(fqdn, host) && host.size() > best_len) {
        best = dr;
        best_len = host.size();
      }
    }
    return best;
  }
  [[nodiscard]] const api::Subset* FindSubset(const std::string& fqdn,
                                              const std::string& subset) const {
    const Object* dr = DestinationRuleFor(fqdn);
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

  // The port a destination without an explicit port goes to.
  [[nodiscard]] uint32_t DestinationPort(const api::Destination& d, const std::string& fqdn,
                                         uint32_t context_port) const {
    if (d.port) {
      return *d.port;
    }
    if (const Object* svc = Service(fqdn)) {
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
  std::vector<const Object*> all_istio;
  std::vector<const Object*> gateways, virtual_services, destination_rules;
  std::map<std::string, const Object*> gateway_by_key;
  std::map<std::string, const Object*> services;
  std::unordered_map<NsNameView, std::vector<const Object*>, NsNameHash> slices;
  std::unordered_map<NsNameView, const Object*, NsNameHash> pods;
  std::unordered_map<std::string_view, const Object*> service_lookup;
  std::map<std::string, const Object*> dr_by_host;
  std::map<const Object*, const Object*> shadowed_drs;
};

// ---- statuses -------------------------------------------------------------------------------

namespace {

void CheckVirtualServiceRefs(const Index& index, const Object& vs_obj,
                             std::vector<std::string>* problems) {
  const auto& vs = vs_obj.As<api::VirtualService>();
  const std::string& ns = vs_obj.meta.namespace_;
  auto check_gateways = [&](const std::vector<std::string>& refs, const std::string& path) {
    for (size_t i = 0; i < refs.size(); ++i) {
      std::string key = GatewayKey(refs[i], ns);
      if (key != "mesh" && index.gateway_by_key.count(key) == 0) {
        problems->push_back(path + "[" + std::to_string(i) + "]: Gateway " + key +
                            " does not exist (or is invalid)");
      }
    }
  };
  check_gateways(vs.gateways, "spec.gateways");
  auto check_dest = [&](const api::Destination& d, const std::string& path) {
    std::string fqdn = ResolveHost(d.host, ns);
    if (index.Service(fqdn) == nullptr) {
      problems->push_back(path + ".host: host \"" + d.host + "\" (" + fqdn +
                          ") does not match any Service");
    }
    if (!d.subset.empty() && index.FindSubset(fqdn, d.subset) == nullptr) {
      const Object* dr = index.DestinationRuleFor(fqdn);
      problems->push_back(path + ".subset: subset \"" + d.subset + "\" is not defined" +
                          (dr ? " in " + dr->Ref() : " (no DestinationRule for " + fqdn + ")"));
    }
    if (d.port) {
      if (const Object* svc = index.Service(fqdn)) {
        bool found = false;
        for (const auto& p : svc->As<api::Service>().ports) {
          found = found || p.port == *d.port;
        }
        if (!found) {
          problems->push_back(path + ".port.number: Service " + fqdn + " has no port " +
                              std::to_string(*d.port));
        }
      }
    } else if (const Object* svc = index.Service(fqdn)) {
      if (svc->As<api::Service>().ports.size() > 1 && !vs.gateways.empty() &&
          std::find(vs.gateways.begin(), vs.gateways.end(), "mesh") == vs.gateways.end()) {
        problems->push_back(path + ".port: Service " + fqdn +
                            " has several ports; set port.number");
      }
    }
  };
  for (size_t i = 0; i < vs.http.size(); ++i) {
    const auto& r = vs.http[i];
    std::string base = "spec.http[" + std::to_string(i) + "]";
    for (size_t j = 0; j < r.match.size(); ++j) {
      check_gateways(r.match[j].gateways, base + ".match[" + std::to_string(j) + "].gateways");
    }
    for (size_t j = 0; j < r.route.size(); ++j) {
      check_dest(r.route[j].destination, base + ".route[" + std::to_string(j) + "].destination");
    }
    for (size_t j = 0; j < r.mirrors.size(); ++j) {
      check_dest(r.mirrors[j].destination, base + ".mirrors[" + std::to_string(j) + "]");
    }
  }
}

ResourceStatus MakeStatus(const Index& index, const Object& o) {
  ResourceStatus st;
  st.kind = o.kind;
  st.namespace_ = o.meta.namespace_;
  st.name = o.meta.name;
  st.observed_generation = o.meta.generation;
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
  }
  if (!o.Valid()) {
    return st;
  }
  std::vector<std::string> problems;
  if (o.kind == Kind::kVirtualService) {
    CheckVirtualServiceRefs(index, o, &problems);
  } else if (o.kind == Kind::kDestinationRule) {
    auto it = index.shadowed_drs.find(&o);
    if (it != index.shadowed_drs.end()) {
      problems.push_back("spec.host: " + it->second->Ref() +
                         " already configures this host; this DestinationRule is ignored");
    }
    std::string fqdn = ResolveHost(o.As<api::DestinationRule>().host, o.meta.namespace_);
    if (fqdn.find('*') == std::string::npos && index.Service(fqdn) == nullptr) {
      st.warnings.push_back("spec.host: host \"" + fqdn + "\" does not match any Service");
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

class Builder {
 public:
  Builder(const Index& index, const ProxyGroup& group) : index_(index), group_(group) {}

  v1::Snapshot Build() {
    if (group_.role == "sidecar") {
      BuildSidecar();
    } else {
      BuildGateway();
    }
    BuildClusters();
    std::sort(snapshot_.mutable_listeners()->begin(), snapshot_.mutable_listeners()->end(),
              [](const auto& a, const auto& b) { return a.port() < b.port(); });
    return std::move(snapshot_);
  }

 private:
  // -- gateway role --
  void BuildGateway() {
    // port -> (server, gateway) pairs, in gateway order.
    struct Bound {
      const Object* gateway;
      const api::Server* server;
    };
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
        by_port[s.port->number].push_back({gw, &s});
      }
    }
    for (const auto& [port, bounds] : by_port) {
      std::string table_name = "http." + std::to_string(port);
      auto* l = snapshot_.add_listeners();
      l->set_name("0.0.0.0_" + std::to_string(port));
      l->set_address("0.0.0.0");
      l->set_port(port);
      l->set_protocol("HTTP");
      l->set_route_table(table_name);
      auto* table = snapshot_.add_route_tables();
      table->set_name(table_name);
      std::map<std::string, v1::VirtualHost> vhosts;  // by domain
      for (const Object* vs_obj : index_.virtual_services) {
        const auto& vs = vs_obj->As<api::VirtualService>();
        const std::string& vs_ns = vs_obj->meta.namespace_;
        // Hosts of this VS on this port, across all the servers it binds to, in order.
        std::vector<std::pair<std::string, std::string>> hosts;  // (domain, gateway key)
        std::set<std::string> seen;
        for (const auto& b : bounds) {
          std::string key = b.gateway->meta.namespace_ + "/" + b.gateway->meta.name;
          bool bound = false;
          for (const auto& ref : vs.gateways) {
            bound = bound || GatewayKey(ref, vs_ns) == key;
          }
          if (!bound) {
            continue;
          }
          for (const auto& server_host_raw : b.server->hosts) {
            std::string server_host = server_host_raw;
            auto slash = server_host.find('/');
            if (slash != std::string::npos) {
              std::string ns = server_host.substr(0, slash);
              server_host = server_host.substr(slash + 1);
              if (ns == ".") {
                ns = b.gateway->meta.namespace_;
              }
              if (ns != "*" && ns != vs_ns) {
                continue;
              }
            }
            for (const auto& h : vs.hosts) {
              std::string host = ResolveHost(h, vs_ns);
              std::string domain = IntersectHosts(host, server_host);
              if (!domain.empty() && seen.insert(domain).second) {
                hosts.emplace_back(domain, key);
              }
            }
          }
        }
        for (const auto& [domain, gateway_key] : hosts) {
          auto& vh = vhosts[domain];
          if (vh.name().empty()) {
            vh.set_name(domain + ":" + std::to_string(port));
            vh.add_domains(domain);
          }
          AppendRoutes(*vs_obj, gateway_key, port, 0, &vh);
        }
      }
      for (auto& [domain, vh] : vhosts) {
        *table->add_virtual_hosts() = std::move(vh);
      }
    }
  }

  // -- sidecar role --
  void BuildSidecar() {
    auto* l = snapshot_.add_listeners();
    l->set_name("virtualOutbound");
    l->set_address("0.0.0.0");
    l->set_port(kSidecarOutboundPort);
    l->set_protocol("HTTP");
    l->set_route_table("outbound");
    auto* table = snapshot_.add_route_tables();
    table->set_name("outbound");

    // Mesh VirtualServices by the FQDN of each host (first one wins, as Istio does).
    std::map<std::string, const Object*> vs_by_host;
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
          external.emplace_back(fqdn, vs_obj);
        }
      }
    }
    std::map<std::string, v1::VirtualHost> vhosts;
    for (const auto& [fqdn, svc_obj] : index_.services) {
      const auto& svc = svc_obj->As<api::Service>();
      const std::string& name = svc_obj->meta.name;
      const std::string& ns = svc_obj->meta.namespace_;
      for (const auto& port : svc.ports) {
        std::string p = std::to_string(port.port);
        v1::VirtualHost vh;
        vh.set_name(fqdn + ":" + p);
        std::vector<std::string> names = {fqdn, name + "." + ns + ".svc", name + "." + ns};
        if (ns == group_.namespace_) {
          names.push_back(name);
        }
        if (!svc.cluster_ip.empty() && svc.cluster_ip != "None") {
          names.push_back(svc.cluster_ip);
        }
        for (const auto& n : names) {
          vh.add_domains(n + ":" + p);
          if (port.port == 80) {
            vh.add_domains(n);
          }
        }
        auto vs_it = vs_by_host.find(fqdn);
        if (vs_it != vs_by_host.end()) {
          AppendRoutes(*vs_it->second, "mesh", 0, port.port, &vh);
        } else {
          AddDefaultRoute(fqdn, port.port, &vh);
        }
        vhosts[vh.name()] = std::move(vh);
      }
    }
    for (const auto& [fqdn, vs_obj] : external) {
      v1::VirtualHost vh;
      vh.set_name(fqdn + ":80");
      vh.add_domains(fqdn);
      vh.add_domains(fqdn + ":80");
      AppendRoutes(*vs_obj, "mesh", 0, 80, &vh);
      vhosts[vh.name()] = std::move(vh);
    }
    for (auto& [name, vh] : vhosts) {
      *table->add_virtual_hosts() = std::move(vh);
    }
  }

  void AddDefaultRoute(const std::string& fqdn, uint32_t port, v1::VirtualHost* vh) {
    auto* route = vh->add_routes();
    route->set_name("default");
    auto* action = route->mutable_route();
    auto* wc = action->add_clusters();
    wc->set_cluster(ClusterName(port, "", fqdn));
    wc->set_weight(100);
    clusters_.insert({fqdn, port, ""});
    SetDefaultRetry(action->mutable_retry_policy());
    route->set_source("Service " + fqdn);
  }

  static void SetDefaultRetry(v1::RetryPolicy* rp) {
    // Istio's default when a route has no `retries`.
    rp->set_num_retries(2);
    for (const char* c : {"connect-failure", "refused-stream", "unavailable", "cancelled",
                          "retriable-status-codes"}) {
      rp->add_retry_on(c);
    }
    rp->add_retriable_status_codes(503);
  }

  // Appends the routes of `vs_obj` that apply to this gateway (`gateway_key`, or "mesh"),
  // listener port (gateways) or service port (sidecars).
  void AppendRoutes(const Object& vs_obj, const std::string& gateway_key, uint32_t listener_port,
                    uint32_t service_port, v1::VirtualHost* vh) {
    const auto& vs = vs_obj.As<api::VirtualService>();
    const std::string& ns = vs_obj.meta.namespace_;
    std::string ref = "VirtualService " + ns + "/" + vs_obj.meta.name;
    for (size_t i = 0; i < vs.http.size(); ++i) {
      const auto& http = vs.http[i];
      std::string base = ref + " spec.http[" + std::to_string(i) + "]";
      if (http.match.empty()) {
        EmitRoute(http, nullptr, ns, service_port, base, vh);
        continue;
      }
      for (size_t j = 0; j < http.match.size(); ++j) {
        const auto& m = http.match[j];
        if (!m.gateways.empty()) {
          bool applies = false;
          for (const auto& g : m.gateways) {
            applies = applies || GatewayKey(g, ns) == gateway_key;
          }
          if (!applies) {
            continue;
          }
        }
        uint32_t port = listener_port != 0 ? listener_port : service_port;
        if (m.port != 0 && m.port != port) {
          continue;
        }
        EmitRoute(http, &m, ns, service_port, base + ".match[" + std::to_string(j) + "]", vh);
      }
    }
  }

  std::string DestinationCluster(const api::Destination& d, const std::string& ns,
                                 uint32_t service_port) {
    std::string fqdn = ResolveHost(d.host, ns);
    uint32_t port = index_.DestinationPort(d, fqdn, service_port);
    clusters_.insert({fqdn, port, d.subset});
    return ClusterName(port, d.subset, fqdn);
  }

  void EmitRoute(const api::HTTPRoute& http, const api::HTTPMatchRequest* m, const std::string& ns,
                 uint32_t service_port, const std::string& source, v1::VirtualHost* vh) {
    auto* route = vh->add_routes();
    route->set_name(m != nullptr && !m->name.empty() ? http.name + "." + m->name : http.name);
    route->set_source(source);
    if (m != nullptr) {
      auto* rm = route->mutable_match();
      rm->set_name(m->name);
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
      SetHeaders(route->mutable_headers(), http.headers);
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
      wc->set_cluster(DestinationCluster(rd.destination, ns, service_port));
      wc->set_weight(static_cast<uint32_t>(
          http.route.size() == 1 && !rd.weight_set ? 100 : std::max<int64_t>(rd.weight, 0)));
      if (HasHeaders(rd.headers)) {
        SetHeaders(wc->mutable_headers(), rd.headers);
      }
    }
    if (http.timeout && http.timeout->count() > 0) {
      SetDuration(action->mutable_timeout(), *http.timeout);
    }
    if (!http.retries) {
      SetDefaultRetry(action->mutable_retry_policy());
    } else if (http.retries->attempts > 0) {
      auto* rp = action->mutable_retry_policy();
      rp->set_num_retries(static_cast<uint32_t>(http.retries->attempts));
      if (http.retries->per_try_timeout) {
        SetDuration(rp->mutable_per_try_timeout(), *http.retries->per_try_timeout);
      }
      std::vector<std::string> conds;
      std::vector<uint32_t> codes;
      for (const auto& raw : Split(http.retries->retry_on, ',')) {
        std::string c(Trim(raw));
        if (c.empty()) {
          continue;
        }
        if (c.find_first_not_of("0123456789") == std::string::npos) {
          codes.push_back(static_cast<uint32_t>(std::stoul(c)));
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
      for (const auto& c : conds) {
        rp->add_retry_on(c);
      }
      for (uint32_t c : codes) {
        rp->add_retriable_status_codes(c);
      }
    }
    for (const auto& mirror : http.mirrors) {
      auto* mp = action->add_mirrors();
      mp->set_cluster(DestinationCluster(mirror.destination, ns, service_port));
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

  // -- clusters and endpoints --
  static api::TrafficPolicy MergePolicy(const std::optional<api::TrafficPolicy>& base,
                                        const std::optional<api::TrafficPolicy>& subset) {
    api::TrafficPolicy out = base.value_or(api::TrafficPolicy{});
    if (subset) {
      if (subset->load_balancer) {
        out.load_balancer = subset->load_balancer;
      }
      if (subset->connection_pool) {
        out.connection_pool = subset->connection_pool;
      }
      if (subset->outlier_detection) {
        out.outlier_detection = subset->outlier_detection;
      }
    }
    return out;
  }

  static void ApplyPolicy(const api::TrafficPolicy& tp, v1::Cluster* c) {
    if (tp.load_balancer) {
      auto* lb = c->mutable_load_balancer();
      const auto& in = *tp.load_balancer;
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
    if (tp.connection_pool) {
      const auto& in = *tp.connection_pool;
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
    if (tp.outlier_detection) {
      const auto& in = *tp.outlier_detection;
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
    for (const auto& key : clusters_) {
      auto* c = snapshot_.add_clusters();
      std::string name = ClusterName(key.port, key.subset, key.fqdn);
      c->set_name(name);
      c->set_service(key.fqdn);
      c->set_port(key.port);
      c->set_subset(key.subset);
      const Object* svc = index_.Service(key.fqdn);
      if (svc != nullptr) {
        c->set_service_name(svc->meta.name);
        c->set_service_namespace(svc->meta.namespace_);
      } else {
        auto parts = Split(key.fqdn, '.');
        c->set_service_name(parts.empty() ? key.fqdn : parts[0]);
        if (parts.size() > 1 && EndsWith(key.fqdn, kDomainSuffix)) {
          c->set_service_namespace(parts[1]);
        }
      }
      const api::Subset* subset =
          key.subset.empty() ? nullptr : index_.FindSubset(key.fqdn, key.subset);
      if (const Object* dr = index_.DestinationRuleFor(key.fqdn)) {
        const auto& spec = dr->As<api::DestinationRule>();
        ApplyPolicy(
            MergePolicy(spec.traffic_policy, subset ? subset->traffic_policy : std::nullopt), c);
      }
      auto* cla = snapshot_.add_endpoints();
      cla->set_cluster_name(name);
      if (svc != nullptr && (key.subset.empty() || subset != nullptr)) {
        AddEndpoints(*svc, key.port, subset, cla);
      }
    }
  }

  void AddEndpoints(const Object& svc_obj, uint32_t port, const api::Subset* subset,
                    v1::ClusterLoadAssignment* cla) {
    const auto& svc = svc_obj.As<api::Service>();
    const api::ServicePort* sp = nullptr;
    for (const auto& p : svc.ports) {
      if (p.port == port) {
        sp = &p;
      }
    }
    if (sp == nullptr) {
      return;
    }
    auto it = index_.slices.find({svc_obj.meta.namespace_, svc_obj.meta.name});
    if (it == index_.slices.end()) {
      return;
    }
    std::vector<v1::Endpoint> eps;
    for (const Object* slice_obj : it->second) {
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
      for (const auto& e : slice.endpoints) {
        const Object* pod = nullptr;
        if (e.target_kind == "Pod") {
          auto pit = index_.pods.find({e.target_namespace, e.target_name});
          pod = pit == index_.pods.end() ? nullptr : pit->second;
        }
        if (subset != nullptr &&
            (pod == nullptr || !LabelsMatch(subset->labels, pod->meta.labels))) {
          continue;
        }
        for (const auto& addr : e.addresses) {
          v1::Endpoint ep;
          ep.set_address(addr);
          ep.set_port(target);
          ep.set_healthy(e.ready);
          if (pod != nullptr) {
            ep.set_pod(pod->meta.namespace_ + "/" + pod->meta.name);
            for (const auto& [k, v] : pod->meta.labels) {
              auto* l = ep.add_labels();
              l->set_name(k);
              l->set_value(v);
            }
          }
          eps.push_back(std::move(ep));
        }
      }
    }
    std::sort(eps.begin(), eps.end(), [](const v1::Endpoint& a, const v1::Endpoint& b) {
      return std::make_tuple(a.address(), a.port(), a.pod()) <
             std::make_tuple(b.address(), b.port(), b.pod());
    });
    for (auto& ep : eps) {
      *cla->add_endpoints() = std::move(ep);
    }
  }

  const Index& index_;
  const ProxyGroup& group_;
  v1::Snapshot snapshot_;
  std::set<ClusterKey> clusters_;
};

}  // namespace

Translator::Translator(std::vector<Object> objects)
    : index_(std::make_unique<Index>(std::move(objects))) {
  for (const Object* o : index_->all_istio) {
    statuses_.push_back(MakeStatus(*index_, *o));
  }
  std::sort(statuses_.begin(), statuses_.end(), [](const auto& a, const auto& b) {
    return std::tie(a.kind, a.namespace_, a.name) < std::tie(b.kind, b.namespace_, b.name);
  });
}

Translator::~Translator() = default;

const std::vector<ResourceStatus>& Translator::Statuses() const { return statuses_; }

v1::Snapshot Translator::Build(const ProxyGroup& group) const {
  return Builder(*index_, group).Build();
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

#include "operator/translate/status.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/strings.h"
#include "operator/api/names.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

using api::Kind;
using api::Object;

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

// What of a valid ServiceEntry skiff does not serve, one text per part.
std::vector<std::string> ServiceEntryNotServed(const Index& index, const Object& o) {
  const auto& se = o.As<api::ServiceEntry>();
  std::vector<std::string> out;
  for (size_t i = 0; i < se.hosts.size(); ++i) {
    const std::string& h = se.hosts[i];
    std::string at = "spec.hosts[" + std::to_string(i) + "]: ";
    if (h.find('*') != std::string::npos) {
      out.push_back(at + "wildcard hosts are not served by skiff yet; \"" + h + "\" is ignored");
      continue;
    }
    const Index::ServiceEntry* entry = index.ServiceEntryFor(h);
    if (entry != nullptr && entry->service_entry != &o) {
      out.push_back(at +
                    (entry->service_entry == nullptr
                         ? "the Kubernetes Service " + entry->object->meta.namespace_ + "/" +
                               entry->object->meta.name
                         : entry->service_entry->Ref() + " (older)") +
                    " already has host \"" + h + "\"; it is served from there");
    }
  }
  const std::string& res = se.resolution;
  if (res == "NONE") {
    out.push_back(
        "spec.resolution: NONE is not served by skiff yet: routes to its hosts have no "
        "endpoints, and a captured sidecar's connections to them pass through to the address "
        "the client connected to (as without the entry)");
  }
  if (res == "DYNAMIC_DNS") {
    out.push_back(
        "spec.resolution: DYNAMIC_DNS is not served by skiff yet: requests to its hosts are "
        "not routed by it");
  }
  for (size_t i = 0; i < se.endpoints.size(); ++i) {
    const std::string& a = se.endpoints[i].address;
    if (StartsWith(a, "unix://")) {
      out.push_back("spec.endpoints[" + std::to_string(i) + "].address: \"" + a +
                    "\": unix:// endpoints are not served by skiff yet; this endpoint is not "
                    "used");
    }
  }
  if (!se.addresses.empty() && se.hosts.size() > 1) {
    for (const auto& p : se.ports) {
      if (p.protocol != "HTTP" && p.protocol != "HTTP2" && p.protocol != "GRPC" &&
          p.protocol != "HTTP_PROXY") {
        out.push_back("spec.addresses: with several hosts, connections to port " +
                      std::to_string(p.number) +
                      " (not HTTP) of these addresses cannot be told apart by host: a "
                      "captured sidecar passes them through");
        break;
      }
    }
  }
  if (!se.export_to.empty() && !(se.export_to.size() == 1 && se.export_to[0] == "*")) {
    out.push_back(
        "spec.exportTo: skiff does not narrow a ServiceEntry's visibility yet: its "
        "hosts are seen from every namespace");
  }
  return out;
}

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
      auto [ref_ns, ref_name] = GatewayRefParts(ref, ns);
      buf.assign(ref_ns).append("/").append(ref_name);
      std::string_view key = buf;
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
    if ((svc != nullptr || index.KnownHost(fqdn_view)) && !subset_missing && !port_missing &&
        !port_ambiguous) {
      return;  // the common case: no problem, no strings
    }
    std::string fqdn(fqdn_view);
    if (svc == nullptr && !index.KnownHost(fqdn)) {
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
    if (r.delegate) {
      std::string why;
      if (index.Delegate(*r.delegate, ns, &why) == nullptr) {
        problems->push_back("spec.http[" + std::to_string(i) + "].delegate: " + why +
                            ", so this rule is not served");
      }
    }
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
  if (o.rejected) {
    // The current version is invalid; its last valid version is what is served.
    std::vector<std::string> rejected;
    rejected.reserve(o.rejected->errors.size());
    for (const auto& m : o.rejected->errors) {
      rejected.push_back(m.Format());
    }
    st.conditions.push_back(
        {"Accepted", "False", "Invalid",
         Join(rejected, "; ") + " (the last valid version" +
             (o.origin.empty() || o.origin == o.rejected->origin ? "" : ", " + o.origin) +
             ", is still served until this is fixed)"});
  } else if (errors.empty()) {
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
    // As a VirtualService destination's: a host that names no Service is an unresolved
    // reference (the rule is still applied should the Service appear).
    if (fqdn.find('*') == std::string_view::npos && !index.KnownHost(fqdn)) {
      problems.push_back("spec.host: host \"" + std::string(fqdn) +
                         "\" does not match any Service");
    }
  } else if (o.kind == Kind::kServiceEntry) {
    std::vector<std::string> unsupported = ServiceEntryNotServed(index, o);
    for (const auto& text : unsupported) {
      st.warnings.push_back(text);
    }
    if (!unsupported.empty()) {
      st.conditions[0].reason = "UnsupportedValue";
      st.conditions[0].message =
          "the resource is valid, but skiff does not serve all of it: " + Join(unsupported, "; ");
    }
  } else if (o.kind == Kind::kGateway) {
    const auto& gw = o.As<api::Gateway>();
    std::vector<std::string> unsupported;
    for (size_t i = 0; i < gw.servers.size(); ++i) {
      const auto& s = gw.servers[i];
      std::string why;
      if (s.port && !GatewayServerServed(s, &why) && !why.empty()) {
        std::string text = "spec.servers[" + std::to_string(i) +
                           (StartsWith(s.bind, "unix://") ? "].bind: " : "]: ") + why +
                           "; this server is ignored";
        if (!StartsWith(why, "tls.mode")) {
          st.warnings.push_back(text);  // (the decoder warned of the mode already)
        }
        unsupported.push_back(std::move(text));
        continue;
      }
      const bool tcp = s.port && IsTcpProtocol(s.port->protocol);
      if (s.port && (IsServedProtocol(s.port->protocol) || tcp)) {
        // A plain-text server on a port that TLS servers use, or an HTTP server on the TCP
        // port of an earlier server (and the reverse): the first kind on the port wins (of
        // any Gateway with the same selector would be finer; this one's are what its
        // status can tell).
        for (size_t k = 0; k < gw.servers.size(); ++k) {
          const auto& other = gw.servers[k];
          if (!other.port || other.port->number != s.port->number) {
            continue;
          }
          std::string text;
          if (other.port->protocol == "HTTPS" || other.port->protocol == "TLS") {
            text = "spec.servers[" + std::to_string(i) + "]: port " +
                   std::to_string(s.port->number) + " also has the TLS server " + "spec.servers[" +
                   std::to_string(k) + "]; a plain-text server cannot share it, and is ignored";
          } else if (k < i && IsTcpProtocol(other.port->protocol) != tcp &&
                     (IsServedProtocol(other.port->protocol) ||
                      IsTcpProtocol(other.port->protocol))) {
            text = "spec.servers[" + std::to_string(i) + "]: port " +
                   std::to_string(s.port->number) + " is served as " + (tcp ? "HTTP" : "TCP") +
                   " (spec.servers[" + std::to_string(k) + "] comes first); " +
                   (tcp ? "a TCP" : "an HTTP") + " server cannot share it, and is ignored";
          } else {
            continue;
          }
          st.warnings.push_back(text);
          unsupported.push_back(std::move(text));
          break;
        }
      }
      if (s.tls && s.tls->mode != "PASSTHROUGH") {
        auto creds = index.CredentialsFor(o.meta.namespace_, *s.tls, i);
        const std::string& name = s.tls->credential_name;
        if (!creds.problem.empty() && !name.empty() &&
            index.SecretFor(o.meta.namespace_, name) == nullptr) {
          // Not in the Gateway's namespace: a gateway proxy reads it from its own (as
          // Istio), so one of that name elsewhere that can serve is no problem.
          for (const auto& [key, entry] : index.secrets) {
            size_t slash = key.find('/');
            if (std::string_view(key).substr(slash + 1) != name) {
              continue;
            }
            auto there = index.CredentialsFor(o.meta.namespace_, *s.tls, i, key.substr(0, slash));
            if (there.problem.empty()) {
              creds = std::move(there);
              break;
            }
          }
        }
        if (!creds.problem.empty()) {
          problems.push_back(std::move(creds.problem));
        }
      }
    }
    if (!unsupported.empty()) {
      // Valid, and served in part: what is not served shows in the Accepted condition.
      st.conditions[0].reason = "UnsupportedValue";
      st.conditions[0].message =
          "the resource is valid, but skiff does not serve all of it: " + Join(unsupported, "; ");
    }
  }
  if (problems.empty()) {
    st.conditions.push_back({"ResolvedRefs", "True", "ResolvedRefs", "all references resolved"});
  } else {
    // A Gateway's only unresolved references are its certificates (as Gateway API's
    // InvalidCertificateRef).
    const char* reason = o.kind == Kind::kGateway ? "InvalidCertificateRef" : "RefNotFound";
    st.conditions.push_back({"ResolvedRefs", "False", reason, Join(problems, "; ")});
  }
  return st;
}

}  // namespace

std::vector<ResourceStatus> MakeStatuses(const Index& index) {
  std::vector<ResourceStatus> statuses;
  statuses.reserve(index.istio.size());
  Scratch scratch;
  for (const Object* o : index.istio) {
    statuses.push_back(MakeStatus(index, *o, &scratch));
  }
  return statuses;
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

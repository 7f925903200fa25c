// ServiceEntry: hosts, addresses, ports, location, resolution, endpoints and
// workloadSelector, with Istio's rules (what its webhook refuses is an error here too).
#include <algorithm>
#include <set>

#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

namespace skiff::api {

namespace {

std::string PortRangeError(int64_t n) {
  return "must be a port number between 1 and 65535 (got " + std::to_string(n) + ")";
}

void DecodePorts(Reader& spec, ServiceEntry* se) {
  Messages& msgs = spec.msgs();
  std::set<std::string> names;
  std::set<uint32_t> numbers;
  ForEachItem(spec, "ports", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    if (!r.ok()) {
      msgs.Error(path, "a port must be a map, not null");
      return;
    }
    ServiceEntryPort port;
    auto number = r.Int("number");
    if (!number) {
      msgs.Error(r.Path("number"), "must be a port number between 1 and 65535");
    } else if (*number < 1 || *number > 65535) {
      msgs.Error(r.Path("number"), PortRangeError(*number));
    } else {
      port.number = static_cast<uint32_t>(*number);
      if (!numbers.insert(port.number).second) {
        msgs.Error(r.Path("number"),
                   "port " + std::to_string(port.number) + " is already defined in spec.ports");
      }
    }
    port.name = r.String("name");
    if (!IsDns1123Label(port.name)) {
      msgs.Error(r.Path("name"),
                 port.name.empty()
                     ? std::string("required: a port name (a DNS label, e.g. \"http\")")
                     : "invalid port name \"" + port.name +
                           "\" (lower-case letters, digits and '-', at most 63)");
    } else if (!names.insert(port.name).second) {
      msgs.Error(r.Path("name"),
                 "port name \"" + port.name + "\" is already defined in spec.ports");
    }
    std::string protocol = r.String("protocol");
    port.protocol = UpperAscii(protocol);
    if (!port.protocol.empty() && !IsIstioPortProtocol(port.protocol)) {
      msgs.Error(r.Path("protocol"), "unsupported protocol \"" + protocol +
                                         "\" (HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, "
                                         "TLS, MONGO, MYSQL, REDIS, UDP)");
    }
    if (auto target = r.Int("targetPort"); target && *target != 0) {
      if (*target < 1 || *target > 65535) {
        msgs.Error(r.Path("targetPort"), PortRangeError(*target));
      } else {
        port.target_port = static_cast<uint32_t>(*target);
      }
    }
    se->ports.push_back(std::move(port));
  });
}

WorkloadEntry DecodeEndpoint(Reader& r, const std::set<std::string>& port_names) {
  Messages& msgs = r.msgs();
  WorkloadEntry e;
  e.address = r.String("address");
  if (const auto* ports = r.Get("ports")) {
    if (!ports->is_object()) {
      msgs.Error(r.Path("ports"),
                 "expected a map of port name to number, got " + JsonTypeName(*ports));
    } else {
      for (const auto& [name, value] : ports->items()) {
        std::string at = r.Path("ports") + "." + name;
        if (!value.is_number_integer()) {
          msgs.Error(at, "expected a port number, got " + JsonTypeName(value));
          continue;
        }
        int64_t n = value.get<int64_t>();
        if (n < 1 || n > 65535) {
          msgs.Error(at, PortRangeError(n));
          continue;
        }
        if (!IsDns1123Label(name)) {
          msgs.Error(at, "invalid port name \"" + name + "\"");
          continue;
        }
        if (port_names.count(name) == 0) {
          msgs.Error(at, "port \"" + name + "\" is not defined in spec.ports");
          continue;
        }
        e.ports[name] = static_cast<uint32_t>(n);
      }
    }
  }
  e.labels = r.StringMap("labels");
  CheckLabels(e.labels, r.Path("labels"), msgs);
  e.network = r.String("network");
  e.locality = r.String("locality");
  e.service_account = r.String("serviceAccount");
  if (auto w = r.Int("weight")) {
    if (*w < 0 || *w > std::numeric_limits<uint32_t>::max()) {
      msgs.Error(r.Path("weight"), "must be between 0 and 4294967295");
    } else {
      e.weight = static_cast<uint32_t>(*w);
    }
  }
  return e;
}

}  // namespace

ServiceEntry DecodeServiceEntry(Reader& spec) {
  ServiceEntry se;
  Messages& msgs = spec.msgs();

  se.hosts = spec.StringList("hosts");
  if (se.hosts.empty()) {
    msgs.Error(spec.Path("hosts"), "at least one host is required");
  }
  for (size_t i = 0; i < se.hosts.size(); ++i) {
    const std::string& h = se.hosts[i];
    std::string at = IndexPath(spec.Path("hosts"), i);
    if (h == "*") {
      msgs.Error(at, "invalid host \"*\": a ServiceEntry cannot add every host");
    } else if (auto err = ValidateWildcardDomain(h); !err.empty()) {
      msgs.Error(at, err);
    } else if (h.find('*') != std::string::npos && !StartsWith(h, "*.") &&
               spec.String("resolution") != "DYNAMIC_DNS") {
      msgs.Warn(at, "partial wildcard \"" + h + "\" not allowed");
    }
  }

  se.location = spec.String("location");
  if (!se.location.empty() && se.location != "MESH_EXTERNAL" && se.location != "MESH_INTERNAL") {
    msgs.Error(spec.Path("location"),
               "unknown location \"" + se.location + "\" (MESH_EXTERNAL, MESH_INTERNAL)");
  }
  if (se.location.empty()) {
    se.location = "MESH_EXTERNAL";
  }
  se.resolution = spec.String("resolution");
  if (se.resolution.empty()) {
    se.resolution = "NONE";
  }
  const std::string& res = se.resolution;
  const bool known_resolution = res == "NONE" || res == "STATIC" || res == "DNS" ||
                                res == "DNS_ROUND_ROBIN" || res == "DYNAMIC_DNS";
  if (!known_resolution) {
    msgs.Error(spec.Path("resolution"), "unsupported resolution type \"" + res +
                                            "\" (NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS)");
  }
  const bool dns = res == "DNS" || res == "DNS_ROUND_ROBIN";

  se.addresses = spec.StringList("addresses");
  bool cidr = false;
  for (size_t i = 0; i < se.addresses.size(); ++i) {
    const std::string& a = se.addresses[i];
    if (!IsValidIpOrCidr(a)) {
      msgs.Error(IndexPath(spec.Path("addresses"), i),
                 "\"" + a + "\" is not an IP address or a CIDR (\"10.0.0.0/8\")");
    }
    cidr = cidr || a.find('/') != std::string::npos;
  }
  if (cidr && known_resolution && res != "NONE" && res != "STATIC") {
    msgs.Error(spec.Path("addresses"),
               "CIDR addresses are allowed only with resolution NONE or STATIC");
  }

  DecodePorts(spec, &se);
  std::set<std::string> port_names;
  for (const auto& p : se.ports) {
    port_names.insert(p.name);
  }

  if (const auto* ws = spec.Get("workloadSelector")) {
    Reader wr(*ws, spec.Path("workloadSelector"), msgs);
    se.workload_selector = wr.StringMap("labels");
    const std::string at = wr.Path("labels");
    for (const auto& [k, v] : *se.workload_selector) {
      if (k.empty()) {
        msgs.Error(at, "an empty label key is not supported in a selector");
      } else if (k.find('*') != std::string::npos || v.find('*') != std::string::npos) {
        msgs.Error(at + "." + k, "wildcards are not supported in a selector");
      }
    }
    CheckLabels(*se.workload_selector, at, msgs);
    if (se.workload_selector->empty()) {
      msgs.Warn(at, "a workloadSelector without labels selects every workload of the namespace");
    }
  }
  size_t endpoints = 0;
  ForEachItem(spec, "endpoints", [&](const nlohmann::json& j, const std::string& path) {
    ++endpoints;
    Reader r(j, path, msgs);
    if (!r.ok()) {
      msgs.Error(path, "an endpoint must be a map, not null");
      return;
    }
    WorkloadEntry e = DecodeEndpoint(r, port_names);
    const std::string at = r.Path("address");
    const bool unix_socket = StartsWith(e.address, "unix://");
    if (res == "STATIC" || res == "NONE") {
      if (e.address.empty()) {
        if (e.network.empty()) {
          msgs.Error(at, "required");
        } else {
          msgs.Warn(at, "is unset with network \"" + e.network + "\"");
        }
      } else if (unix_socket) {
        std::string_view file = std::string_view(e.address).substr(7);
        if (file.empty()) {
          msgs.Error(at, "a unix:// address must name a socket");
        } else if (file[0] != '@' && (file[0] != '/' || file.back() == '/')) {
          msgs.Error(at, "\"" + e.address + "\" is not an absolute path to a file");
        }
        if (!e.ports.empty()) {
          msgs.Error(r.Path("ports"), "a unix:// endpoint cannot have ports");
        }
        if (se.ports.size() != 1) {
          msgs.Error(at, "a unix:// endpoint needs exactly one port in spec.ports (there are " +
                             std::to_string(se.ports.size()) + ")");
        }
      } else if (!IsValidIp(e.address)) {
        msgs.Error(at, "\"" + e.address +
                           "\" is not an IP address (resolution STATIC takes IP and unix:// "
                           "endpoints; a DNS name needs resolution DNS)");
      }
    } else if (dns) {
      if (!IsValidIp(e.address) && (e.address.empty() || !ValidateFqdn(e.address).empty())) {
        msgs.Error(at, "\"" + e.address + "\" is not an IP address or a valid DNS name");
      }
    }
    se.endpoints.push_back(std::move(e));
  });
  if (se.workload_selector && endpoints > 0) {
    msgs.Error(spec.Path("endpoints"), "only one of workloadSelector and endpoints may be set");
  }
  if (res == "NONE" && endpoints > 0) {
    msgs.Error(spec.Path("endpoints"), "no endpoints may be given with resolution NONE");
  }
  if (res == "NONE" && se.workload_selector) {
    msgs.Warn(spec.Path("workloadSelector"), "should not be set with resolution NONE");
  }
  if (res == "DNS_ROUND_ROBIN" && endpoints > 1) {
    msgs.Error(spec.Path("endpoints"),
               "resolution DNS_ROUND_ROBIN takes at most one endpoint (got " +
                   std::to_string(endpoints) + ")");
  }
  if (dns && endpoints == 0) {
    // The hosts themselves are resolved: they must be DNS names, not wildcards.
    for (size_t i = 0; i < se.hosts.size(); ++i) {
      if (auto err = ValidateFqdn(se.hosts[i]); !err.empty()) {
        msgs.Error(IndexPath(spec.Path("hosts"), i),
                   "must be a DNS name when resolution " + res +
                       " has no endpoints (the host itself is resolved): " + err);
        break;
      }
    }
  }
  if (dns && !se.addresses.empty() && se.hosts.size() > 1) {
    for (const auto& p : se.ports) {
      if (p.protocol == "TCP" || p.protocol == "HTTPS" || p.protocol == "TLS" ||
          p.protocol == "MONGO" || p.protocol == "REDIS" || p.protocol == "MYSQL") {
        msgs.Warn(spec.Path("hosts"),
                  "more than one host with addresses and a TCP port (" + p.name +
                      "): connections to an address cannot be told apart by host");
        break;
      }
    }
  }
  if (known_resolution && res != "NONE" && se.hosts.size() > 1) {
    // Connections of one address and port can only be told apart by Host or SNI.
    for (const auto& p : se.ports) {
      if ((p.protocol.empty() || IsIstioPortProtocol(p.protocol)) &&
          !IsIstioHttpProtocol(p.protocol) && p.protocol != "HTTPS" && p.protocol != "TLS") {
        msgs.Error(spec.Path("hosts"),
                   "more than one host with a non-HTTP, non-TLS port (" + p.name + ": " +
                       (p.protocol.empty() ? std::string("protocol unset") : p.protocol) +
                       ") needs resolution NONE: connections to it cannot be told apart by "
                       "host");
        break;
      }
    }
  }
  if (res == "DYNAMIC_DNS") {
    // Each request's own host is resolved (Envoy's dynamic forward proxy): the hosts are
    // patterns, the address comes from the request.
    for (size_t i = 0; i < se.hosts.size(); ++i) {
      if (!StartsWith(se.hosts[i], "*")) {
        msgs.Error(IndexPath(spec.Path("hosts"), i),
                   "host must be wildcarded for resolution mode DYNAMIC_DNS");
      }
    }
    if (!se.addresses.empty()) {
      msgs.Error(spec.Path("addresses"),
                 "addresses cannot be set for resolution type DYNAMIC_DNS (route domains come "
                 "from the hosts)");
    }
    if (endpoints > 0) {
      msgs.Error(spec.Path("endpoints"),
                 "endpoints cannot be set for resolution type DYNAMIC_DNS (the destination "
                 "address comes from the request's host)");
    }
    for (size_t i = 0; i < se.ports.size(); ++i) {
      const std::string& pr = se.ports[i].protocol;
      if (pr != "HTTP" && pr != "TLS" && pr != "GRPC" && pr != "HTTP2") {
        msgs.Error(IndexPath(spec.Path("ports"), i) + ".protocol",
                   "only HTTP, TLS, GRPC and HTTP2 are supported for resolution type "
                   "DYNAMIC_DNS" +
                       std::string(pr.empty() ? " (protocol unset)" : " (got " + pr + ")"));
      }
    }
  }
  se.export_to = spec.StringList("exportTo");
  CheckExportTo(se.export_to, spec.Path("exportTo"), msgs);
  if (se.export_to.size() > 1 &&
      std::find(se.export_to.begin(), se.export_to.end(), "~") != se.export_to.end()) {
    msgs.Error(spec.Path("exportTo"), "\"~\" (no one) cannot be combined with other entries");
  }
  se.subject_alt_names = spec.StringList("subjectAltNames");
  return se;
}

}  // namespace skiff::api

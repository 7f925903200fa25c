// VirtualService as a whole: hosts, gateways, exportTo, delegation, tcp and tls routes, and
// the warnings for rules an earlier one already takes.
#include <algorithm>
#include <set>

#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

namespace skiff::api {

namespace {

// Istio's host.Name.Matches: do two hosts (wildcards allowed) overlap?
bool HostsOverlap(std::string_view a, std::string_view b) {
  bool aw = StartsWith(a, "*");
  bool bw = StartsWith(b, "*");
  if (aw && bw) {
    return a.size() < b.size() ? EndsWith(b.substr(1), a.substr(1))
                               : EndsWith(a.substr(1), b.substr(1));
  }
  if (aw) {
    return EndsWith(b, a.substr(1));
  }
  if (bw) {
    return EndsWith(a, b.substr(1));
  }
  return a == b;
}

// Is `inner` a subset of `outer` (host.Name.SubsetOf)?
bool HostSubsetOf(std::string_view inner, std::string_view outer) {
  if (StartsWith(outer, "*")) {
    if (StartsWith(inner, "*")) {
      return EndsWith(inner.substr(1), outer.substr(1));
    }
    return EndsWith(inner, outer.substr(1));
  }
  return inner == outer;
}

// Istio's SNI-style host "outbound_.15010_._.istiod.istio-system.svc.cluster.local".
bool IsSniClusterHost(std::string_view host) {
  auto parts = Split(host, '.', false);
  if (parts.size() < 4 || parts[0] != "outbound_" || parts[1].size() < 2 ||
      parts[1].back() != '_' ||
      parts[1].substr(0, parts[1].size() - 1).find_first_not_of("0123456789") !=
          std::string::npos) {
    return false;
  }
  std::string rest(host.substr(parts[0].size() + parts[1].size() + parts[2].size() + 3));
  return ValidateWildcardDomain(rest).empty();
}

// Warnings for rules and matches an earlier one already takes, as Istio's analysis.
void AnalyzeUnreachable(const std::vector<HTTPRoute>& http, const std::string& path,
                        Messages& msgs) {
  // A match that takes whatever a later match with a uri it covers would take: only a
  // uri condition (exact, or prefix).
  struct Earlier {
    size_t rule;
    const HTTPMatchRequest* match;
  };
  std::vector<Earlier> earlier;
  auto uri_only = [](const HTTPMatchRequest& m) {
    return m.uri && m.uri->type != StringMatch::Type::kRegex && !m.ignore_uri_case && !m.scheme &&
           !m.method && !m.authority && m.headers.empty() && m.without_headers.empty() &&
           m.query_params.empty() && m.port == 0 && m.source_labels.empty() &&
           m.source_namespace.empty() && m.gateways.empty();
  };
  auto covers = [](const HTTPMatchRequest& a, const HTTPMatchRequest& b) {
    if (!b.uri || b.uri->type == StringMatch::Type::kRegex || b.ignore_uri_case) {
      return false;
    }
    // Same kind only (as Istio's analysis): an earlier prefix shadows a later, longer prefix.
    if (a.uri->type != b.uri->type) {
      return false;
    }
    return a.uri->type == StringMatch::Type::kExact ? b.uri->value == a.uri->value
                                                    : StartsWith(b.uri->value, a.uri->value);
  };
  std::optional<size_t> catch_all;
  for (size_t i = 0; i < http.size(); ++i) {
    std::string rule = IndexPath(path, i);
    if (catch_all) {
      msgs.Warn(rule, "never used: " + IndexPath(path, *catch_all) +
                          " has no match and takes every request");
      continue;
    }
    if (http[i].match.empty()) {
      catch_all = i;
      continue;
    }
    size_t shadowed = 0;
    for (size_t j = 0; j < http[i].match.size(); ++j) {
      const auto& m = http[i].match[j];
      for (const auto& e : earlier) {
        HTTPMatchRequest a = *e.match;
        HTTPMatchRequest b = m;
        a.name.clear();
        b.name.clear();
        if (a == b || (uri_only(*e.match) && covers(*e.match, m))) {
          msgs.Warn(IndexPath(rule + ".match", j),
                    "never used: " + IndexPath(path, e.rule) +
                        " has an earlier match that takes the same requests");
          ++shadowed;
          break;
        }
      }
      earlier.push_back({i, &m});
    }
    if (shadowed == http[i].match.size()) {
      msgs.Warn(rule, "never used: earlier rules take all its matches");
    }
  }
}

// TCP and TLS routes' destinations, validated as Istio does.
void CheckL4Destinations(Reader& r, const std::string& path, Messages& msgs,
                         std::vector<RouteDestination>* out = nullptr) {
  size_t count = 0;
  int64_t total = 0;
  ForEachItem(r, "route", [&](const nlohmann::json& item, const std::string& p) {
    ++count;
    Reader dr(item, p, msgs);
    RouteDestination rd;
    const auto* dest = dr.Get("destination");
    if (dest == nullptr) {
      msgs.Error(dr.Path("destination"), "required");
    } else {
      rd.destination = DecodeDestination(*dest, dr.Path("destination"), msgs);
    }
    if (auto w = dr.Int("weight")) {
      rd.weight_set = true;
      rd.weight = *w;
      if (*w < 0) {
        msgs.Error(dr.Path("weight"), "weight must not be negative");
      } else if (*w > kMaxWeight) {
        msgs.Error(dr.Path("weight"), "weight must be at most 2147483647");
      } else {
        total += *w;
      }
    }
    if (out != nullptr) {
      out->push_back(std::move(rd));
    }
  });
  if (count == 0) {
    msgs.Error(r.Path("route"), "at least one route is required");
  } else if (count > 1 && total == 0) {
    msgs.Error(r.Path("route"),
               "with more than one destination, weights are required (they sum to 0)");
  }
  (void)path;
}

// The attributes tls: and tcp: matches share; `tcp` (null for tls:) also gets the source
// conditions a TCP route is narrowed by.
void CheckL4Match(Reader& m, Messages& msgs, uint32_t* port_out,
                  std::vector<std::string>* gateways_out, L4MatchAttributes* tcp = nullptr) {
  auto port = m.Int("port");
  if (port && (*port < 1 || *port > 65535)) {
    msgs.Error(m.Path("port"), "must be a port number between 1 and 65535");
  } else if (port) {
    *port_out = static_cast<uint32_t>(*port);
  }
  *gateways_out = m.StringList("gateways");
  const auto subnets = m.StringList("destinationSubnets");
  for (const auto& subnet : subnets) {
    if (!IsValidIpOrCidr(subnet)) {
      msgs.Error(m.Path("destinationSubnets"), "\"" + subnet + "\" is not an IP or CIDR");
    }
  }
  Labels source_labels = m.StringMap("sourceLabels");
  CheckLabels(source_labels, m.Path("sourceLabels"), msgs);
  CheckGatewayNames(*gateways_out, m.Path("gateways"), msgs);
  std::string source_namespace = m.String("sourceNamespace");
  m.Ignore("sourceSubnet");
  if (tcp == nullptr) {
    return;
  }
  if (!subnets.empty()) {
    tcp->destination_subnets = true;
    msgs.Warn(m.Path("destinationSubnets"),
              "destination subnets are not matched by skiff; this match is never used");
  }
  tcp->source_labels = std::move(source_labels);
  tcp->source_namespace = std::move(source_namespace);
}

TCPRoute CheckTcpRoute(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  TCPRoute route;
  Reader r(j, path, msgs);
  ForEachItem(r, "match", [&](const nlohmann::json& item, const std::string& p) {
    Reader m(item, p, msgs);
    L4MatchAttributes attrs;
    CheckL4Match(m, msgs, &attrs.port, &attrs.gateways, &attrs);
    route.match.push_back(std::move(attrs));
  });
  CheckL4Destinations(r, path, msgs, &route.route);
  return route;
}

TLSRoute CheckTlsRoute(const nlohmann::json& j, const std::string& path, Messages& msgs,
                       const std::vector<std::string>& vs_hosts) {
  TLSRoute route;
  Reader r(j, path, msgs);
  size_t matches = 0;
  ForEachItem(r, "match", [&](const nlohmann::json& item, const std::string& p) {
    ++matches;
    Reader m(item, p, msgs);
    auto sni = m.StringList("sniHosts");
    TLSMatchAttributes attrs;
    attrs.sni_hosts = sni;
    if (sni.empty()) {
      msgs.Error(m.Path("sniHosts"), "at least one SNI host is required");
    }
    for (size_t i = 0; i < sni.size(); ++i) {
      std::string at = IndexPath(m.Path("sniHosts"), i);
      if (IsSniClusterHost(sni[i])) {
        continue;
      }
      if (auto err = ValidateWildcardDomain(sni[i]); !err.empty()) {
        if (IsValidIp(sni[i])) {
          msgs.Warn(at,
                    "an IP address as SNI host goes against the SNI spec; most clients "
                    "do not send it");
        } else {
          msgs.Error(at, err);
        }
        continue;
      }
      bool subset = std::any_of(vs_hosts.begin(), vs_hosts.end(),
                                [&](const std::string& h) { return HostSubsetOf(sni[i], h); });
      if (!subset) {
        msgs.Error(
            at, "SNI host \"" + sni[i] + "\" is not a subset of any of the VirtualService's hosts");
      }
    }
    CheckL4Match(m, msgs, &attrs.port, &attrs.gateways);
    route.match.push_back(std::move(attrs));
  });
  if (matches == 0) {
    msgs.Error(r.Path("match"), "a TLS route needs at least one match");
  }
  CheckL4Destinations(r, path, msgs, &route.route);
  return route;
}

}  // namespace

VirtualService DecodeVirtualService(Reader& spec) {
  VirtualService vs;
  Messages& msgs = spec.msgs();
  vs.hosts = spec.StringList("hosts");
  vs.gateways = spec.StringList("gateways");
  vs.export_to = spec.StringList("exportTo");
  CheckExportTo(vs.export_to, spec.Path("exportTo"), msgs);
  const bool delegate = vs.hosts.empty();
  CheckGatewayNames(vs.gateways, spec.Path("gateways"), msgs);
  bool mesh = vs.gateways.empty();
  bool to_gateway = false;
  for (const auto& g : vs.gateways) {
    (g == "mesh" ? mesh : to_gateway) = true;
  }
  const auto* tcp = spec.Get("tcp");
  const auto* tls = spec.Get("tls");
  if (tcp != nullptr && tcp->is_array()) {
    vs.tcp_routes = tcp->size();
  }
  if (tls != nullptr && tls->is_array()) {
    vs.tls_routes = tls->size();
  }
  if (delegate) {
    if (!vs.gateways.empty()) {
      msgs.Error(spec.Path("gateways"),
                 "a delegate VirtualService (one without hosts) cannot have gateways: the root "
                 "VirtualService that delegates to it decides where it applies");
    }
    if (vs.tcp_routes > 0) {
      msgs.Error(spec.Path("tcp"),
                 "a delegate VirtualService (one without hosts) cannot have "
                 "tcp routes");
    }
    if (vs.tls_routes > 0) {
      msgs.Error(spec.Path("tls"),
                 "a delegate VirtualService (one without hosts) cannot have "
                 "tls routes");
    }
  }
  // SNI-style hosts are for gateway TLS routes.
  bool sni_hosts = to_gateway && vs.tls_routes > 0;
  bool hosts_valid = true;
  for (size_t i = 0; i < vs.hosts.size(); ++i) {
    const auto& h = vs.hosts[i];
    if (sni_hosts && IsSniClusterHost(h)) {
      continue;
    }
    if (auto err = ValidateWildcardDomain(h); !err.empty()) {
      if (!IsValidIp(h)) {
        msgs.Error(IndexPath(spec.Path("hosts"), i), err);
        hosts_valid = false;
      }
    } else if (h == "*" && mesh) {
      msgs.Error(IndexPath(spec.Path("hosts"), i),
                 "wildcard host \"*\" is not allowed for VirtualServices bound to the mesh");
      hosts_valid = false;
    }
  }
  if (hosts_valid) {
    for (size_t i = 0; i < vs.hosts.size(); ++i) {
      for (size_t k = i + 1; k < vs.hosts.size(); ++k) {
        if (HostsOverlap(vs.hosts[i], vs.hosts[k])) {
          msgs.Error(IndexPath(spec.Path("hosts"), k), "duplicate hosts \"" + vs.hosts[i] +
                                                           "\" and \"" + vs.hosts[k] +
                                                           "\" (one includes the other)");
        }
      }
    }
  }
  RouteContext ctx;
  ctx.in_delegate = delegate;
  ForEachItem(spec, "http", [&](const nlohmann::json& j, const std::string& path) {
    vs.http.push_back(DecodeHttpRoute(j, path, msgs, &ctx));
  });
  if (ctx.facts.jwt_claims && !to_gateway) {
    msgs.Error(spec.Path("http"),
               "JWT claim based routing (@request.auth.claims.*) is only "
               "supported for gateways, and this VirtualService has none");
  } else if (ctx.facts.jwt_claims) {
    msgs.Warn(spec.Path("http"),
              "JWT claim based routing is not supported by skiff yet; "
              "these conditions never match");
  }
  if (vs.http.empty() && vs.tcp_routes == 0 && vs.tls_routes == 0) {
    msgs.Error(spec.path().empty() ? "spec" : spec.path(),
               "at least one of http, tcp or tls routes is required");
  }
  ForEachItem(spec, "tcp", [&](const nlohmann::json& j, const std::string& path) {
    vs.tcp.push_back(CheckTcpRoute(j, path, msgs));
  });
  ForEachItem(spec, "tls", [&](const nlohmann::json& j, const std::string& path) {
    vs.tls.push_back(CheckTlsRoute(j, path, msgs, vs.hosts));
  });
  // A tls route applies to sidecars when its match names "mesh", or names no gateways and
  // the VirtualService's own list has "mesh" (or is empty).
  bool tls_for_mesh = false;
  for (const auto& route : vs.tls) {
    tls_for_mesh = tls_for_mesh || (route.match.empty() && mesh);
    for (const auto& m : route.match) {
      tls_for_mesh =
          tls_for_mesh || (m.gateways.empty() ? mesh
                                              : std::find(m.gateways.begin(), m.gateways.end(),
                                                          "mesh") != m.gateways.end());
    }
  }
  if (tls_for_mesh) {
    msgs.Warn(spec.Path("tls"),
              "TLS routes are served at gateways (PASSTHROUGH servers); for the mesh they "
              "are not served by skiff yet: a sidecar passes such connections through to the "
              "address the client connected to");
  }
  AnalyzeUnreachable(vs.http, spec.Path("http"), msgs);
  return vs;
}

}  // namespace skiff::api

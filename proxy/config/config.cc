#include "proxy/config/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "proxy/config/dns.h"
#include "proxy/telemetry/metrics.h"

namespace skiff::proxy {

namespace {
std::map<std::string, std::string>& AddressMap() {
  static auto* map = new std::map<std::string, std::string>();
  return *map;
}
std::string& ListenerAddress() {
  static auto* address = new std::string();
  return *address;
}

bool ValidAddress(const std::string& a) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, a.c_str(), buf) == 1 || ::inet_pton(AF_INET6, a.c_str(), buf) == 1;
}
// A host name to resolve: dot-separated labels of letters, digits and '-' (not at either
// end), at most 63 each and 255 in all, an optional final dot; the last label not numeric.
bool ValidDnsName(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  if (name.empty() || name.size() > 254) {  // (as the operator's check: 255 with the dot)
    return false;
  }
  std::string_view last;
  while (!name.empty()) {
    size_t dot = name.find('.');
    std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return false;
      }
    }
    last = label;
    name = dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
  }
  return !std::all_of(last.begin(), last.end(),
                      [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}
// A TcpRoute or SniRoute message's destinations; false (with *error) when one names a
// cluster that does not exist and references are strict.
template <typename Route>
bool TcpDestinationOf(const Config& cfg, const Route& r, const std::string& at, bool strict,
                      TcpDestination* out, std::string* error) {
  out->cluster = cfg.FindCluster(r.cluster());
  if (out->cluster == nullptr && strict) {
    *error = at + ".cluster: cluster \"" + r.cluster() + "\" does not exist";
    return false;
  }
  for (int wi = 0; wi < r.clusters_size(); ++wi) {
    const auto& wc = r.clusters(wi);
    const upstream::Cluster* c = cfg.FindCluster(wc.cluster());
    if (c == nullptr && strict) {
      *error = at + ".clusters[" + std::to_string(wi) + "].cluster: cluster \"" + wc.cluster() +
               "\" does not exist";
      return false;
    }
    if (c != nullptr && wc.weight() > 0) {
      out->weighted.emplace_back(c, wc.weight());
      out->total_weight += wc.weight();
    }
  }
  return true;
}

// The capture part of a listener: captured services and inbound ports.
std::string BuildCapture(const v1::Listener& l, const std::string& path,
                         const std::map<std::string, const router::RouteTable*>& tables,
                         const Config& cfg, bool strict, ListenerConfig* lc) {
  lc->capture = l.capture();
  lc->registry_only = l.registry_only();
  auto cluster = [&](const std::string& name, const std::string& at,
                     const upstream::Cluster** out) -> std::string {
    if (name.empty()) {
      return {};
    }
    *out = cfg.FindCluster(name);
    if (*out == nullptr && strict) {
      return at + ": cluster \"" + name + "\" does not exist";
    }
    return {};
  };
  for (int i = 0; i < l.services_size(); ++i) {
    const auto& s = l.services(i);
    std::string at = path + ".services[" + std::to_string(i) + "]";
    if (!ValidAddress(s.address())) {
      return at + ".address: \"" + s.address() + "\" is not an IP address";
    }
    if (s.port() == 0 || s.port() > 65535) {
      return at + ".port: must be 1-65535";
    }
    CapturedServiceConfig sc;
    sc.protocol = s.protocol();
    if (auto e = cluster(s.tcp_cluster(), at + ".tcp_cluster", &sc.tcp_cluster); !e.empty()) {
      return e;
    }
    if (s.has_tcp_route()) {
      TcpDestination d;
      std::string error;
      if (!TcpDestinationOf(cfg, s.tcp_route(), at + ".tcp_route", strict, &d, &error)) {
        return error;
      }
      if (d.cluster != nullptr || d.total_weight > 0) {
        sc.tcp_route = std::move(d);
      }
    }
    lc->services[s.address() + ":" + std::to_string(s.port())] = sc;
  }
  for (int i = 0; i < l.inbound_ports_size(); ++i) {
    const auto& p = l.inbound_ports(i);
    std::string at = path + ".inbound_ports[" + std::to_string(i) + "]";
    if (p.port() == 0 || p.port() > 65535) {
      return at + ".port: must be 1-65535";
    }
    InboundPortConfig ic;
    ic.protocol = p.protocol();
    if (!p.route_table().empty()) {
      auto t = tables.find(p.route_table());
      if (t == tables.end()) {
        if (strict) {
          return at + ".route_table: route table \"" + p.route_table() + "\" does not exist";
        }
      } else {
        ic.route_table = t->second;
      }
    }
    if (auto e = cluster(p.tcp_cluster(), at + ".tcp_cluster", &ic.tcp_cluster); !e.empty()) {
      return e;
    }
    lc->inbound_ports[p.port()] = ic;
  }
  for (uint32_t p : l.host_routed_ports()) {
    if (p == 0 || p > 65535) {
      return path + ".host_routed_ports: " + std::to_string(p) + " is not a port (1-65535)";
    }
    lc->host_routed_ports.push_back(p);
  }
  if (!l.fallback_route_table().empty()) {
    auto t = tables.find(l.fallback_route_table());
    if (t == tables.end()) {
      if (strict) {
        return path + ".fallback_route_table: route table \"" + l.fallback_route_table() +
               "\" does not exist";
      }
    } else {
      lc->fallback_route_table = t->second;
    }
  }
  return {};
}

}  // namespace

void SetAddressMap(std::map<std::string, std::string> map) { AddressMap() = std::move(map); }

namespace {
v1::Endpoint& SelfEndpointStorage() {
  static auto* ep = new v1::Endpoint();
  return *ep;
}
}  // namespace

void SetLocalIdentity(telemetry::SourceInfo self, std::string pod_name) {
  SelfEndpointStorage() = telemetry::SelfEndpoint(self, pod_name);
}

namespace {

// A Secret's PEM (inline, or read from the proxy's disk).
bool SecretPem(const v1::Secret& secret, std::string* chain, std::string* key, std::string* ca,
               std::string* error) {
  auto read = [&](const std::string& path, const std::string& inline_value, std::string* out,
                  const char* field) {
    if (path.empty()) {
      *out = inline_value;
      return true;
    }
    std::ifstream f(path);
    if (!f) {
      *error = "secrets[" + secret.name() + "]." + field + ": cannot read " + path;
      return false;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    *out = ss.str();
    return true;
  };
  return read(secret.certificate_chain_file(), secret.certificate_chain(), chain,
              "certificate_chain_file") &&
         read(secret.private_key_file(), secret.private_key(), key, "private_key_file") &&
         read(secret.ca_certificates_file(), secret.ca_certificates(), ca, "ca_certificates_file");
}

void Names(const google::protobuf::RepeatedPtrField<std::string>& names,
           std::vector<std::string>* exact, std::vector<std::string>* suffixes, bool* any) {
  for (const auto& raw : names) {
    std::string n;
    for (char c : raw) {
      n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (n == "*") {
      if (any != nullptr) {
        *any = true;
      }
    } else if (n.size() > 2 && n[0] == '*' && n[1] == '.') {
      suffixes->push_back(n.substr(1));
    } else {
      exact->push_back(n);
    }
  }
  std::stable_sort(suffixes->begin(), suffixes->end(),
                   [](const auto& a, const auto& b) { return a.size() > b.size(); });
  if (any != nullptr && names.empty()) {
    *any = true;
  }
}

int NameMatch(std::string_view sni, const std::vector<std::string>& exact,
              const std::vector<std::string>& suffixes) {
  for (const auto& e : exact) {
    if (e == sni) {
      return 1 << 20;  // exact beats any wildcard
    }
  }
  for (const auto& s : suffixes) {
    if (sni.size() > s.size() && sni.substr(sni.size() - s.size()) == s) {
      return static_cast<int>(s.size());
    }
  }
  return 0;
}

}  // namespace

const upstream::Cluster* TcpDestination::Pick(uint64_t random) const {
  if (total_weight == 0) {
    return cluster;
  }
  uint64_t pick = random % total_weight;
  for (const auto& [c, w] : weighted) {
    if (pick < w) {
      return c;
    }
    pick -= w;
  }
  return cluster;  // not reached: the weights sum to total_weight
}

const FilterChainConfig* ListenerConfig::ChainFor(std::string_view sni) const {
  if (filter_chains.empty()) {
    return nullptr;
  }
  if (!sni.empty() && ValidAddress(std::string(sni))) {
    sni = {};  // an IP address is not a server name (RFC 6066 3): as no SNI
  }
  const FilterChainConfig* best = nullptr;
  int best_score = 0;
  const FilterChainConfig* any = nullptr;
  for (const auto& c : filter_chains) {
    if (!sni.empty()) {
      int score = NameMatch(sni, c.exact, c.suffixes);
      if (score > best_score) {
        best = &c;
        best_score = score;
      }
    }
    if (c.any_name && any == nullptr) {
      any = &c;
    }
  }
  if (best != nullptr) {
    return best;
  }
  if (!sni.empty()) {
    // A name no server has: only a server for any name takes it (Envoy: no matching
    // filter chain, the connection is closed), not another host's certificate.
    return any;
  }
  return any != nullptr ? any : &filter_chains.front();  // no SNI: the first server
}

std::shared_ptr<const Config> Config::Build(v1::Snapshot snapshot,
                                            const std::map<uint32_t, uint32_t>& port_map,
                                            uint64_t version, std::string* error,
                                            bool strict_references, bool allow_dns_names) {
  // A redirect to a remapped port (Gateway httpsRedirect to 443 with --port-map
  // 443=18443) names the port this proxy really listens on.
  if (!port_map.empty()) {
    for (auto& table : *snapshot.mutable_route_tables()) {
      for (auto& vh : *table.mutable_virtual_hosts()) {
        for (auto& route : *vh.mutable_routes()) {
          if (route.has_redirect() && route.redirect().port() != 0) {
            auto it = port_map.find(route.redirect().port());
            if (it != port_map.end()) {
              route.mutable_redirect()->set_port(it->second);
            }
          }
        }
      }
    }
  }
  auto cfg = std::shared_ptr<Config>(new Config());
  cfg->snapshot_ = std::move(snapshot);
  cfg->version_ = version;
  const v1::Snapshot& snap = cfg->snapshot_;

  // Secrets, by name.
  std::unordered_map<std::string, const v1::Secret*> secrets;
  for (int i = 0; i < snap.secrets_size(); ++i) {
    if (!secrets.emplace(snap.secrets(i).name(), &snap.secrets(i)).second) {
      *error = "secrets[" + snap.secrets(i).name() + "]: duplicate secret name";
      return nullptr;
    }
  }
  // The PEM of a named secret; false with `error` (strict) or `skip` (xDS: not arrived).
  auto pem = [&](const std::string& name, const std::string& at, std::string* chain,
                 std::string* key, std::string* ca, bool* skip) {
    auto it = secrets.find(name);
    if (it == secrets.end()) {
      if (!strict_references) {
        *skip = true;
        return false;
      }
      *error = at + ": secret \"" + name + "\" does not exist";
      return false;
    }
    return SecretPem(*it->second, chain, key, ca, error);
  };

  // Clusters and their endpoints.
  for (int i = 0; i < snap.clusters_size(); ++i) {
    const auto& c = snap.clusters(i);
    if (c.name().empty()) {
      *error = "clusters[" + std::to_string(i) + "].name: required";
      return nullptr;
    }
    auto cluster = std::make_unique<upstream::Cluster>();
    cluster->proto = &c;
    cluster->name = c.name();
    cluster->policy = c.load_balancer().policy();
    cluster->state = upstream::ClusterStateRegistry::Default().Get(c.name());
    // An inbound cluster's destination is this proxy's own workload.
    cluster->telemetry_labels =
        telemetry::DestinationLabels(&c, c.inbound() ? &SelfEndpointStorage() : nullptr);
    cluster->span_name =
        (c.service().empty() ? c.name() : c.service() + ":" + std::to_string(c.port())) + "/*";
    cluster->outlier_detection =
        c.has_outlier_detection() && (c.outlier_detection().consecutive_5xx_errors() > 0 ||
                                      c.outlier_detection().consecutive_gateway_errors() > 0);
    cluster->inbound = c.inbound();
    if (c.has_tls()) {
      const auto& t = c.tls();
      net::TlsClientOptions o;
      o.sni = t.sni();
      o.insecure_skip_verify = t.insecure_skip_verify();
      o.subject_alt_names.assign(t.subject_alt_names().begin(), t.subject_alt_names().end());
      std::string at = "clusters[" + c.name() + "].tls";
      bool skip = false;
      std::string unused;
      if (!t.certificate().empty() &&
          !pem(t.certificate(), at + ".certificate", &o.certificate_chain, &o.private_key, &unused,
               &skip) &&
          !skip) {
        return nullptr;
      }
      if (!t.ca_certificate().empty() &&
          !pem(t.ca_certificate(), at + ".ca_certificate", &unused, &unused, &o.ca_certificates,
               &skip) &&
          !skip) {
        return nullptr;
      }
      std::string why;
      if (c.protocol() == v1::Cluster::HTTP2) {
        o.alpn = {"h2"};
      }
      cluster->tls = net::TlsContext::Client(o, &why);
      if (cluster->tls == nullptr) {
        *error = at + ": " + why;
        return nullptr;
      }
      if (c.protocol() == v1::Cluster::USE_DOWNSTREAM) {
        o.alpn = {"h2"};
        cluster->tls_h2 = net::TlsContext::Client(o, &why);
        if (cluster->tls_h2 == nullptr) {
          *error = at + ": " + why;
          return nullptr;
        }
      }
    }
    cluster->original_destination = c.original_destination();
    if (!v1::Cluster::Protocol_IsValid(c.protocol())) {
      *error = "clusters[" + c.name() + "].protocol: unknown protocol " +
               std::to_string(static_cast<int>(c.protocol()));
      return nullptr;
    }
    cluster->protocol = c.protocol();
    if (!c.source_address().empty()) {
      if (!ValidAddress(c.source_address())) {
        *error = "clusters[" + c.name() + "].source_address: \"" + c.source_address() +
                 "\" is not an IP address";
        return nullptr;
      }
      cluster->source_address = c.source_address();
    }
    const auto& pool = c.connection_pool();
    cluster->max_connections = pool.max_connections();
    cluster->max_pending_requests = pool.max_pending_requests();
    cluster->max_requests = pool.max_requests();
    cluster->max_retries = pool.max_retries();
    cluster->max_requests_per_connection = pool.max_requests_per_connection();
    cluster->max_concurrent_streams = pool.max_concurrent_streams();
    if (!cfg->clusters_.emplace(c.name(), std::move(cluster)).second) {
      *error = "clusters[" + std::to_string(i) + "]: duplicate cluster \"" + c.name() + "\"";
      return nullptr;
    }
  }
  std::set<std::string> dns_names;  // endpoint addresses that are DNS names
  for (int i = 0; i < snap.endpoints_size(); ++i) {
    const auto& cla = snap.endpoints(i);
    auto it = cfg->clusters_.find(cla.cluster_name());
    std::string path = "endpoints[" + cla.cluster_name() + "]";
    if (it == cfg->clusters_.end()) {
      if (!strict_references) {
        continue;
      }
      *error = path + ": cluster \"" + cla.cluster_name() + "\" does not exist";
      return nullptr;
    }
    for (int j = 0; j < cla.endpoints_size(); ++j) {
      const auto& ep = cla.endpoints(j);
      const bool dns_name = !ValidAddress(ep.address());
      if (dns_name && (!allow_dns_names || !ValidDnsName(ep.address()))) {
        *error =
            path + ".endpoints[" + std::to_string(j) + "].address: \"" + ep.address() +
            (allow_dns_names ? "\" is not an IP address or a DNS name" : "\" is not an IP address");
        return nullptr;
      }
      if (ep.port() == 0 || ep.port() > 65535) {
        *error = path + ".endpoints[" + std::to_string(j) + "].port: must be 1-65535";
        return nullptr;
      }
      if (!ep.healthy()) {
        continue;
      }
      // A DNS name: an endpoint per address it resolves to (none until it has resolved).
      std::vector<std::string> addresses;
      if (dns_name) {
        dns_names.insert(ep.address());
        if (auto ips = DnsCache::Default().Lookup(ep.address())) {
          addresses = std::move(*ips);
        }
      } else {
        addresses.push_back(ep.address());
      }
      for (auto& address : addresses) {
        upstream::Endpoint e;
        e.address = std::move(address);
        if (auto m = AddressMap().find(e.address); m != AddressMap().end()) {
          e.address = m->second;
        }
        e.port = static_cast<uint16_t>(ep.port());
        e.key = e.address + ":" + std::to_string(ep.port());
        e.source_address = it->second->source_address;
        if (!e.source_address.empty()) {
          e.key += "@" + e.source_address;
        }
        if (it->second->tls != nullptr) {
          // A TLS connection is verified (and authenticated) as its cluster says: it is not
          // shared with a plain connection, nor with another cluster's, to the same address.
          e.key += "|tls:" + it->second->name;
        }
        e.proto = &ep;
        e.health =
            upstream::ClusterStateRegistry::Default().GetEndpoint(it->second->state.get(), e.key);
        e.telemetry_labels = telemetry::DestinationLabels(it->second->proto, &ep);
        it->second->endpoints.push_back(std::move(e));
      }
    }
  }
  cfg->dns_names_ = std::move(dns_names);
  for (auto& [name, cluster] : cfg->clusters_) {
    if (cluster->policy == v1::LoadBalancer::CONSISTENT_HASH) {
      cluster->BuildRing();
    }
  }

  // Route tables.
  std::map<std::string, const router::RouteTable*> tables;
  for (const auto& rt : snap.route_tables()) {
    auto table = std::make_unique<router::RouteTable>();
    if (!table->Init(rt, error)) {
      return nullptr;
    }
    if (!tables.emplace(rt.name(), table.get()).second) {
      *error = "route_tables[" + rt.name() + "]: duplicate route table name";
      return nullptr;
    }
    // Every cluster a route names must exist.
    for (int v = 0; strict_references && v < rt.virtual_hosts_size(); ++v) {
      for (int r = 0; r < rt.virtual_hosts(v).routes_size(); ++r) {
        const auto& route = rt.virtual_hosts(v).routes(r);
        std::string path = "route_tables[" + rt.name() + "].virtual_hosts[" + std::to_string(v) +
                           "].routes[" + std::to_string(r) + "]";
        for (const auto& wc : route.route().clusters()) {
          if (cfg->clusters_.count(wc.cluster()) == 0) {
            *error = path + ".route.clusters: cluster \"" + wc.cluster() + "\" does not exist";
            return nullptr;
          }
        }
        for (const auto& m : route.route().mirrors()) {
          if (cfg->clusters_.count(m.cluster()) == 0) {
            *error = path + ".route.mirrors: cluster \"" + m.cluster() + "\" does not exist";
            return nullptr;
          }
        }
      }
    }
    cfg->tables_.push_back(std::move(table));
  }

  // Listeners.
  std::set<std::pair<std::string, uint32_t>> binds;
  for (int i = 0; i < snap.listeners_size(); ++i) {
    const auto& l = snap.listeners(i);
    std::string path = "listeners[" + (l.name().empty() ? std::to_string(i) : l.name()) + "]";
    if (l.port() == 0 || l.port() > 65535) {
      *error = path + ".port: must be 1-65535";
      return nullptr;
    }
    ListenerConfig lc;
    lc.name = l.name();
    lc.address = !ListenerAddress().empty() ? ListenerAddress()
                 : l.address().empty()      ? "0.0.0.0"
                                            : l.address();
    if (!ValidAddress(lc.address)) {
      *error = path + ".address: \"" + lc.address + "\" is not an IP address";
      return nullptr;
    }
    lc.port = l.port();
    auto mapped = port_map.find(l.port());
    lc.bind_port = mapped == port_map.end() ? l.port() : mapped->second;
    auto t = tables.find(l.route_table());
    if (t != tables.end()) {
      lc.route_table = t->second;
    } else if (!(l.route_table().empty() && (l.capture() == v1::CAPTURE_INBOUND ||
                                             l.filter_chains_size() > 0 || l.has_tcp_route()))) {
      // (An inbound capture listener routes by its ports' tables and needs none itself.)
      if (!strict_references) {
        continue;  // not served until its route table arrives (Envoy: a warming listener)
      }
      *error = path + ".route_table: route table \"" + l.route_table() + "\" does not exist";
      return nullptr;
    }
    if (auto err = BuildCapture(l, path, tables, *cfg, strict_references, &lc); !err.empty()) {
      *error = err;
      return nullptr;
    }
    for (int fi = 0; fi < l.filter_chains_size(); ++fi) {
      const auto& fc = l.filter_chains(fi);
      std::string at =
          path + ".filter_chains[" + (fc.name().empty() ? std::to_string(fi) : fc.name()) + "]";
      FilterChainConfig chain;
      chain.name = fc.name();
      Names(fc.server_names(), &chain.exact, &chain.suffixes, &chain.any_name);
      if (fc.has_tls()) {
        const auto& tls = fc.tls();
        net::TlsServerOptions o;
        bool skip = false;
        std::string unused;
        if (!pem(tls.certificate(), at + ".tls.certificate", &o.certificate_chain, &o.private_key,
                 &unused, &skip)) {
          if (skip) {
            continue;  // its secret has not arrived: this server is not served yet
          }
          return nullptr;
        }
        if (tls.mode() != v1::TlsServerContext::SIMPLE) {
          if (tls.ca_certificate().empty()) {
            *error = at + ".tls.ca_certificate: required for MUTUAL and OPTIONAL_MUTUAL";
            return nullptr;
          }
          if (!pem(tls.ca_certificate(), at + ".tls.ca_certificate", &unused, &unused,
                   &o.ca_certificates, &skip)) {
            if (skip) {
              continue;
            }
            return nullptr;
          }
          o.client_cert = tls.mode() == v1::TlsServerContext::MUTUAL
                              ? net::TlsServerOptions::ClientCert::kRequire
                              : net::TlsServerOptions::ClientCert::kOptional;
        }
        if (!tls.min_protocol_version().empty()) {
          o.min_version = tls.min_protocol_version();
        }
        o.max_version = tls.max_protocol_version();
        o.cipher_suites.assign(tls.cipher_suites().begin(), tls.cipher_suites().end());
        o.ecdh_curves.assign(tls.ecdh_curves().begin(), tls.ecdh_curves().end());
        if (tls.alpn_protocols_size() > 0) {
          o.alpn.assign(tls.alpn_protocols().begin(), tls.alpn_protocols().end());
        }
        o.subject_alt_names.assign(tls.subject_alt_names().begin(), tls.subject_alt_names().end());
        o.spki_sha256_base64.assign(tls.verify_certificate_spki().begin(),
                                    tls.verify_certificate_spki().end());
        o.cert_sha256_hex.assign(tls.verify_certificate_hash().begin(),
                                 tls.verify_certificate_hash().end());
        std::string why;
        chain.tls = net::TlsContext::Server(o, &why);
        if (chain.tls == nullptr) {
          *error = at + ".tls: " + why;
          return nullptr;
        }
        if (fc.has_tcp_route()) {
          TcpDestination d;
          if (!TcpDestinationOf(*cfg, fc.tcp_route(), at + ".tcp_route", strict_references, &d,
                                error)) {
            return nullptr;
          }
          if (d.cluster == nullptr && d.total_weight == 0) {
            continue;  // its clusters have not arrived: not served yet
          }
          chain.tcp_route = std::move(d);
          lc.filter_chains.push_back(std::move(chain));
          continue;
        }
        auto rt = tables.find(fc.route_table());
        if (rt == tables.end()) {
          if (!strict_references) {
            continue;
          }
          *error = at + ".route_table: route table \"" + fc.route_table() + "\" does not exist";
          return nullptr;
        }
        chain.route_table = rt->second;
      } else {
        for (int ri = 0; ri < fc.sni_routes_size(); ++ri) {
          const auto& r = fc.sni_routes(ri);
          FilterChainConfig::SniRoute route;
          Names(r.sni_hosts(), &route.exact, &route.suffixes, nullptr);
          if (!TcpDestinationOf(*cfg, r, at + ".sni_routes[" + std::to_string(ri) + "]",
                                strict_references, &route, error)) {
            return nullptr;
          }
          chain.sni_routes.push_back(std::move(route));
        }
      }
      lc.filter_chains.push_back(std::move(chain));
    }
    if (l.filter_chains_size() > 0 && lc.filter_chains.empty()) {
      continue;  // a TLS port none of whose servers can be served yet: not bound at all
    }
    if (l.has_tcp_route()) {
      TcpDestination d;
      if (!TcpDestinationOf(*cfg, l.tcp_route(), path + ".tcp_route", strict_references, &d,
                            error)) {
        return nullptr;
      }
      if (d.cluster == nullptr && d.total_weight == 0) {
        continue;  // its clusters have not arrived: not bound yet
      }
      lc.tcp_route = std::move(d);
    }
    switch (l.path_normalization()) {
      case v1::PATH_NORMALIZATION_NONE:
        lc.path_normalization = http::PathNormalization::kNone;
        break;
      case v1::PATH_NORMALIZATION_BASE:
        lc.path_normalization = http::PathNormalization::kBase;
        break;
      case v1::PATH_NORMALIZATION_MERGE_SLASHES:
        lc.path_normalization = http::PathNormalization::kMergeSlashes;
        break;
      case v1::PATH_NORMALIZATION_DECODE_AND_MERGE_SLASHES:
        lc.path_normalization = http::PathNormalization::kDecodeAndMergeSlashes;
        break;
      default:
        break;
    }
    if (!binds.emplace(lc.address, lc.bind_port).second) {
      *error = path + ": another listener already uses " + lc.address + ":" +
               std::to_string(lc.bind_port);
      return nullptr;
    }
    cfg->listeners_.push_back(std::move(lc));
  }
  // The outlier state of endpoints this (valid) configuration no longer has is let go.
  for (auto& [name, cluster] : cfg->clusters_) {
    std::set<std::string> keys;
    for (const auto& e : cluster->endpoints) {
      keys.insert(e.key);
    }
    upstream::ClusterStateRegistry::Default().Retain(cluster->state.get(), keys);
  }
  return cfg;
}

void SetListenerAddress(std::string address) { ListenerAddress() = std::move(address); }

const upstream::Cluster* Config::FindCluster(const std::string& name) const {
  auto it = clusters_.find(name);
  return it == clusters_.end() ? nullptr : it->second.get();
}

}  // namespace skiff::proxy

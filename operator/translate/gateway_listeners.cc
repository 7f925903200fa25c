// The gateway role's listeners: one per port of the Gateway servers that select the proxy.
// A plain-text port has one route table with a virtual host per domain (VirtualService
// hosts ∩ server hosts). A TLS port (HTTPS / TLS servers) has a filter chain per server,
// chosen by SNI: a terminating one (SIMPLE, MUTUAL, OPTIONAL_MUTUAL) with its own route
// table (a TLS server's: its first tcp: route for the decrypted bytes), or a PASSTHROUGH
// one whose VirtualService tls: routes send each SNI host to a cluster unterminated. A TCP
// port (TCP, MONGO, MYSQL, REDIS servers) sends every connection to the destination of the
// first VirtualService tcp: route bound to it.
#include <algorithm>
#include <deque>
#include <map>

#include "operator/translate/builder.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

using api::Object;

namespace {

bool IsTlsServer(const api::Server& s) {
  return s.port && (s.port->protocol == "HTTPS" || s.port->protocol == "TLS");
}

bool IsTcpServer(const api::Server& s) { return s.port && IsTcpProtocol(s.port->protocol); }

// Where an httpsRedirect sends clients: the Gateway's first HTTPS server's port, else 443.
uint32_t HttpsPortOf(const Object& gw) {
  for (const auto& s : gw.As<api::Gateway>().servers) {
    if (s.port && s.port->protocol == "HTTPS") {
      return s.port->number;
    }
  }
  return 443;
}

}  // namespace

bool GatewayServerServed(const api::Server& s, std::string* why) {
  if (!s.port) {
    return false;
  }
  if (StartsWith(s.bind, "unix://")) {
    *why = "unix domain sockets are not served by skiff yet";
    return false;
  }
  const std::string& p = s.port->protocol;
  if (IsServedProtocol(p) || IsTcpProtocol(p)) {
    return true;
  }
  if (p != "HTTPS" && p != "TLS") {
    *why = p + " servers are not served by skiff yet";
    return false;
  }
  if (!s.tls) {
    return false;  // invalid (decoding said so)
  }
  const std::string& mode = s.tls->mode;
  if (mode == "ISTIO_MUTUAL" || mode == "AUTO_PASSTHROUGH") {
    *why = "tls.mode " + mode + " is not served by skiff (it needs the mesh's own certificates)";
    return false;
  }
  return mode == "PASSTHROUGH" || mode == "SIMPLE" || mode == "MUTUAL" || mode == "OPTIONAL_MUTUAL";
}

void Builder::BuildGateway() {
  // port -> bound servers, in gateway order.
  std::map<uint32_t, std::vector<Bound>> by_port;
  for (const Object* gw : index_.gateways) {
    const auto& spec = gw->As<api::Gateway>();
    if (!LabelsMatch(spec.selector, group_.labels)) {
      continue;
    }
    for (size_t si = 0; si < spec.servers.size(); ++si) {
      const auto& s = spec.servers[si];
      std::string why;
      if (!GatewayServerServed(s, &why)) {
        continue;
      }
      Bound b{gw, gw->meta.namespace_ + "/" + gw->meta.name, {}, s.https_redirect, &s, si};
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
  std::vector<const Bound*> bounds;
  for (const auto& [port, all] : by_port) {
    bool tls_port =
        std::any_of(all.begin(), all.end(), [](const Bound& b) { return IsTlsServer(*b.server); });
    if (!tls_port && IsTcpServer(*all.front().server)) {
      // A TCP port: its HTTP servers cannot be told apart from TCP clients, and are left
      // out (the first server of the port decides, as the Gateway's status says).
      bounds.clear();
      for (const auto& b : all) {
        if (IsTcpServer(*b.server)) {
          bounds.push_back(&b);
        }
      }
      auto* l = snapshot_->add_listeners();
      l->set_name("0.0.0.0_" + std::to_string(port));
      l->set_address("0.0.0.0");
      l->set_port(port);
      l->set_protocol("TCP");
      if (!SetTcpRoute(port, bounds, l->mutable_tcp_route())) {
        snapshot_->mutable_listeners()->RemoveLast();  // no route: nothing to serve
      }
      continue;
    }
    if (!tls_port) {
      std::string table_name = "http." + std::to_string(port);
      auto* l = snapshot_->add_listeners();
      l->set_name("0.0.0.0_" + std::to_string(port));
      l->set_address("0.0.0.0");
      l->set_port(port);
      l->set_protocol("HTTP");
      l->set_route_table(table_name);
      auto* table = snapshot_->add_route_tables();
      table->set_name(std::move(table_name));
      bounds.clear();
      for (const auto& b : all) {
        if (!IsTcpServer(*b.server)) {
          bounds.push_back(&b);  // (TCP servers after an HTTP one are left out)
        }
      }
      FillGatewayTable(port, bounds, table);
      continue;
    }
    // A TLS port: a filter chain per server (plain-text servers on it cannot be told
    // apart from TLS clients, and are left out, as the Gateway's status says).
    // (Built in place: the cluster table keeps views of the SNI routes' cluster names.)
    auto* listener = snapshot_->add_listeners();
    listener->set_name("0.0.0.0_" + std::to_string(port));
    listener->set_address("0.0.0.0");
    listener->set_port(port);
    listener->set_protocol("TLS");
    for (const auto& b : all) {
      if (!IsTlsServer(*b.server)) {
        continue;
      }
      AddFilterChain(port, b, listener);
    }
    if (listener->filter_chains_size() == 0) {
      snapshot_->mutable_listeners()->RemoveLast();  // no server of the port can be served
    }
  }
}

void Builder::AddFilterChain(uint32_t port, const Bound& b, v1::Listener* listener) {
  const auto& tls = *b.server->tls;
  std::string chain_name = b.key + " servers[" + std::to_string(b.server_index) + "]";
  if (tls.mode == "PASSTHROUGH") {
    auto* fc = listener->add_filter_chains();
    fc->set_name(chain_name);
    SetServerNames(b, fc);
    AddSniRoutes(port, b, fc);
    return;
  }
  v1::TlsServerContext ctx;
  if (!ServerTlsContext(b, &ctx)) {
    return;  // its Secret is missing or invalid: the Gateway's status says so
  }
  if (b.server->port->protocol == "TLS") {
    // A TLS server that terminates: the bytes inside go by its first tcp: route (Istio);
    // with none, the server is not served.
    // (In place: the cluster table keeps a view of the cluster name.)
    auto* fc = listener->add_filter_chains();
    std::vector<const Bound*> one = {&b};
    if (!SetTcpRoute(port, one, fc->mutable_tcp_route())) {
      listener->mutable_filter_chains()->RemoveLast();
      return;
    }
    fc->set_name(chain_name);
    SetServerNames(b, fc);
    *fc->mutable_tls() = std::move(ctx);
    return;
  }
  auto* fc = listener->add_filter_chains();
  fc->set_name(chain_name);
  SetServerNames(b, fc);
  *fc->mutable_tls() = std::move(ctx);
  std::string table_name = "https." + std::to_string(port) + "." + b.gateway->meta.namespace_ +
                           "." + b.gateway->meta.name + "." + std::to_string(b.server_index);
  fc->set_route_table(table_name);
  auto* table = snapshot_->add_route_tables();
  table->set_name(std::move(table_name));
  std::vector<const Bound*> one = {&b};
  FillGatewayTable(port, one, table);
}

void Builder::SetServerNames(const Bound& b, v1::FilterChain* fc) {
  for (const auto& sh : b.hosts) {
    if (sh.host == "*") {
      fc->clear_server_names();  // any name
      return;
    }
  }
  for (const auto& sh : b.hosts) {
    if (std::find(fc->server_names().begin(), fc->server_names().end(), sh.host) ==
        fc->server_names().end()) {
      fc->add_server_names(sh.host.data(), sh.host.size());
    }
  }
}

void Builder::AddSniRoutes(uint32_t port, const Bound& b, v1::FilterChain* fc) {
  for (const Object* vs_obj : index_.virtual_services) {
    const auto& vs = vs_obj->As<api::VirtualService>();
    const std::string& vs_ns = vs_obj->meta.namespace_;
    if (vs.tls.empty()) {
      continue;
    }
    // The VirtualService must be visible to the server: one of its hosts in a namespace
    // the server's hosts admit.
    bool host_ok = false;
    for (const auto& sh : b.hosts) {
      if (!sh.any_namespace && sh.ns != vs_ns) {
        continue;
      }
      for (const auto& h : vs.hosts) {
        host_ok = host_ok || !IntersectHostsView(h, sh.host).empty();
      }
    }
    if (!host_ok) {
      continue;
    }
    for (const auto& route : vs.tls) {
      if (route.route.empty()) {
        continue;
      }
      for (const auto& m : route.match) {
        const auto& refs = m.gateways.empty() ? vs.gateways : m.gateways;
        bool bound = std::any_of(refs.begin(), refs.end(), [&](const std::string& ref) {
          return RefersTo(ref, vs_ns, b.key);
        });
        if (!bound || (m.port != 0 && m.port != port)) {
          continue;
        }
        // The SNI hosts of the match that this server accepts.
        std::vector<const std::string*> accepted_hosts;
        for (const auto& sni : m.sni_hosts) {
          bool accepted = std::any_of(b.hosts.begin(), b.hosts.end(), [&](const ServerHost& sh) {
            return (sh.any_namespace || sh.ns == vs_ns) &&
                   !IntersectHostsView(sni, sh.host).empty();
          });
          if (accepted) {
            accepted_hosts.push_back(&sni);
          }
        }
        if (accepted_hosts.empty()) {
          continue;
        }
        // In place: the cluster table keeps a view of the cluster name.
        auto* sr = fc->add_sni_routes();
        for (const std::string* h : accepted_hosts) {
          sr->add_sni_hosts(*h);
        }
        // `cluster`: the destination with the largest weight (the first of equals); with
        // several, each connection picks one by weight.
        SetL4Destinations(route.route, vs_ns, port, sr);
      }
    }
  }
}

bool Builder::SetTcpRoute(uint32_t port, const std::vector<const Bound*>& bounds,
                          v1::TcpRoute* out) {
  for (const Object* vs_obj : index_.virtual_services) {
    const auto& vs = vs_obj->As<api::VirtualService>();
    const std::string& vs_ns = vs_obj->meta.namespace_;
    for (const Bound* b : bounds) {
      // Visible to the server: one of the VirtualService's hosts in a namespace and a host
      // the server admits.
      bool host_ok = false;
      for (const auto& sh : b->hosts) {
        if (!sh.any_namespace && sh.ns != vs_ns) {
          continue;
        }
        for (const auto& h : vs.hosts) {
          host_ok = host_ok || !IntersectHostsView(h, sh.host).empty();
        }
      }
      if (!host_ok) {
        continue;
      }
      auto bound_to = [&](const std::vector<std::string>& refs) {
        return std::any_of(refs.begin(), refs.end(),
                           [&](const std::string& ref) { return RefersTo(ref, vs_ns, b->key); });
      };
      if (const auto* route = FirstTcpRoute(vs, port, bound_to)) {
        SetL4Destinations(route->route, vs_ns, port, out);
        return true;
      }
    }
  }
  return false;
}

void Builder::FillGatewayTable(uint32_t port, const std::vector<const Bound*>& bounds,
                               v1::RouteTable* table) {
  // One virtual host per domain; its routes come from the VirtualServices with that
  // domain, in VirtualService order.
  struct Entry {
    uint64_t prefix;  // of the domain, to sort without reading the strings (mostly)
    std::string_view domain;
    const Object* vs;
    const Bound* bound;
  };
  std::vector<Entry> entries;
  std::deque<std::string> resolved;  // owns domains that are resolved short hosts
  for (const Object* vs_obj : index_.virtual_services) {
    const auto& vs = vs_obj->As<api::VirtualService>();
    const std::string& vs_ns = vs_obj->meta.namespace_;
    // Hosts of this VS on this port, across all the servers it binds to, in order.
    size_t first = entries.size();
    for (const Bound* b : bounds) {
      bool bound = std::any_of(vs.gateways.begin(), vs.gateways.end(), [&](const std::string& ref) {
        return RefersTo(ref, vs_ns, b->key);
      });
      if (!bound) {
        continue;
      }
      for (const auto& sh : b->hosts) {
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
          entries.push_back({Prefix(domain), domain, vs_obj, b});
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
    size_t end = i;
    const Bound* redirecting = nullptr;
    for (; end < entries.size() && entries[end].domain == domain; ++end) {
      if (entries[end].bound->https_redirect && redirecting == nullptr) {
        redirecting = entries[end].bound;
      }
    }
    if (redirecting != nullptr) {
      // tls.httpsRedirect: every request for the server's hosts goes to https, same host
      // and path (a 301, as Envoy's require_tls).
      auto* route = vh->add_routes();
      route->set_name("https-redirect");
      route->set_source("Gateway " + redirecting->key + " spec.servers[" +
                        std::to_string(redirecting->server_index) + "].tls.httpsRedirect");
      route->mutable_redirect()->set_scheme("https");
      route->mutable_redirect()->set_port(HttpsPortOf(*redirecting->gateway));
      route->mutable_redirect()->set_response_code(301);
      i = end;
      continue;
    }
    for (; i < end; ++i) {
      AppendRoutes(*entries[i].vs, entries[i].bound->key, port, 0, vh);
    }
  }
}

}  // namespace skiff::translate

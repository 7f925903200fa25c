// skiffctl proxy-config: what one proxy is serving, read from its admin port (/config_dump
// and /clusters), as istioctl proxy-config prints an Envoy's.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/http_get.h"
#include "cli/table.h"
#include "common/flags.h"
#include "common/strings.h"
#include "skiff/v1/config.pb.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace skiff::cli {

namespace {

using nlohmann::json;

constexpr const char* kTypes[] = {"listeners", "routes", "clusters", "endpoints", "secrets", "all"};

// The admin address of proxy `id`, as it told the operator.
bool FindAdmin(const std::string& operator_address, const std::string& id, std::string* admin,
               std::string* error) {
  auto channel = grpc::CreateChannel(operator_address, grpc::InsecureChannelCredentials());
  auto stub = v1::ProxyStatusService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ProxyStatusRequest req;
  v1::ProxyStatusResponse resp;
  auto status = stub->ListProxies(&ctx, req, &resp);
  if (!status.ok()) {
    *error = "cannot reach the operator at " + operator_address + ": " + status.error_message() +
             " (pass --admin HOST:PORT to read the proxy's admin port directly)";
    return false;
  }
  std::vector<std::string> ids;
  for (const auto& p : resp.proxies()) {
    if (p.node().id() == id) {
      if (p.node().admin_address().empty()) {
        *error = "proxy " + id + " did not report its admin address; pass --admin HOST:PORT";
        return false;
      }
      *admin = p.node().admin_address();
      return true;
    }
    ids.push_back(p.node().id());
  }
  *error = "no proxy " + id + " is connected to the operator at " + operator_address +
           (ids.empty() ? " (none is)" : "; connected: " + Join(ids, ", "));
  return false;
}

bool Fetch(const std::string& admin, const std::string& path, json* out, std::string* error) {
  int status = 0;
  std::string body;
  if (!HttpGet(admin, path, &status, &body, error)) {
    return false;
  }
  if (status != 200) {
    *error = "GET " + path + " on " + admin + ": status " + std::to_string(status);
    return false;
  }
  *out = json::parse(body, nullptr, false);
  if (out->is_discarded()) {
    *error = "GET " + path + " on " + admin + ": the answer is not JSON";
    return false;
  }
  return true;
}

// "catalog.coolstore" (istioctl's name.namespace) for "coolstore/catalog".
std::string DottedRef(const std::string& ns_name) {
  auto slash = ns_name.find('/');
  if (slash == std::string::npos) {
    return ns_name.empty() ? "-" : ns_name;
  }
  return ns_name.substr(slash + 1) + "." + ns_name.substr(0, slash);
}

// The VirtualService of a route's source ("VirtualService coolstore/catalog spec.http[0]").
std::string VirtualServiceOf(const std::string& source) {
  const std::string prefix = "VirtualService ";
  if (!StartsWith(source, prefix)) {
    return "-";
  }
  std::string ref = source.substr(prefix.size());
  return DottedRef(ref.substr(0, ref.find(' ')));
}

std::string StringMatchText(const v1::StringMatch& m, bool path) {
  std::string out;
  switch (m.match_case()) {
    case v1::StringMatch::kExact:
      out = m.exact();
      break;
    case v1::StringMatch::kPrefix:
      out = m.prefix() + "*";
      break;
    case v1::StringMatch::kRegex:
      out = "regex " + m.regex();
      break;
    default:
      out = path ? "/*" : "*";
      break;
  }
  return m.ignore_case() ? out + " (ignore case)" : out;
}

std::string MatchText(const v1::Route& r) {
  if (!r.has_match()) {
    return "/*";
  }
  const auto& m = r.match();
  std::vector<std::string> parts;
  parts.push_back(m.has_uri() ? StringMatchText(m.uri(), true) : "/*");
  if (m.has_method()) {
    parts.push_back("method " + StringMatchText(m.method(), false));
  }
  if (m.has_scheme()) {
    parts.push_back("scheme " + StringMatchText(m.scheme(), false));
  }
  if (m.has_authority()) {
    parts.push_back("authority " + StringMatchText(m.authority(), false));
  }
  for (const auto& h : m.headers()) {
    parts.push_back("header " + h.name() +
                    (h.has_value() ? "=" + StringMatchText(h.value(), false) : " present"));
  }
  for (const auto& h : m.without_headers()) {
    parts.push_back("without header " + h.name() +
                    (h.has_value() ? "=" + StringMatchText(h.value(), false) : ""));
  }
  for (const auto& q : m.query_params()) {
    parts.push_back("query " + q.name() +
                    (q.has_value() ? "=" + StringMatchText(q.value(), false) : " present"));
  }
  if (m.port() != 0) {
    parts.push_back("port " + std::to_string(m.port()));
  }
  return Join(parts, " ");
}

std::string DomainsText(const v1::VirtualHost& vh) {
  if (vh.domains().empty()) {
    return "-";
  }
  std::string out = vh.domains(0);
  if (vh.domains_size() > 1) {
    out += " +" + std::to_string(vh.domains_size() - 1) + " more";
  }
  return out;
}

std::string Or(const std::string& s, const char* dash = "-") { return s.empty() ? dash : s; }

// `bound`: the proxy's bound_listeners (name, address, port after --port-map and
// --listener-address); a listener that is not in it is not bound (yet).
void PrintListeners(const v1::Snapshot& s, const json& bound) {
  Table t({"NAME", "ADDRESS", "PORT", "PROTOCOL", "DESTINATION", "BOUND"});
  for (const auto& l : s.listeners()) {
    std::string at = "-";
    for (const auto& b : bound) {
      if (b.value("name", "") == l.name()) {
        std::string a = b.value("address", "");
        at = (a.find(':') != std::string::npos ? "[" + a + "]" : a) + ":" +
             std::to_string(b.value("port", 0));
      }
    }
    std::string dest = l.route_table().empty() ? "-" : "Route: " + l.route_table();
    if (l.filter_chains_size() > 0) {
      // A TLS port: its chains by SNI, each terminated (routes) or passed through.
      std::vector<std::string> chains;
      for (const auto& fc : l.filter_chains()) {
        std::string names;
        for (const auto& n : fc.server_names()) {
          names += (names.empty() ? "" : ",") + n;
        }
        std::string to = "passthrough";
        if (fc.has_tls() && fc.has_tcp_route()) {
          // Terminated, then a tcp: route: its cluster(s), as a TCP port's.
          std::vector<std::string> clusters;
          for (const auto& wc : fc.tcp_route().clusters()) {
            clusters.push_back(wc.cluster() + " " + std::to_string(wc.weight()));
          }
          to = "TCP: " + (clusters.empty() ? fc.tcp_route().cluster() : Join(clusters, ", "));
        } else if (fc.has_tls()) {
          to = "Route: " + fc.route_table();
        }
        chains.push_back((names.empty() ? std::string("*") : names) + " -> " + to);
      }
      dest = Join(chains, "; ");
    }
    if (l.has_tcp_route()) {
      // A TCP port: its cluster, or each cluster with its weight.
      std::vector<std::string> to;
      for (const auto& wc : l.tcp_route().clusters()) {
        to.push_back(wc.cluster() + " " + std::to_string(wc.weight()));
      }
      dest = "TCP: " + (to.empty() ? l.tcp_route().cluster() : Join(to, ", "));
    }
    t.Add({l.name(), Or(l.address(), "0.0.0.0"), std::to_string(l.port()), Or(l.protocol()), dest,
           at});
  }
  t.Print(std::cout);
}

// Secrets: where each part comes from; the proxy's dump never holds a private key.
void PrintSecrets(const v1::Snapshot& s) {
  Table t({"NAME", "CERTIFICATE CHAIN", "PRIVATE KEY", "CA CERTIFICATES"});
  auto part = [](const std::string& inline_pem, const std::string& file) -> std::string {
    if (!file.empty()) {
      return "file " + file;
    }
    if (inline_pem.empty()) {
      return "-";
    }
    size_t n = 0;
    for (size_t at = inline_pem.find("-----BEGIN CERTIFICATE-----"); at != std::string::npos;
         at = inline_pem.find("-----BEGIN CERTIFICATE-----", at + 1)) {
      ++n;
    }
    return std::to_string(n) + (n == 1 ? " certificate" : " certificates");
  };
  for (const auto& sec : s.secrets()) {
    std::string key = !sec.private_key_file().empty() ? "file " + sec.private_key_file()
                      : sec.private_key().empty()     ? "-"
                                                      : "[redacted]";
    t.Add({sec.name(), part(sec.certificate_chain(), sec.certificate_chain_file()), key,
           part(sec.ca_certificates(), sec.ca_certificates_file())});
  }
  t.Print(std::cout);
}

void PrintRoutes(const v1::Snapshot& s) {
  Table t({"NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"});
  for (const auto& rt : s.route_tables()) {
    for (const auto& vh : rt.virtual_hosts()) {
      for (const auto& r : vh.routes()) {
        t.Add({rt.name(), vh.name(), DomainsText(vh), MatchText(r), VirtualServiceOf(r.source())});
      }
    }
  }
  t.Print(std::cout);
}

void PrintClusters(const v1::Snapshot& s) {
  Table t({"SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"});
  for (const auto& c : s.clusters()) {
    std::string direction = c.name().substr(0, c.name().find('|'));
    t.Add({Or(c.service()), std::to_string(c.port()), Or(c.subset()), Or(direction), "EDS",
           DottedRef(c.destination_rule())});
  }
  t.Print(std::cout);
}

void PrintEndpoints(const json& clusters) {
  Table t({"ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"});
  for (const auto& c : clusters) {
    for (const auto& e : c.value("endpoints", json::array())) {
      std::string address = e.value("address", "");
      if (address.find(':') != std::string::npos) {
        address = "[" + address + "]";
      }
      t.Add({address + ":" + std::to_string(e.value("port", 0)),
             e.value("healthy", false) ? "HEALTHY" : "UNHEALTHY",
             e.value("outlier_ejected", false) ? "FAILED" : "OK", c.value("name", "")});
    }
  }
  t.Print(std::cout);
}

YAML::Node ToYaml(const json& j) {
  switch (j.type()) {
    case json::value_t::object: {
      YAML::Node n(YAML::NodeType::Map);
      for (const auto& [k, v] : j.items()) {
        n[k] = ToYaml(v);
      }
      return n;
    }
    case json::value_t::array: {
      YAML::Node n(YAML::NodeType::Sequence);
      for (const auto& v : j) {
        n.push_back(ToYaml(v));
      }
      return n;
    }
    case json::value_t::string:
      return YAML::Node(j.get<std::string>());
    case json::value_t::boolean:
      return YAML::Node(j.get<bool>());
    case json::value_t::number_integer:
      return YAML::Node(j.get<int64_t>());
    case json::value_t::number_unsigned:
      return YAML::Node(j.get<uint64_t>());
    case json::value_t::number_float:
      return YAML::Node(j.get<double>());
    default:
      return YAML::Node();
  }
}

}  // namespace

int ProxyConfig(const std::vector<std::string>& args) {
  std::string admin;
  std::string operator_address = "127.0.0.1:15010";
  std::string output = "short";
  FlagSet flags(
      "skiffctl proxy-config",
      "Prints what one proxy is serving, read from its admin port (/config_dump, /clusters):\n"
      "  listeners   name, address, port, protocol, route table, where it is bound\n"
      "  routes      route table, virtual host, domains, match, VirtualService\n"
      "  clusters    service, port, subset, direction, type, DestinationRule\n"
      "  endpoints   address, health, outlier check (ejected now or not), cluster\n"
      "  secrets     certificates and keys by name (where they come from; keys never shown)\n"
      "  all         all five\n"
      "PROXY is a proxy's node id as skiffctl proxy-status lists it; the operator tells where its\n"
      "admin port is. --admin HOST:PORT reads an admin port directly (e.g. through kubectl\n"
      "port-forward) and needs no PROXY.\n\n"
      "Usage: skiffctl proxy-config listeners|routes|clusters|endpoints|secrets|all [PROXY] "
      "[flags]");
  flags.AllowPositional("TYPE [PROXY]");
  flags.AddString("admin", &admin, "the proxy's admin address (instead of asking the operator)",
                  "HOST:PORT");
  flags.AddString("operator", &operator_address,
                  "the operator's xDS address, to find PROXY (default 127.0.0.1:15010)",
                  "HOST:PORT");
  flags.AddCustom(
      "output,o",
      [&output](std::string_view v) -> std::optional<std::string> {
        if (v != "short" && v != "json" && v != "yaml") {
          return "expected short, json or yaml";
        }
        output = std::string(v);
        return std::nullopt;
      },
      "short (tables, the default), json or yaml", "FORMAT");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  const auto& pos = flags.positional();
  std::string type = pos.empty() ? "" : pos[0];
  bool known = false;
  for (const char* t : kTypes) {
    known = known || type == t;
  }
  if (!known || pos.size() > 2 || (pos.size() < 2 && admin.empty())) {
    std::cerr << "skiffctl proxy-config: expected listeners|routes|clusters|endpoints|secrets|all "
                 "and a "
                 "PROXY (or --admin HOST:PORT)\nTry 'skiffctl proxy-config --help'.\n";
    return kExitUsage;
  }
  std::string error;
  if (admin.empty() && !FindAdmin(operator_address, pos[1], &admin, &error)) {
    std::cerr << "skiffctl proxy-config: " << error << "\n";
    return 1;
  }
  json dump;
  if (!Fetch(admin, "/config_dump", &dump, &error)) {
    std::cerr << "skiffctl proxy-config: " << error << "\n";
    return 1;
  }
  json snapshot_json = dump.value("snapshot", json::object());
  if (snapshot_json.is_null()) {
    snapshot_json = json::object();  // no configuration yet: empty tables
  }
  v1::Snapshot snapshot;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = true;  // a newer proxy may know more fields
  if (!google::protobuf::util::JsonStringToMessage(snapshot_json.dump(), &snapshot, parse).ok()) {
    std::cerr << "skiffctl proxy-config: the config dump of " << admin
              << " is not a snapshot this skiffctl understands\n";
    return 1;
  }
  json endpoints = json::array();
  if (type == "endpoints" || type == "all") {
    json clusters;
    if (!Fetch(admin, "/clusters?format=json", &clusters, &error)) {
      std::cerr << "skiffctl proxy-config: " << error << "\n";
      return 1;
    }
    endpoints = clusters.value("clusters", json::array());
  }

  if (output != "short") {
    json out;
    auto section = [&](const char* name) {
      if (std::string(name) == "endpoints") {
        return endpoints;
      }
      const char* key = std::string(name) == "routes" ? "routeTables" : name;
      return snapshot_json.value(key, json::array());
    };
    if (type == "all") {
      out = json::object();
      out["version"] = dump.value("version", 0);
      for (const char* t : {"listeners", "routes", "clusters", "endpoints", "secrets"}) {
        out[t] = section(t);
      }
    } else {
      out = section(type.c_str());
    }
    if (output == "json") {
      std::cout << out.dump(2) << "\n";
    } else {
      YAML::Emitter emitter;
      emitter << ToYaml(out);
      std::cout << emitter.c_str() << "\n";
    }
    return 0;
  }
  auto heading = [&](const char* title) {
    if (type == "all") {
      std::cout << "# " << title << "\n";
    }
  };
  if (type == "listeners" || type == "all") {
    heading("listeners");
    PrintListeners(snapshot, dump.value("bound_listeners", json::array()));
  }
  if (type == "routes" || type == "all") {
    std::cout << (type == "all" ? "\n" : "");
    heading("routes");
    PrintRoutes(snapshot);
  }
  if (type == "clusters" || type == "all") {
    std::cout << (type == "all" ? "\n" : "");
    heading("clusters");
    PrintClusters(snapshot);
  }
  if (type == "endpoints" || type == "all") {
    std::cout << (type == "all" ? "\n" : "");
    heading("endpoints");
    PrintEndpoints(endpoints);
  }
  if (type == "secrets" || type == "all") {
    std::cout << (type == "all" ? "\n" : "");
    heading("secrets");
    PrintSecrets(snapshot);
  }
  return 0;
}

}  // namespace skiff::cli

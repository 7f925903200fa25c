#include "proxy/admin/admin.h"

#include <arpa/inet.h>
#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <utility>

#include "proxy/config/config.h"
#include "proxy/server/worker.h"
#include "proxy/telemetry/telemetry.h"
#include "proxy/upstream/cluster_state.h"
#include "proxy/xds/client.h"

namespace skiff::proxy {

namespace {

constexpr uint16_t kDefaultStatsPort = 15090;      // Istio's merged Prometheus port
constexpr uint16_t kDefaultReadinessPort = 15021;  // Istio's readiness port

struct Endpoint {
  const char* path;
  const char* help;
};
constexpr Endpoint kAdminEndpoints[] = {
    {"/", "this list"},
    {"/ready", "200 LIVE when serving a complete configuration, else 503 and why not"},
    {"/config_dump",
     "the configuration being served (protobuf JSON), its version and where "
     "each listener is bound"},
    {"/clusters", "every endpoint of every cluster with its health (?format=json)"},
    {"/stats", "the proxy's counters, per cluster with Envoy's names"},
    {"/stats/prometheus", "Istio's request metrics and the counters in Prometheus text"},
};

HttpResponse Text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse NotFound(const HttpRequest& request) {
  return Text(404, "not found: " + request.path + "\n");
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Every endpoint of every cluster as configured, with what the proxy knows about it now:
// Envoy's /clusters lines (cluster::address:port::health_flags::healthy, or the failed
// checks: /failed_eds_health, /failed_outlier_check), or JSON for skiffctl proxy-config.
HttpResponse Clusters(const Config* config, bool json) {
  std::string body = json ? "{\"clusters\": [" : "";
  if (config != nullptr) {
    int64_t now = upstream::SteadyNowMs();
    bool first_cluster = true;
    for (const auto& cla : config->snapshot().endpoints()) {
      // The compiled cluster holds the outlier state of its (healthy) endpoints.
      const upstream::Cluster* cluster = config->FindCluster(cla.cluster_name());
      auto ejected = [&](const v1::Endpoint& e) {
        if (cluster == nullptr) {
          return false;
        }
        for (const auto& ce : cluster->endpoints) {
          if (ce.proto == &e && ce.health != nullptr) {
            return ce.health->ejected_until_ms.load(std::memory_order_relaxed) > now;
          }
        }
        return false;
      };
      if (json) {
        body += std::string(first_cluster ? "" : ",") +
                "\n  {\"name\": " + JsonString(cla.cluster_name()) + ", \"endpoints\": [";
        first_cluster = false;
      }
      // A DNS name is shown as each address it resolved to, with that address's outlier
      // state (as itself until it has resolved).
      auto addresses = [&](const v1::Endpoint& e) {
        std::vector<std::pair<std::string, bool>> out;
        unsigned char buf[16];
        bool ip = ::inet_pton(AF_INET, e.address().c_str(), buf) == 1 ||
                  ::inet_pton(AF_INET6, e.address().c_str(), buf) == 1;
        if (!ip && cluster != nullptr) {
          for (const auto& ce : cluster->endpoints) {
            if (ce.proto == &e) {
              out.emplace_back(ce.address,
                               ce.health != nullptr && ce.health->ejected_until_ms.load(
                                                           std::memory_order_relaxed) > now);
            }
          }
        }
        if (out.empty()) {
          out.emplace_back(e.address(), ejected(e));
        }
        return out;
      };
      bool first = true;
      for (const auto& e : cla.endpoints()) {
        for (const auto& [address, out] : addresses(e)) {
          if (json) {
            body += std::string(first ? "" : ", ") + "{\"address\": " + JsonString(address) +
                    (address != e.address() ? ", \"hostname\": " + JsonString(e.address()) : "") +
                    ", \"port\": " + std::to_string(e.port()) +
                    ", \"healthy\": " + (e.healthy() ? "true" : "false") +
                    ", \"outlier_ejected\": " + (out ? "true" : "false") +
                    ", \"pod\": " + JsonString(e.pod()) + "}";
            first = false;
            continue;
          }
          std::string flags;
          if (!e.healthy()) {
            flags += "/failed_eds_health";
          }
          if (out) {
            flags += "/failed_outlier_check";
          }
          body += cla.cluster_name() + "::" + address + ":" + std::to_string(e.port()) +
                  "::health_flags::" + (flags.empty() ? "healthy" : flags) + "\n";
        }
      }
      if (json) {
        body += "]}";
      }
    }
  }
  if (!json) {
    return Text(200, body);
  }
  HttpResponse r = Text(200, body + "\n]}\n");
  r.content_type = "application/json";
  return r;
}

}  // namespace

Admin::Admin(AdminOptions options) : options_(std::move(options)) {}

Admin::~Admin() { Stop(); }

bool Admin::Listen(std::string* error) {
  prober_ = std::make_unique<AppProber>();
  if (std::string e; !prober_->Configure(options_.app_probers, options_.app_address, &e)) {
    *error = "SKIFF_KUBE_APP_PROBERS: " + e;
    return false;
  }
  auto make = [this](const std::string& address, uint16_t port, const char* flag,
                     HttpResponse (Admin::*handler)(const HttpRequest&) const) {
    HttpServerOptions o;
    o.address = address;
    o.port = port;
    o.flag = flag;
    return std::make_unique<HttpServer>(
        o, [this, handler](const HttpRequest& r) { return (this->*handler)(r); });
  };
  admin_ = make(options_.admin_address, static_cast<uint16_t>(options_.admin_port), "--admin-port",
                &Admin::HandleAdmin);
  if (!admin_->Listen(error)) {
    admin_.reset();
    return false;
  }
  struct Optional {
    std::unique_ptr<HttpServer>* server;
    const std::string& address;
    int64_t port;
    uint16_t fallback;
    const char* flag;
    HttpResponse (Admin::*handler)(const HttpRequest&) const;
  };
  Optional optional[] = {
      {&stats_, options_.stats_address, options_.stats_port, kDefaultStatsPort, "--stats-port",
       &Admin::HandleStats},
      {&readiness_, options_.readiness_address, options_.readiness_port, kDefaultReadinessPort,
       "--readiness-port", &Admin::HandleReadiness},
  };
  for (const auto& o : optional) {
    if (o.port == 0) {
      continue;
    }
    bool best_effort = o.port < 0;
    auto server = make(o.address, best_effort ? o.fallback : static_cast<uint16_t>(o.port), o.flag,
                       o.handler);
    std::string e;
    if (!server->Listen(&e)) {
      if (!best_effort) {
        *error = e;
        Stop();
        return false;
      }
      spdlog::warn("{}; running without it (pass {} PORT to choose another, 0 to turn it off)", e,
                   o.flag);
      continue;
    }
    *o.server = std::move(server);
  }
  return true;
}

void Admin::Start(AdminSources sources) {
  sources_ = sources;
  if (prober_ != nullptr) {
    prober_->Start();
  }
  for (auto* s : {&admin_, &stats_, &readiness_}) {
    if (*s != nullptr) {
      (*s)->Start();
    }
  }
  if (stats_ != nullptr) {
    spdlog::info("Prometheus metrics on {}:{}/stats/prometheus", stats_->address(), stats_->port());
  }
  if (readiness_ != nullptr) {
    spdlog::info("readiness on {}:{}/healthz/ready", readiness_->address(), readiness_->port());
    if (prober_ != nullptr && !prober_->empty()) {
      spdlog::info("the app's probes on {}:{}/app-health/...", readiness_->address(),
                   readiness_->port());
    }
  } else if (prober_ != nullptr && !prober_->empty()) {
    spdlog::warn("no readiness port: the app's rewritten probes (/app-health/...) fail");
  }
}

void Admin::Stop() {
  for (auto* s : {&admin_, &stats_, &readiness_}) {
    if (*s != nullptr) {
      (*s)->Stop();
    }
  }
  if (prober_ != nullptr) {
    prober_->Stop();  // after the servers: its late answers are dropped
  }
}

uint16_t Admin::admin_port() const { return admin_ != nullptr ? admin_->port() : 0; }
uint16_t Admin::stats_port() const { return stats_ != nullptr ? stats_->port() : 0; }
uint16_t Admin::readiness_port() const { return readiness_ != nullptr ? readiness_->port() : 0; }

std::string Admin::NotReady() const {
  if (draining_) {
    return "DRAINING";
  }
  if (sources_.store == nullptr || sources_.store->Get() == nullptr) {
    return "no configuration received yet";
  }
  if (sources_.xds != nullptr) {
    std::string missing;
    if (!sources_.xds->complete(&missing)) {
      std::string why = "no complete configuration yet: waiting for " + missing;
      std::string last = sources_.xds->last_error();
      return last.empty() ? why : why + " (last rejected: " + last + ")";
    }
  }
  std::set<std::string> errors;  // every worker reports the same listener
  if (sources_.workers != nullptr) {
    for (const auto& w : *sources_.workers) {
      if (auto e = w->last_error(); !e.empty()) {
        errors.insert(e);
      }
    }
  }
  std::string out;
  for (const auto& e : errors) {
    out += (out.empty() ? "" : "; ") + e;
  }
  return out;
}

HttpResponse Admin::Ready() const {
  std::string why = NotReady();
  if (why.empty()) {
    return Text(200, "LIVE\n");
  }
  return Text(503, "NOT READY: " + why + "\n");
}

HttpResponse Admin::HandleReadiness(const HttpRequest& request) const {
  if (request.path == "/healthz/ready") {
    return Ready();
  }
  if (const AppProbe* probe = prober_ != nullptr ? prober_->Find(request.path) : nullptr) {
    // The app's own probe, rewritten to the sidecar by the injector: the sidecar probes the
    // app and answers with what it says (without holding up /healthz/ready).
    HttpResponse r;
    AppProber* prober = prober_.get();
    r.deferred = [prober, probe](HttpReply reply) { prober->Probe(*probe, std::move(reply)); };
    return r;
  }
  return NotFound(request);
}

HttpResponse Admin::HandleStats(const HttpRequest& request) const {
  if (request.path == "/stats/prometheus" || request.path == "/metrics") {
    HttpResponse r = Text(200, StatsText(true));
    r.content_type = "text/plain; version=0.0.4";
    return r;
  }
  return NotFound(request);
}

HttpResponse Admin::HandleAdmin(const HttpRequest& request) const {
  const std::string& path = request.path;
  if (path == "/") {
    std::string body = "skiff-proxy admin\n\n";
    for (const auto& e : kAdminEndpoints) {
      body +=
          std::string(e.path) + std::string(20 - std::string(e.path).size(), ' ') + e.help + "\n";
    }
    if (readiness_ != nullptr) {
      body += "\nreadiness: :" + std::to_string(readiness_->port()) + "/healthz/ready\n";
    }
    if (stats_ != nullptr) {
      body += "Prometheus: :" + std::to_string(stats_->port()) + "/stats/prometheus\n";
    }
    return Text(200, body);
  }
  if (path == "/ready") {
    return Ready();
  }
  if (path == "/stats" || path == "/stats/prometheus") {
    HttpResponse r = Text(200, StatsText(path == "/stats/prometheus"));
    if (path == "/stats/prometheus") {
      r.content_type = "text/plain; version=0.0.4";
    }
    return r;
  }
  auto config = sources_.store != nullptr ? sources_.store->Get() : nullptr;
  if (path == "/config_dump") {
    std::string json;
    google::protobuf::util::JsonPrintOptions o;
    o.add_whitespace = true;
    if (config != nullptr) {
      // Key material never leaves the proxy: private keys are redacted.
      skiff::v1::Snapshot copy = config->snapshot();
      for (auto& secret : *copy.mutable_secrets()) {
        if (!secret.private_key().empty()) {
          secret.set_private_key("[redacted]");
        }
      }
      (void)google::protobuf::util::MessageToJsonString(copy, &json, o);
    }
    // Where each listener is bound (after --port-map and --listener-address).
    std::string bound;
    if (config != nullptr) {
      for (const auto& l : config->listeners()) {
        bound += std::string(bound.empty() ? "" : ", ") + "{\"name\": " + JsonString(l.name) +
                 ", \"address\": " + JsonString(l.address) +
                 ", \"port\": " + std::to_string(l.bind_port) + "}";
      }
    }
    HttpResponse r = Text(200, "{\"version\": " + std::to_string(config ? config->version() : 0) +
                                   ", \"bound_listeners\": [" + bound + "]" +
                                   ", \"snapshot\": " + (json.empty() ? "null" : json) + "}\n");
    r.content_type = "application/json";
    return r;
  }
  if (path == "/clusters") {
    return Clusters(config.get(), request.query == "format=json");
  }
  return NotFound(request);
}

std::string Admin::StatsText(bool prom) const {
  std::string body;
  auto config = sources_.store != nullptr ? sources_.store->Get() : nullptr;
  if (prom && sources_.telemetry != nullptr) {
    sources_.telemetry->RenderMetrics(&body);
  }
  std::map<std::string, uint64_t> totals;
  if (sources_.workers != nullptr) {
    for (const auto& w : *sources_.workers) {
      const auto& s = w->counters();
      auto add = [&](const char* name, const std::atomic<uint64_t>& v) {
        totals[name] += v.load(std::memory_order_relaxed);
      };
      add("downstream_cx_total", s.downstream_cx_total);
      add("downstream_cx_active", s.downstream_cx_active);
      add("downstream_rq_total", s.downstream_rq_total);
      add("downstream_rq_1xx", s.rq_1xx);
      add("downstream_rq_2xx", s.rq_2xx);
      add("downstream_rq_3xx", s.rq_3xx);
      add("downstream_rq_4xx", s.rq_4xx);
      add("downstream_rq_5xx", s.rq_5xx);
      add("upstream_cx_total", s.upstream_cx_total);
      add("upstream_cx_connect_fail", s.upstream_cx_connect_fail);
      add("upstream_rq_pool_reused", s.upstream_rq_reused);
      add("no_route", s.no_route);
      add("no_healthy_upstream", s.no_healthy_upstream);
      add("fault_delays_injected", s.fault_delays_injected);
      add("fault_aborts_injected", s.fault_aborts_injected);
      add("mirror_requests_total", s.mirror_requests_total);
      add("mirror_requests_skipped", s.mirror_requests_skipped);
      add("mirror_requests_failed", s.mirror_requests_failed);
      add("downstream_rq_idle_timeout", s.downstream_rq_idle_timeout);
      add("listener_accept_fd_exhausted", s.listener_accept_fd_exhausted);
      add("tcp_proxy_cx_total", s.tcp_proxy_cx_total);
      add("tcp_proxy_cx_active", s.tcp_proxy_cx_active);
      add("tcp_proxy_connect_fail", s.tcp_proxy_connect_fail);
      add("capture_passthrough_total", s.capture_passthrough_total);
      add("capture_refused_total", s.capture_refused_total);
      add("capture_sniffed_http", s.capture_sniffed_http);
      add("capture_sniffed_tcp", s.capture_sniffed_tcp);
      add("tls_handshakes", s.tls_handshakes);
      add("tls_handshake_error", s.tls_handshake_error);
      add("tls_handshake_timeout", s.tls_handshake_timeout);
      add("tls_no_route", s.tls_no_route);
      add("downstream_cx_http2_total", s.downstream_cx_http2_total);
      add("http2.streams_total", s.http2.streams_total);
      add("http2.rx_reset", s.http2.rx_reset);
      add("http2.tx_reset", s.http2.tx_reset);
      add("http2.header_overflow", s.http2.header_overflow);
      add("http2.rx_messaging_error", s.http2.rx_messaging_error);
      add("http2.premature_reset", s.http2.premature_reset);
      add("http2.flood", s.http2.flood);
      add("http2.connection_error", s.http2.connection_error);
      add("http2.goaway_sent", s.http2.goaway_sent);
      add("http2.flow_control_paused", s.http2.flow_control_paused);
      add("upstream_cx_http2_total", s.upstream_cx_http2_total);
    }
  }
  totals["config_version"] = config ? config->version() : 0;
  if (sources_.xds != nullptr) {
    totals["xds_connected"] = sources_.xds->connected() ? 1 : 0;
    totals["xds_accepted"] = sources_.xds->accepted();
    totals["xds_rejected"] = sources_.xds->rejected();
  }
  // The admin servers' own protection counters.
  uint64_t too_large = 0;
  uint64_t timeouts = 0;
  uint64_t evicted = 0;
  for (const auto* s : {&admin_, &stats_, &readiness_}) {
    if (*s != nullptr) {
      too_large += (*s)->stats().head_too_large.load(std::memory_order_relaxed);
      timeouts += (*s)->stats().head_timeouts.load(std::memory_order_relaxed);
      evicted += (*s)->stats().evicted.load(std::memory_order_relaxed);
    }
  }
  totals["admin_rq_header_too_large"] = too_large;
  totals["admin_rq_header_timeout"] = timeouts;
  totals["admin_cx_evicted"] = evicted;
  if (sources_.telemetry != nullptr) {
    std::vector<std::pair<std::string, uint64_t>> extra;
    sources_.telemetry->AppendStats(&extra);
    for (auto& [name, v] : extra) {
      totals[name] = v;
    }
  }
  for (const auto& [name, v] : totals) {
    if (prom) {
      // Prometheus names have no dots ("http2.streams_total" is skiff_http2_streams_total).
      std::string metric = "skiff_" + name;
      std::replace(metric.begin(), metric.end(), '.', '_');
      body += metric + " " + std::to_string(v) + "\n";
    } else {
      body += name + ": " + std::to_string(v) + "\n";
    }
  }
  // Per-cluster circuit breakers, retries, timeouts and outlier detection, with Envoy's
  // stat names.
  upstream::ClusterStateRegistry::Default().ForEach(
      [&](const std::string& cluster, const upstream::ClusterState& c) {
        auto emit = [&](const char* name, int64_t v) {
          if (prom) {
            body += std::string("skiff_cluster_") + name + "{cluster=\"" + cluster + "\"} " +
                    std::to_string(v) + "\n";
          } else {
            body += "cluster." + cluster + "." + name + ": " + std::to_string(v) + "\n";
          }
        };
        auto get = [](const auto& a) { return static_cast<int64_t>(a.load()); };
        emit("upstream_cx_active", get(c.cx_active));
        emit("upstream_rq_active", get(c.rq_active));
        emit("upstream_rq_pending_active", get(c.rq_pending_active));
        emit("upstream_rq_total", get(c.upstream_rq_total));
        emit("upstream_rq_retry", get(c.upstream_rq_retry));
        emit("upstream_rq_retry_success", get(c.upstream_rq_retry_success));
        emit("upstream_rq_retry_limit_exceeded", get(c.upstream_rq_retry_limit_exceeded));
        emit("upstream_rq_retry_overflow", get(c.upstream_rq_retry_overflow));
        emit("upstream_rq_timeout", get(c.upstream_rq_timeout));
        emit("upstream_rq_per_try_timeout", get(c.upstream_rq_per_try_timeout));
        emit("upstream_rq_pending_overflow", get(c.upstream_rq_pending_overflow));
        emit("upstream_cx_overflow", get(c.upstream_cx_overflow));
        emit("upstream_cx_connect_fail", get(c.upstream_cx_connect_fail));
        emit("outlier_detection_ejections_active", get(c.ejections_active));
        emit("outlier_detection_ejections_enforced_total", get(c.outlier_ejections_enforced_total));
      });
  return body;
}

}  // namespace skiff::proxy

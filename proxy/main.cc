// skiff-proxy: the data-plane HTTP proxy.
#include <arpa/inet.h>
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "common/logging.h"
#include "common/strings.h"
#include "proxy/admin/admin_server.h"
#include "proxy/config/bootstrap.h"
#include "proxy/config/config.h"
#include "proxy/server/worker.h"
#include "proxy/telemetry/telemetry.h"
#include "proxy/upstream/cluster_state.h"
#include "proxy/xds/client.h"

namespace {

using skiff::proxy::Config;

bool ParsePort(std::string_view s, uint32_t* out) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0 || v > 65535) {
    return false;
  }
  *out = v;
  return true;
}

struct Reloader {
  std::string path;
  std::map<uint32_t, uint32_t> port_map;
  skiff::proxy::ConfigStore* store;
  std::vector<std::unique_ptr<skiff::proxy::Worker>>* workers;
  uint64_t version = 0;
  timespec mtime{};

  // Loads the file through the same validate-then-swap path the xDS client uses. An invalid
  // file is rejected with a message and the old config keeps serving.
  bool Load() {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      mtime = st.st_mtim;
    }
    skiff::v1::Snapshot snapshot;
    std::string error;
    if (!skiff::proxy::LoadSnapshotFile(path, &snapshot, &error)) {
      spdlog::error("rejected configuration: {}", error);
      return false;
    }
    auto config = Config::Build(std::move(snapshot), port_map, version + 1, &error);
    if (config == nullptr) {
      spdlog::error("rejected configuration from {}: {}", path, error);
      return false;
    }
    ++version;
    store->Publish(std::move(config));
    for (auto& w : *workers) {
      w->Wake();
    }
    spdlog::info("configuration version {} from {} is active", version, path);
    return true;
  }

  bool Changed() const {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return false;
    }
    return st.st_mtim.tv_sec != mtime.tv_sec || st.st_mtim.tv_nsec != mtime.tv_nsec;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string log_level = "info";
  std::string bootstrap;
  bool check = false;
  int64_t concurrency = std::thread::hardware_concurrency();
  if (concurrency <= 0) {
    concurrency = 1;
  }
  int64_t admin_port = 15000;
  std::string admin_address = "127.0.0.1";
  std::map<uint32_t, uint32_t> port_map;
  skiff::proxy::ProxyOptions options;
  skiff::proxy::XdsClientOptions xds;
  xds.node.set_role("gateway");
  xds.node.set_namespace_("default");

  skiff::FlagSet flags("skiff-proxy", "The skiff data-plane HTTP proxy.");
  flags.AddString("bootstrap", &bootstrap,
                  "serve a snapshot (the JSON that `skiffctl translate` prints); SIGHUP or a "
                  "change of the file reloads it",
                  "FILE");
  flags.AddBool("check", &check, "only load and check the --bootstrap file, then exit");
  flags.AddString("xds", &xds.address, "get configuration from the operator's xDS server",
                  "HOST:PORT");
  flags.AddBool("xds-delta", &xds.delta,
                "use incremental (delta) xDS instead of state of the world");
  flags.AddCustom(
      "role",
      [&xds](std::string_view v) -> std::optional<std::string> {
        if (v != "gateway" && v != "sidecar") {
          return "expected gateway or sidecar";
        }
        xds.node.set_role(std::string(v));
        return std::nullopt;
      },
      "gateway (default) or sidecar", "ROLE");
  flags.AddCustom(
      "labels",
      [&xds](std::string_view v) -> std::optional<std::string> {
        for (const auto& pair : skiff::Split(v, ',')) {
          auto eq = pair.find('=');
          if (eq == std::string::npos || eq == 0) {
            return "expected k=v pairs separated by commas, got '" + pair + "'";
          }
          (*xds.node.mutable_labels())[pair.substr(0, eq)] = pair.substr(eq + 1);
        }
        return std::nullopt;
      },
      "proxy labels that Gateway selectors match (default for gateways: istio=ingressgateway)",
      "k=v,...");
  flags.AddCustom(
      "namespace",
      [&xds](std::string_view v) -> std::optional<std::string> {
        xds.node.set_namespace_(std::string(v));
        return std::nullopt;
      },
      "the proxy's namespace (default \"default\")", "NS");
  flags.AddCustom(
      "node-id",
      [&xds](std::string_view v) -> std::optional<std::string> {
        xds.node.set_id(std::string(v));
        return std::nullopt;
      },
      "the proxy's id in proxy-status (default: hostname-pid)", "ID");
  flags.AddInt("concurrency", &concurrency, 1, 256, "worker threads (default: number of cores)");
  flags.AddCustom(
      "port-map",
      [&port_map](std::string_view v) -> std::optional<std::string> {
        for (const auto& pair : skiff::Split(v, ',')) {
          auto eq = pair.find('=');
          uint32_t from = 0;
          uint32_t to = 0;
          if (eq == std::string::npos || !ParsePort(pair.substr(0, eq), &from) ||
              !ParsePort(pair.substr(eq + 1), &to)) {
            return "expected PORT=LOCALPORT[,PORT=LOCALPORT...], e.g. 80=18080";
          }
          port_map[from] = to;
        }
        return std::nullopt;
      },
      "listen on LOCALPORT for listeners configured on PORT", "80=18080,...");
  std::map<std::string, std::string> address_map;
  flags.AddCustom(
      "address-map",
      [&address_map](std::string_view v) -> std::optional<std::string> {
        for (const auto& pair : skiff::Split(v, ',')) {
          auto eq = pair.find('=');
          unsigned char buf[16];
          if (eq == std::string::npos ||
              ::inet_pton(AF_INET, pair.substr(eq + 1).c_str(), buf) != 1) {
            return "expected ADDRESS=LOCALADDRESS[,...], e.g. 192.0.2.10=127.0.0.1";
          }
          address_map[pair.substr(0, eq)] = pair.substr(eq + 1);
        }
        return std::nullopt;
      },
      "connect to LOCALADDRESS for endpoints configured on ADDRESS (one-machine runs)",
      "192.0.2.10=127.0.0.1,...");
  flags.AddInt("admin-port", &admin_port, 0, 65535, "admin port on 127.0.0.1 (default 15000)");
  flags.AddString("admin-address", &admin_address, "admin address (default 127.0.0.1)", "ADDR");
  flags.AddString("server-name", &options.server_name, "the server header (default skiff)", "NAME");
  flags.AddDuration("request-header-timeout", &options.request_header_timeout,
                    "time to receive a request head before 408 (default 10s)");
  flags.AddDuration("idle-timeout", &options.idle_timeout,
                    "close idle client connections after this (default 5m)");
  flags.AddDuration("connect-timeout", &options.upstream_connect_timeout,
                    "upstream connect timeout before 503 UF (default 10s)");
  // Telemetry.
  skiff::telemetry::TelemetryOptions tel;
  bool disable_metrics = false;
  std::string access_log_format = "text";
  std::string workload;
  int64_t stats_port = -1;  // -1: 15090 if free (a second proxy on the machine skips it)
  std::string stats_address = "0.0.0.0";
  flags.AddString("access-log", &tel.access_log,
                  "write an access log (Envoy's default format) to PATH or stdout", "PATH");
  flags.AddCustom(
      "access-log-format",
      [&access_log_format](std::string_view v) -> std::optional<std::string> {
        if (v != "text" && v != "json") {
          return "expected text or json";
        }
        access_log_format = std::string(v);
        return std::nullopt;
      },
      "text (Envoy's default format, the default) or json", "FORMAT");
  flags.AddString("zipkin-address", &tel.zipkin_address,
                  "report sampled spans as Zipkin v2 JSON to this collector (Zipkin, Jaeger); "
                  "enables tracing",
                  "HOST:PORT");
  flags.AddCustom(
      "trace-sampling",
      [&tel](std::string_view v) -> std::optional<std::string> {
        char* end = nullptr;
        std::string s(v);
        double d = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !(d >= 0 && d <= 100)) {
          return "expected a percentage from 0 to 100";
        }
        tel.trace_sampling = d;
        return std::nullopt;
      },
      "percent of requests without a sampling decision to trace (default 1.0, as Istio)",
      "PERCENT");
  flags.AddBool("disable-metrics", &disable_metrics, "do not record Istio's request metrics");
  flags.AddString("workload", &workload,
                  "source_workload in metrics (default: istio-ingressgateway for gateways, "
                  "app-version from the labels for sidecars)",
                  "NAME");
  flags.AddInt("stats-port", &stats_port, 0, 65535,
               "Prometheus endpoint /stats/prometheus, as Istio's :15090 (default 15090 when "
               "free; 0 disables); /stats/prometheus on the admin port has the same");
  flags.AddString("stats-address", &stats_address, "stats listen address (default 0.0.0.0)",
                  "ADDR");
  int64_t max_regex_program_size = 100;
  flags.AddInt("max-regex-program-size", &max_regex_program_size, 1, 1000000,
               "reject regexes whose RE2 program is larger (default 100, as Envoy)");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  skiff::router::SetMaxRegexProgramSize(static_cast<int>(max_regex_program_size));
  skiff::proxy::SetAddressMap(address_map);
  skiff::SetupLogging("skiff-proxy", log_level);
  if (bootstrap.empty() == xds.address.empty()) {
    spdlog::error("pass exactly one configuration source: --bootstrap FILE or --xds HOST:PORT");
    return skiff::kExitUsage;
  }
  if (!xds.address.empty()) {
    if (xds.node.labels().empty() && xds.node.role() == "gateway") {
      (*xds.node.mutable_labels())["istio"] = "ingressgateway";
    }
    if (xds.node.id().empty()) {
      char host[256] = {0};
      ::gethostname(host, sizeof host - 1);
      xds.node.set_id(std::string(host) + "-" + std::to_string(::getpid()));
    }
    xds.port_map = port_map;
  }

  // Telemetry: source labels from the proxy's identity.
  {
    const auto& labels = xds.node.labels();
    auto label = [&labels](const char* k) -> std::string {
      auto it = labels.find(k);
      return it == labels.end() ? std::string() : it->second;
    };
    tel.metrics = !disable_metrics;
    tel.access_log_json = access_log_format == "json";
    tel.node_id = xds.node.id().empty() ? "skiff-proxy" : xds.node.id();
    tel.source.namespace_ = xds.node.namespace_().empty() ? "default" : xds.node.namespace_();
    tel.source.app = label("app");
    tel.source.version = label("version");
    if (!workload.empty()) {
      tel.source.workload = workload;
    } else if (xds.node.role() == "gateway") {
      tel.source.workload = "istio-ingressgateway";
      if (tel.source.app.empty()) {
        tel.source.app = "istio-ingressgateway";
      }
    } else if (!tel.source.app.empty()) {
      tel.source.workload =
          tel.source.version.empty() ? tel.source.app : tel.source.app + "-" + tel.source.version;
    }
  }
  std::string tel_error;
  auto telemetry = skiff::telemetry::Telemetry::Create(tel, &tel_error);
  if (telemetry == nullptr) {
    spdlog::error("{}", tel_error);
    return skiff::kExitUsage;
  }
  options.telemetry = telemetry.get();

  // Signals are handled by this thread only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  skiff::proxy::ConfigStore store;
  std::vector<std::unique_ptr<skiff::proxy::Worker>> workers;
  Reloader reloader{bootstrap, port_map, &store, &workers};
  if (check && bootstrap.empty()) {
    spdlog::error("--check needs --bootstrap FILE");
    return skiff::kExitUsage;
  }
  if (check) {
    skiff::v1::Snapshot snapshot;
    std::string error;
    if (!skiff::proxy::LoadSnapshotFile(bootstrap, &snapshot, &error) ||
        Config::Build(std::move(snapshot), port_map, 1, &error) == nullptr) {
      spdlog::error("{}", error);
      return EXIT_FAILURE;
    }
    spdlog::info("{} is a valid configuration", bootstrap);
    return EXIT_SUCCESS;
  }
  if (xds.address.empty() && !reloader.Load()) {
    return EXIT_FAILURE;
  }
  for (int i = 0; i < concurrency; ++i) {
    workers.push_back(std::make_unique<skiff::proxy::Worker>(i, options, &store));
  }
  for (auto& w : workers) {
    w->Start();
  }
  std::unique_ptr<skiff::proxy::XdsClient> xds_client;
  if (!xds.address.empty()) {
    xds_client = std::make_unique<skiff::proxy::XdsClient>(xds, &store, [&workers] {
      for (auto& w : workers) {
        w->Wake();
      }
    });
    xds_client->Start();
    spdlog::info("xDS: node {} ({}) streaming from {}{}", xds.node.id(), xds.node.role(),
                 xds.address, xds.delta ? " (delta)" : "");
  }

  // The proxy's counters (and, for Prometheus, Istio's request metrics first).
  auto stats_text = [&](bool prom) {
    std::string body;
    auto config = store.Get();
    if (prom) {
      telemetry->RenderMetrics(&body);
    }
    std::map<std::string, uint64_t> totals;
    for (const auto& w : workers) {
      const auto& s = w->stats();
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
    }
    totals["config_version"] = config ? config->version() : 0;
    if (xds_client != nullptr) {
      totals["xds_connected"] = xds_client->connected() ? 1 : 0;
      totals["xds_accepted"] = xds_client->accepted();
      totals["xds_rejected"] = xds_client->rejected();
    }
    {
      std::vector<std::pair<std::string, uint64_t>> extra;
      telemetry->AppendStats(&extra);
      for (auto& [name, v] : extra) {
        totals[name] = v;
      }
    }
    for (const auto& [name, v] : totals) {
      body += prom ? "skiff_" + name + " " + std::to_string(v) + "\n"
                   : name + ": " + std::to_string(v) + "\n";
    }
    // Per-cluster circuit breakers, retries, timeouts and outlier detection, with
    // Envoy's stat names.
    skiff::upstream::ClusterStateRegistry::Default().ForEach(
        [&](const std::string& cluster, const skiff::upstream::ClusterState& c) {
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
          emit("outlier_detection_ejections_enforced_total",
               get(c.outlier_ejections_enforced_total));
        });
    return body;
  };

  skiff::proxy::AdminServer admin(
      admin_address, static_cast<uint16_t>(admin_port),
      [&](const std::string& path) -> skiff::proxy::AdminServer::Response {
        skiff::proxy::AdminServer::Response r;
        auto config = store.Get();
        if (path == "/ready") {
          bool ok = config != nullptr;
          for (const auto& w : workers) {
            ok = ok && w->last_error().empty();
          }
          r.status = ok ? 200 : 503;
          r.body = ok ? "LIVE\n" : "NOT READY\n";
        } else if (path == "/config_dump") {
          std::string json;
          google::protobuf::util::JsonPrintOptions o;
          o.add_whitespace = true;
          if (config != nullptr) {
            (void)google::protobuf::util::MessageToJsonString(config->snapshot(), &json, o);
          }
          r.content_type = "application/json";
          r.body = "{\"version\": " + std::to_string(config ? config->version() : 0) +
                   ", \"snapshot\": " + (json.empty() ? "null" : json) + "}\n";
        } else if (path == "/clusters") {
          if (config != nullptr) {
            for (const auto& c : config->snapshot().endpoints()) {
              for (const auto& e : c.endpoints()) {
                r.body += c.cluster_name() + "::" + e.address() + ":" + std::to_string(e.port()) +
                          "::health_flags::" + (e.healthy() ? "healthy" : "/failed_eds_health") +
                          "\n";
              }
            }
          }
        } else if (path == "/stats" || path == "/stats/prometheus") {
          r.body = stats_text(path == "/stats/prometheus");
        } else {
          r.status = 404;
          r.body = "not found: " + path + "\n";
        }
        return r;
      });
  std::string error;
  if (!admin.Start(&error)) {
    spdlog::error("admin: {}", error);
    return EXIT_FAILURE;
  }
  spdlog::info("skiff-proxy serving with {} worker(s); admin on {}:{}", concurrency, admin_address,
               admin.port());
  // Istio's Prometheus port: /stats/prometheus only.
  std::unique_ptr<skiff::proxy::AdminServer> stats_server;
  if (stats_port != 0) {
    bool best_effort = stats_port < 0;
    stats_server = std::make_unique<skiff::proxy::AdminServer>(
        stats_address, static_cast<uint16_t>(best_effort ? 15090 : stats_port),
        [&](const std::string& path) -> skiff::proxy::AdminServer::Response {
          skiff::proxy::AdminServer::Response r;
          if (path == "/stats/prometheus" || path == "/metrics") {
            r.body = stats_text(true);
          } else {
            r.status = 404;
            r.body = "not found: " + path + "\n";
          }
          return r;
        });
    if (!stats_server->Start(&error)) {
      if (!best_effort) {
        spdlog::error("stats: {}", error);
        return EXIT_FAILURE;
      }
      spdlog::warn("stats: {}; Prometheus metrics only on the admin port", error);
      stats_server.reset();
    } else {
      spdlog::info("Prometheus metrics on {}:{}/stats/prometheus", stats_address,
                   stats_server->port());
    }
  }

  while (true) {
    timespec wait{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("stopping");
      break;
    }
    if (xds.address.empty() && (sig == SIGHUP || reloader.Changed())) {
      reloader.Load();
    }
  }
  if (xds_client != nullptr) {
    xds_client->Stop();
  }
  admin.Stop();
  if (stats_server != nullptr) {
    stats_server->Stop();
  }
  for (auto& w : workers) {
    w->Stop();
  }
  workers.clear();
  telemetry->Stop();  // delivers the access-log lines and spans still queued
  return EXIT_SUCCESS;
}

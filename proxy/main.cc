// skiff-proxy: the data-plane HTTP proxy.
#include <arpa/inet.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "common/logging.h"
#include "common/strings.h"
#include "proxy/admin/admin.h"
#include "proxy/capture/rules.h"
#include "proxy/config/bootstrap.h"
#include "proxy/config/config.h"
#include "proxy/server/worker.h"
#include "proxy/telemetry/telemetry.h"
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
  skiff::proxy::AdminOptions admin_options;
  std::chrono::milliseconds drain_time{1000};
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
  int64_t h2_streams = 100;
  flags.AddInt("http2-max-concurrent-streams", &h2_streams, 1, 65536,
               "SETTINGS_MAX_CONCURRENT_STREAMS of downstream HTTP/2 connections (default 100, as "
               "Envoy)");
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
  std::string listener_address;
  flags.AddCustom(
      "listener-address",
      [&listener_address](std::string_view v) -> std::optional<std::string> {
        unsigned char buf[16];
        std::string a(v);
        if (::inet_pton(AF_INET, a.c_str(), buf) != 1 &&
            ::inet_pton(AF_INET6, a.c_str(), buf) != 1) {
          return "expected an IP address, e.g. 127.0.0.1";
        }
        listener_address = a;
        return std::nullopt;
      },
      "bind every configured listener on ADDR instead of the address in its configuration "
      "(a Gateway's 0.0.0.0), e.g. 127.0.0.1 to serve only this machine",
      "ADDR");
  flags.AddInt("admin-port", &admin_options.admin_port, 0, 65535,
               "admin port on 127.0.0.1 (default 15000)");
  flags.AddString("admin-address", &admin_options.admin_address,
                  "admin address (default 127.0.0.1)", "ADDR");
  flags.AddInt("readiness-port", &admin_options.readiness_port, 0, 65535,
               "readiness endpoint /healthz/ready, as Istio's :15021 (default 15021 when free; "
               "0 disables)");
  flags.AddString("readiness-address", &admin_options.readiness_address,
                  "readiness listen address (default 0.0.0.0)", "ADDR");
  flags.AddDuration("drain-time", &drain_time,
                    "on SIGTERM stop accepting and let open connections finish for at most this "
                    "long, then exit (default 1s)");
  flags.AddInt("xds-max-response-bytes", &xds.max_response_bytes, 1, int64_t{1} << 31,
               "NACK an xDS response larger than this (default 536870912, 512 MiB)");
  flags.AddString("server-name", &options.server_name, "the server header (default skiff)", "NAME");
  flags.AddDuration("request-header-timeout", &options.request_header_timeout,
                    "time to receive a request head before 408 (default 10s)");
  flags.AddDuration("idle-timeout", &options.idle_timeout,
                    "close idle client connections after this (default 5m)");
  flags.AddDuration("connect-timeout", &options.upstream_connect_timeout,
                    "upstream connect timeout before 503 UF (default 10s)");
  flags.AddDuration("stream-idle-timeout", &options.stream_idle_timeout,
                    "end a request when no byte moved either way for this long: 408 before "
                    "the response started, a reset after (Envoy's stream_idle_timeout; "
                    "default 5m)");
  flags.AddCustom(
      "path-normalization",
      [&options](std::string_view v) -> std::optional<std::string> {
        auto mode = skiff::http::ParsePathNormalization(v);
        if (!mode) {
          return "expected none, base, merge_slashes or decode_and_merge_slashes";
        }
        options.path_normalization = *mode;
        return std::nullopt;
      },
      "request path normalization before routing when the configuration sets none, as "
      "Istio's pathNormalization: none, base (RFC 3986, the default), merge_slashes, "
      "decode_and_merge_slashes",
      "MODE");
  // Telemetry.
  skiff::telemetry::TelemetryOptions tel;
  bool disable_metrics = false;
  std::string access_log_format = "text";
  std::string workload;
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
  flags.AddInt("stats-port", &admin_options.stats_port, 0, 65535,
               "Prometheus endpoint /stats/prometheus, as Istio's :15090 (default 15090 when "
               "free; 0 disables); /stats/prometheus on the admin port has the same");
  flags.AddString("stats-address", &admin_options.stats_address,
                  "stats listen address (default 0.0.0.0)", "ADDR");
  std::string pod_name;
  std::string pod_labels_file;
  flags.AddString("pod-name", &pod_name,
                  "the sidecar's pod (default $POD_NAME, as the injector's downward API sets "
                  "it): names its workload and its node id",
                  "NAME");
  flags.AddString("pod-labels-file", &pod_labels_file,
                  "the pod's labels as a downward-API file (default $SKIFF_POD_LABELS_FILE); "
                  "used when --labels is not given",
                  "FILE");
  flags.AddCustom(
      "interception-mode",
      [&xds](std::string_view v) -> std::optional<std::string> {
        if (v != "REDIRECT" && v != "NONE") {
          return "expected REDIRECT or NONE";
        }
        xds.node.set_interception_mode(std::string(v));
        return std::nullopt;
      },
      "REDIRECT: the pod's traffic is redirected to this sidecar (skiff-init, as the "
      "injector sets it up), so its listeners serve by original destination and it gets the "
      "inbound listener 15006; NONE (default): apps use it as their HTTP proxy",
      "REDIRECT|NONE");
  int64_t max_regex_program_size = 100;
  flags.AddInt("max-regex-program-size", &max_regex_program_size, 1, 1000000,
               "reject regexes whose RE2 program is larger (default 100, as Envoy)");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  options.http2.max_concurrent_streams = static_cast<uint32_t>(h2_streams);
  skiff::router::SetMaxRegexProgramSize(static_cast<int>(max_regex_program_size));
  skiff::proxy::SetAddressMap(address_map);
  skiff::proxy::SetListenerAddress(listener_address);
  skiff::SetupLogging("skiff-proxy", log_level);
  if (bootstrap.empty() == xds.address.empty()) {
    spdlog::error("pass exactly one configuration source: --bootstrap FILE or --xds HOST:PORT");
    return skiff::kExitUsage;
  }
  // A sidecar's identity from the injected container's environment (downward API), when
  // no flag gives it.
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  if (!flags.WasSet("namespace") && !env("POD_NAMESPACE").empty()) {
    xds.node.set_namespace_(env("POD_NAMESPACE"));
  }
  if (pod_name.empty()) {
    pod_name = env("POD_NAME");
  }
  if (pod_labels_file.empty()) {
    pod_labels_file = env("SKIFF_POD_LABELS_FILE");
  }
  // An injected pod's rewritten probes, answered on the readiness port.
  admin_options.app_probers = env("SKIFF_KUBE_APP_PROBERS");
  admin_options.app_address = env("INSTANCE_IP");
  if (!flags.WasSet("labels") && !pod_labels_file.empty()) {
    std::ifstream f(pod_labels_file);
    std::stringstream text;
    text << f.rdbuf();
    std::map<std::string, std::string> labels;
    if (!f || skiff::capture::ParseAnnotationsFile(text.str(), &labels)) {
      spdlog::error("--pod-labels-file: cannot read labels from {}", pod_labels_file);
      return skiff::kExitUsage;
    }
    for (const auto& [k, v] : labels) {
      (*xds.node.mutable_labels())[k] = v;
    }
  }
  if (!xds.address.empty()) {
    xds.node.set_pod_name(pod_name);
    if (xds.node.id().empty() && !pod_name.empty()) {
      xds.node.set_id(pod_name + "." +
                      (xds.node.namespace_().empty() ? "default" : xds.node.namespace_()));
    }
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
    } else if (!pod_name.empty()) {
      tel.source.workload = skiff::telemetry::WorkloadOfPod(pod_name);
    } else if (!tel.source.app.empty()) {
      tel.source.workload =
          tel.source.version.empty() ? tel.source.app : tel.source.app + "-" + tel.source.version;
    }
  }
  // Inbound clusters report this workload as their destination.
  skiff::proxy::SetLocalIdentity(tel.source, pod_name);
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
  // Every admin port is bound before anything starts, so a port that is taken is an exit with
  // the address and the flag, not a half-started proxy.
  skiff::proxy::Admin admin(admin_options);
  {
    std::string error;
    if (!admin.Listen(&error)) {
      spdlog::error("{}", error);
      return EXIT_FAILURE;
    }
  }
  // The operator lists it, so `skiffctl proxy-config NODE-ID` finds this admin port.
  {
    std::string host = admin_options.admin_address;
    if (host == "0.0.0.0" || host.empty()) {
      host = "127.0.0.1";
    } else if (host == "::") {
      host = "::1";
    }
    if (host.find(':') != std::string::npos) {
      host = "[" + host + "]";
    }
    xds.node.set_admin_address(host + ":" + std::to_string(admin.admin_port()));
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
  admin.Start({&store, &workers, telemetry.get(), xds_client.get()});
  spdlog::info("skiff-proxy serving with {} worker(s); admin on {}:{}", concurrency,
               admin_options.admin_address, admin.admin_port());

  int stop_signal = 0;
  while (stop_signal == 0) {
    timespec wait{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig == SIGINT || sig == SIGTERM) {
      stop_signal = sig;
    } else if (xds.address.empty() && (sig == SIGHUP || reloader.Changed())) {
      reloader.Load();
    }
  }

  // Graceful shutdown: not ready any more, no new connections, the open ones get up to
  // --drain-time to finish; a second SIGTERM/SIGINT ends the wait.
  auto open_connections = [&workers] {
    uint64_t n = 0;
    for (const auto& w : workers) {
      n += w->open_connections();
    }
    return n;
  };
  admin.SetDraining();
  for (auto& w : workers) {
    w->Drain();
  }
  auto drain_until = std::chrono::steady_clock::now() + drain_time;
  spdlog::info("stopping: draining {} open connection(s) for at most {} ms", open_connections(),
               drain_time.count());
  while (open_connections() > 0 && std::chrono::steady_clock::now() < drain_until) {
    timespec tick{0, 10 * 1000 * 1000};
    int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      break;
    }
  }
  if (uint64_t left = open_connections(); left > 0) {
    spdlog::warn("stopping: closing {} connection(s) still open after the drain", left);
  }
  if (xds_client != nullptr) {
    xds_client->Stop();
  }
  admin.Stop();
  for (auto& w : workers) {
    w->Stop();
  }
  workers.clear();
  telemetry->Stop();  // delivers the access-log lines and spans still queued
  spdlog::info("stopped");
  return EXIT_SUCCESS;
}

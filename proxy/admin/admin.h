#pragma once
// The proxy's operational endpoints, each port served by its own bounded HTTP server
// (common/http_server.h: silent or slow clients cannot block it):
//   admin      127.0.0.1:15000 (--admin-port)      /, /ready, /config_dump, /clusters,
//                                                   /stats, /stats/prometheus
//   stats      0.0.0.0:15090 (--stats-port)         /stats/prometheus (Istio's merged port)
//   readiness  0.0.0.0:15021 (--readiness-port)     /healthz/ready (Istio's readiness port),
//                                                   /app-health/... (app_prober.h)
// An explicit port that is taken is an error (the proxy exits 1 naming the address and the
// flag); the stats and readiness defaults are used only when free (a second proxy on the
// machine runs without them, with a warning), and never shared with another process.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/http_server.h"
#include "proxy/admin/app_prober.h"

namespace skiff::telemetry {
class Telemetry;
}

namespace skiff::proxy {

class ConfigStore;
class Worker;
class XdsClient;

struct AdminOptions {
  std::string admin_address = "127.0.0.1";
  int64_t admin_port = 15000;  // 0 picks a free port (tests)
  std::string stats_address = "0.0.0.0";
  int64_t stats_port = -1;  // -1: 15090 when free; 0: off
  std::string readiness_address = "0.0.0.0";
  int64_t readiness_port = -1;  // -1: 15021 when free; 0: off
  // An injected pod's rewritten probes (SKIFF_KUBE_APP_PROBERS), served on the readiness
  // port, and the app's address (INSTANCE_IP; 127.0.0.1 when empty).
  std::string app_probers;
  std::string app_address;
};

// What the endpoints report on; set before Start.
struct AdminSources {
  const ConfigStore* store = nullptr;
  const std::vector<std::unique_ptr<Worker>>* workers = nullptr;
  const telemetry::Telemetry* telemetry = nullptr;
  const XdsClient* xds = nullptr;  // null when serving a --bootstrap file
};

class Admin {
 public:
  explicit Admin(AdminOptions options);
  ~Admin();

  // Binds every enabled port, before anything else starts. False with `error` ("address
  // already in use: 127.0.0.1:15000 (--admin-port)") when an explicitly chosen port cannot
  // be bound; a taken default stats/readiness port is logged and skipped.
  bool Listen(std::string* error);
  void Start(AdminSources sources);
  void Stop();
  // From now on /ready and /healthz/ready answer 503 DRAINING.
  void SetDraining() { draining_ = true; }

  [[nodiscard]] uint16_t admin_port() const;
  [[nodiscard]] uint16_t stats_port() const;      // 0 when not served
  [[nodiscard]] uint16_t readiness_port() const;  // 0 when not served

  // Empty when ready; otherwise why not: no complete configuration yet (and which types
  // are missing), a configured listener that cannot bind, draining.
  [[nodiscard]] std::string NotReady() const;
  // The proxy's counters as "name: value" lines or Prometheus text (with Istio's metrics).
  [[nodiscard]] std::string StatsText(bool prometheus) const;

  HttpResponse HandleAdmin(const HttpRequest& request) const;
  HttpResponse HandleStats(const HttpRequest& request) const;
  HttpResponse HandleReadiness(const HttpRequest& request) const;

 private:
  HttpResponse Ready() const;

  AdminOptions options_;
  AdminSources sources_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<HttpServer> admin_;
  std::unique_ptr<HttpServer> stats_;
  std::unique_ptr<HttpServer> readiness_;
  std::unique_ptr<AppProber> prober_;
};

}  // namespace skiff::proxy

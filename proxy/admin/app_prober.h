#pragma once
// The app's own health probes, for an injected pod whose kubelet probes were rewritten to
// the sidecar (as Istio's probe rewrite): GET :15021/app-health/<container>/livez (readyz,
// startupz) makes the sidecar probe the app the way the original probe did (an HTTP GET of
// its path and port, with its headers, or a TCP connect) and answer with the app's status
// (a connect failure or timeout is 503). Probes connect from 127.0.0.6 (IPv4), as Istio's
// agent, which the pod's capture rules let through to the app: a probe reaches the app
// itself, and a TCP probe is not answered by the sidecar's inbound listener in the app's
// place. (An IPv6 pod address is probed without that source: skiff-init's ::6 exclusion
// needs the address on the loopback interface.)
//
// One thread with non-blocking sockets serves every probe, each bounded by its
// timeoutSeconds (Kubernetes' default: 1 s), at most kMaxProbes at once.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/http_server.h"

namespace skiff::proxy {

struct AppProbe {
  enum class Kind { kHttp, kTcp };
  Kind kind = Kind::kHttp;
  uint16_t port = 0;
  std::string path = "/";                                    // HTTP
  std::vector<std::pair<std::string, std::string>> headers;  // HTTP
  std::chrono::milliseconds timeout{1000};
};

class AppProber {
 public:
  static constexpr size_t kMaxProbes = 32;

  AppProber() = default;
  ~AppProber();
  AppProber(const AppProber&) = delete;
  AppProber& operator=(const AppProber&) = delete;

  // Reads the probes from Istio's ISTIO_KUBE_APP_PROBERS JSON (the injector's
  // SKIFF_KUBE_APP_PROBERS): {"/app-health/app/livez": {"httpGet": {"path": "/health",
  // "port": 8080, "scheme": "HTTP", "httpHeaders": [...]}, "timeoutSeconds": 1}, ...}, and
  // the address of the app (the pod's IP; 127.0.0.1 when empty). False with `*error`.
  bool Configure(const std::string& probers_json, const std::string& app_address,
                 std::string* error);
  [[nodiscard]] bool empty() const { return probes_.empty(); }
  // The probe a readiness-port path stands for, or null.
  [[nodiscard]] const AppProbe* Find(const std::string& path) const;

  void Start();
  void Stop();
  // Probes the app; `reply` is called once, on the prober's thread (or at once when too
  // many probes run).
  void Probe(const AppProbe& probe, HttpReply reply);

 private:
  struct Running;
  void Run();

  std::map<std::string, AppProbe> probes_;
  std::string address_ = "127.0.0.1";
  std::mutex mu_;
  std::vector<std::pair<AppProbe, HttpReply>> queue_;
  size_t running_ = 0;  // queued or in flight
  bool stop_ = false;
  int wake_fd_ = -1;
  std::thread thread_;
};

}  // namespace skiff::proxy

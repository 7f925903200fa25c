// skiff-operator: watches Istio resources and serves proxy configuration over xDS.
// cpprest's U() macro would break fmt's templates.
#define _TURN_OFF_PLATFORM_STRING
#include <cpprest/http_listener.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/flags.h"
#include "common/logging.h"
#include "operator/source/file/watcher.h"
#include "operator/translate/translate.h"
#include "operator/xds/server.h"

namespace {

// Applies loaded inputs to the xDS server after a hold-off, so that a burst of changes
// becomes one push: waits until `holdoff` passed with no new change, or `max_wait` since
// the first pending change.
class Batcher {
 public:
  Batcher(skiff::xds::XdsServer* server, std::chrono::milliseconds holdoff,
          std::chrono::milliseconds max_wait)
      : server_(server), holdoff_(holdoff), max_wait_(max_wait) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Batcher() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void Submit(skiff::source::LoadResult loaded) {
    if (holdoff_.count() == 0) {
      Apply(std::move(loaded));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (!pending_) {
      first_ = now;
    }
    last_ = now;
    pending_ = std::move(loaded);
    cv_.notify_all();
  }

  std::atomic<uint64_t> applied{0};
  std::atomic<uint64_t> load_errors{0};
  std::atomic<uint64_t> invalid_resources{0};

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (!pending_) {
        cv_.wait(lock);
        continue;
      }
      auto due = std::min(last_ + holdoff_, first_ + max_wait_);
      if (std::chrono::steady_clock::now() < due) {
        cv_.wait_until(lock, due);
        continue;
      }
      auto loaded = std::move(*pending_);
      pending_.reset();
      lock.unlock();
      Apply(std::move(loaded));
      lock.lock();
    }
  }

  void Apply(skiff::source::LoadResult loaded) {
    for (const auto& e : loaded.errors) {
      spdlog::error("{}", e.Format());
    }
    load_errors = loaded.errors.size();
    auto translator = std::make_shared<skiff::translate::Translator>(std::move(loaded.objects));
    uint64_t invalid = 0;
    for (const auto& st : translator->Statuses()) {
      for (const auto& c : st.conditions) {
        if (c.status == "False") {
          ++invalid;
          spdlog::warn("{}: {}={} ({}): {}", st.Ref(), c.type, c.status, c.reason, c.message);
        }
      }
    }
    invalid_resources = invalid;
    server_->Update(std::move(translator));
    ++applied;
    spdlog::info("configuration applied ({} files, {} load errors)", loaded.files,
                 loaded.errors.size());
  }

  skiff::xds::XdsServer* server_;
  std::chrono::milliseconds holdoff_;
  std::chrono::milliseconds max_wait_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::optional<skiff::source::LoadResult> pending_;
  std::chrono::steady_clock::time_point first_, last_;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string log_level = "info";
  std::string config_dir;
  std::string xds_address = "0.0.0.0";
  int64_t xds_port = 15010;
  std::string metrics_address = "0.0.0.0";
  int64_t metrics_port = 15014;
  std::chrono::milliseconds holdoff{100};
  std::chrono::milliseconds watch_interval{300};
  skiff::FlagSet flags("skiff-operator",
                       "Watches networking.istio.io Gateway, VirtualService and DestinationRule "
                       "resources and\nserves proxy configuration over xDS (gRPC).");
  flags.AddString("config-dir", &config_dir,
                  "a directory (or file) of YAML/JSON manifests, watched for changes", "DIR");
  flags.AddString("xds-address", &xds_address, "xDS listen address (default 0.0.0.0)", "ADDR");
  flags.AddInt("xds-port", &xds_port, 0, 65535, "xDS gRPC port (default 15010)");
  flags.AddString("metrics-address", &metrics_address, "metrics listen address (default 0.0.0.0)",
                  "ADDR");
  flags.AddInt("metrics-port", &metrics_port, 0, 65535,
               "port of /metrics and /ready (default 15014; 0 disables)");
  flags.AddDuration("holdoff", &holdoff,
                    "batch changes for this long before pushing (default 100ms; 0 pushes at once)");
  flags.AddDuration("watch-interval", &watch_interval,
                    "how often --config-dir is checked for changes (default 300ms)");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  skiff::SetupLogging("skiff-operator", log_level);
  if (config_dir.empty()) {
    spdlog::error("no configuration source: pass --config-dir DIR");
    return skiff::kExitUsage;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  skiff::xds::XdsServer server;
  Batcher batcher(&server, holdoff, std::chrono::milliseconds(1000));
  skiff::source::DirectoryWatcher watcher(
      config_dir, watch_interval,
      [&](skiff::source::LoadResult r) { batcher.Submit(std::move(r)); });
  watcher.Start();

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(xds_address + ":" + std::to_string(xds_port),
                           grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(static_cast<skiff::v1::AggregatedDiscoveryService::Service*>(&server));
  builder.RegisterService(static_cast<skiff::v1::ProxyStatusService::Service*>(&server));
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || bound_port == 0) {
    spdlog::error("cannot listen for xDS on {}:{}", xds_address, xds_port);
    return EXIT_FAILURE;
  }
  spdlog::info("xDS (ADS, sotw and delta) on {}:{}", xds_address, bound_port);

  std::unique_ptr<web::http::experimental::listener::http_listener> metrics;
  if (metrics_port != 0) {
    std::string url = "http://" + metrics_address + ":" + std::to_string(metrics_port);
    metrics = std::make_unique<web::http::experimental::listener::http_listener>(url);
    metrics->support(web::http::methods::GET, [&](web::http::http_request req) {
      auto path = req.relative_uri().path();
      if (path == "/ready") {
        req.reply(batcher.applied > 0 ? 200 : 503, batcher.applied > 0 ? "ready\n" : "starting\n");
        return;
      }
      if (path != "/metrics") {
        req.reply(404, "not found\n");
        return;
      }
      const auto& m = server.metrics();
      std::string body;
      auto line = [&body](const char* name, const char* type, const char* help, uint64_t v) {
        body += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type +
                "\n" + name + " " + std::to_string(v) + "\n";
      };
      line("skiff_operator_xds_pushes_total", "counter", "xDS responses sent", m.pushes.load());
      line("skiff_operator_xds_acks_total", "counter", "xDS responses ACKed", m.acks.load());
      line("skiff_operator_xds_rejects_total", "counter", "xDS responses NACKed by proxies",
           m.nacks.load());
      line("skiff_operator_connected_proxies", "gauge", "open xDS streams", m.connected.load());
      line("skiff_operator_xds_streams_total", "counter", "xDS streams opened",
           m.streams_total.load());
      line("skiff_operator_translations_total", "counter", "group snapshots computed",
           m.translations.load());
      line("skiff_operator_translation_microseconds_total", "counter",
           "time spent computing group snapshots", m.translation_us_total.load());
      line("skiff_operator_config_applies_total", "counter", "input sets applied",
           batcher.applied.load());
      line("skiff_operator_config_load_errors", "gauge", "files/documents that failed to load",
           batcher.load_errors.load());
      line("skiff_operator_invalid_resources", "gauge", "resources with a False condition",
           batcher.invalid_resources.load());
      web::http::http_response resp(200);
      resp.headers().set_content_type("text/plain; version=0.0.4");
      resp.set_body(body);
      req.reply(resp);
    });
    try {
      metrics->open().wait();
      spdlog::info("metrics on {}/metrics", url);
    } catch (const std::exception& e) {
      spdlog::error("cannot listen for metrics on {}: {}", url, e.what());
      return EXIT_FAILURE;
    }
  }

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("stopping");
  watcher.Stop();
  server.Shutdown();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics) {
    metrics->close().wait();
  }
  return EXIT_SUCCESS;
}

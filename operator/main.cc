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
#include "operator/source/kube/source.h"
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

  // Called after each translation with the statuses (the Kubernetes source writes them).
  std::function<void(const std::vector<skiff::translate::ResourceStatus>&)> on_statuses;

  skiff::xds::MsHistogram translation_time;  // objects -> index + statuses (all groups)
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
    auto started = std::chrono::steady_clock::now();
    auto translator = std::make_shared<skiff::translate::Translator>(std::move(loaded.objects));
    translation_time.Observe(std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started));
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
    if (on_statuses) {
      on_statuses(translator->Statuses());
    }
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
  std::string kubeconfig;
  std::string kube_context;
  skiff::kube::SourceOptions kube;
  bool no_leader_election = false;
  flags.AddString("kubeconfig", &kubeconfig,
                  "watch the Kubernetes API with this kubeconfig (default: in-cluster config, "
                  "then $KUBECONFIG, then ~/.kube/config) when --config-dir is not given",
                  "FILE");
  flags.AddString("kube-context", &kube_context, "kubeconfig context (default: current)", "NAME");
  flags.AddString("namespace", &kube.namespace_, "watch only this namespace (default: all)", "NS");
  flags.AddString("istio-api-version", &kube.istio_version,
                  "networking.istio.io version to watch and write status to (default v1)",
                  "VERSION");
  flags.AddString("leader-election-namespace", &kube.lease_namespace,
                  "namespace of the leader Lease (default: the operator's own, else "
                  "skiff-system)",
                  "NS");
  flags.AddString("leader-election-id", &kube.lease_name,
                  "name of the leader Lease (default skiff-operator)", "NAME");
  flags.AddString("identity", &kube.identity,
                  "this replica's identity in the Lease (default: $POD_NAME, else hostname-pid)",
                  "ID");
  flags.AddBool("no-leader-election", &no_leader_election,
                "never write status or events (a read-only replica)");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  skiff::SetupLogging("skiff-operator", log_level);
  kube.leader_election = !no_leader_election;
  std::unique_ptr<skiff::kube::Client> kube_client;
  if (config_dir.empty()) {
    std::string error;
    auto cluster = skiff::kube::LoadClusterConfig(kubeconfig, kube_context, &error);
    if (!cluster) {
      spdlog::error("{}", error);
      spdlog::error("pass --config-dir DIR to run from manifests on disk instead");
      return skiff::kExitUsage;
    }
    spdlog::info("kube: {} at {}", cluster->source, cluster->server);
    kube_client = std::make_unique<skiff::kube::Client>(std::move(*cluster));
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  skiff::xds::XdsServer server;
  Batcher batcher(&server, holdoff, std::chrono::milliseconds(1000));
  std::unique_ptr<skiff::source::DirectoryWatcher> watcher;
  std::unique_ptr<skiff::kube::Source> kube_source;
  if (kube_client != nullptr) {
    kube_source = std::make_unique<skiff::kube::Source>(
        std::move(kube_client), kube,
        [&](skiff::source::LoadResult r) { batcher.Submit(std::move(r)); });
    batcher.on_statuses = [&kube_source](const auto& statuses) {
      kube_source->OnStatuses(statuses);
    };
    kube_source->Start();
  } else {
    watcher = std::make_unique<skiff::source::DirectoryWatcher>(
        config_dir, watch_interval,
        [&](skiff::source::LoadResult r) { batcher.Submit(std::move(r)); });
    watcher->Start();
  }

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
      body += m.push_time.Render("skiff_operator_xds_push_time_milliseconds",
                                 "time to compute the snapshots of a change and start its "
                                 "pushes to every connected proxy");
      body += batcher.translation_time.Render(
          "skiff_operator_translation_time_milliseconds",
          "time to index, validate and check the inputs of a change");
      line("skiff_operator_config_load_errors", "gauge", "files/documents that failed to load",
           batcher.load_errors.load());
      line("skiff_operator_invalid_resources", "gauge", "resources with a False condition",
           batcher.invalid_resources.load());
      if (kube_source != nullptr) {
        const auto& k = kube_source->metrics();
        line("skiff_operator_watch_restarts_total", "counter",
             "Kubernetes watches that ended and were restarted", k.watch_restarts.load());
        line("skiff_operator_relists_total", "counter", "Kubernetes lists after 410 Gone or errors",
             k.relists.load());
        line("skiff_operator_watch_errors_total", "counter",
             "Kubernetes watches that failed or ended at once", k.watch_errors.load());
        line("skiff_operator_watch_events_total", "counter", "Kubernetes watch events",
             k.events_received.load());
        line("skiff_operator_status_writes_total", "counter", "status subresource patches",
             k.status_writes.load());
        line("skiff_operator_status_write_errors_total", "counter",
             "failed status subresource patches", k.status_write_errors.load());
        line("skiff_operator_k8s_events_total", "counter", "Kubernetes Events created",
             k.k8s_events_created.load());
        line("skiff_operator_leader", "gauge", "1 while this replica holds the Lease",
             static_cast<uint64_t>(k.leader.load()));
      }
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
  if (watcher != nullptr) {
    watcher->Stop();
  }
  if (kube_source != nullptr) {
    kube_source->Stop();
  }
  server.Shutdown();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics) {
    metrics->close().wait();
  }
  return EXIT_SUCCESS;
}

// skiff-operator: watches Istio resources and serves proxy configuration over xDS.
#include <grpc/grpc.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/flags.h"
#include "common/http_server.h"
#include "common/logging.h"
#include "common/strings.h"
#include "operator/api/names.h"
#include "operator/source/file/watcher.h"
#include "operator/source/kube/source.h"
#include "operator/status/leader_election.h"
#include "operator/status/status_writer.h"
#include "operator/store/object_store.h"
#include "operator/translate/translate.h"
#include "operator/webhook/admission.h"
#include "operator/webhook/cert_store.h"
#include "operator/webhook/server.h"
#include "operator/xds/server.h"

namespace {

// The stage after the store: an update of the inputs becomes a translation (statuses for
// the status writer, snapshots for the xDS server), or, when only EndpointSlices and Pods
// changed, new endpoints alone.
class Pipeline {
 public:
  explicit Pipeline(skiff::xds::XdsServer* server) : server_(server) {}

  // Called after each translation with the statuses (the Kubernetes source writes them).
  std::function<void(const std::vector<skiff::translate::ResourceStatus>&)> on_statuses;
  // The invalid resources and what is served in their place (the store's last good).
  std::function<skiff::store::ConfigStatus()> config_status;

  skiff::translate::MeshConfig mesh;         // set before the first Apply
  skiff::xds::MsHistogram translation_time;  // objects -> index + statuses (all groups)
  std::atomic<uint64_t> applied{0};
  std::atomic<uint64_t> endpoint_applies{0};  // of which only endpoints changed
  std::atomic<uint64_t> load_errors{0};
  std::atomic<uint64_t> invalid_resources{0};

  void Apply(skiff::store::StoreUpdate update) {
    skiff::source::LoadResult& loaded = update.inputs;
    for (const auto& e : loaded.errors) {
      spdlog::error("{}", e.Format());
    }
    for (const auto& w : loaded.warnings) {
      spdlog::warn("{}", w.Format());
    }
    load_errors = loaded.errors.size();
    auto config = config_status();
    for (const auto& e : config.resources) {
      spdlog::error("{}: invalid ({}): {}; {}", e.Ref(), e.origin, skiff::Join(e.errors, "; "),
                    e.serving_last_good
                        ? "its last valid version (" + e.last_good_origin + ") is still served"
                        : std::string("not served (no earlier valid version)"));
    }
    for (const auto& k : config.kept_from_broken) {
      spdlog::warn("{}: its file does not decode; its last good version is still served", k);
    }
    if (update.endpoints_only) {
      // Only EndpointSlices and Pods changed: the routes, clusters and statuses stay; the
      // endpoints of every connected group are recomputed and pushed alone.
      std::erase_if(loaded.objects, [](const skiff::api::Object& o) {
        return o.kind != skiff::api::Kind::kService && o.kind != skiff::api::Kind::kEndpointSlice &&
               o.kind != skiff::api::Kind::kPod && o.kind != skiff::api::Kind::kDestinationRule &&
               o.kind != skiff::api::Kind::kServiceEntry;
      });
      server_->UpdateEndpoints(
          std::make_shared<skiff::translate::EndpointTranslator>(std::move(loaded.objects)));
      ++applied;
      ++endpoint_applies;
      spdlog::info("endpoints applied ({} files, {} load errors)", loaded.files,
                   loaded.errors.size());
      return;
    }
    auto started = std::chrono::steady_clock::now();
    auto translator =
        std::make_shared<skiff::translate::Translator>(std::move(loaded.objects), mesh);
    translation_time.Observe(std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - started));
    uint64_t invalid = 0;
    for (const auto& st : translator->Statuses()) {
      for (const auto& c : st.conditions) {
        if (c.status == "False" && c.type != "Accepted") {  // Accepted=False: logged above
          spdlog::warn("{}: {}={} ({}): {}", st.Ref(), c.type, c.status, c.reason, c.message);
        } else if (c.reason == "UnsupportedValue") {
          spdlog::warn("{}: {}", st.Ref(), c.message);
        }
      }
      invalid += st.Accepted() ? 0 : 1;
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

 private:
  skiff::xds::XdsServer* server_;
};

// The operator's metrics in Prometheus text.
std::string MetricsText(const skiff::xds::XdsServer& server, const Pipeline& pipeline,
                        const skiff::store::ObjectStore& store,
                        const skiff::kube::Source* kube_source,
                        const skiff::status::LeaderElection* lease,
                        const skiff::status::StatusWriter* status_writer,
                        const skiff::HttpServerStats& http,
                        const skiff::webhook::TlsServer* webhook,
                        const skiff::webhook::KubeCertStore* cert_store) {
  const auto& m = server.metrics();
  std::string body;
  auto line = [&body](const char* name, const char* type, const char* help, uint64_t v) {
    body += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
            name + " " + std::to_string(v) + "\n";
  };
  line("skiff_operator_xds_pushes_total", "counter", "xDS responses sent", m.pushes.load());
  line("skiff_operator_xds_acks_total", "counter", "xDS responses ACKed", m.acks.load());
  line("skiff_operator_xds_rejects_total", "counter", "xDS responses NACKed by proxies",
       m.nacks.load());
  line("skiff_operator_connected_proxies", "gauge", "open xDS streams", m.connected.load());
  line("skiff_operator_xds_streams_total", "counter", "xDS streams opened", m.streams_total.load());
  line("skiff_operator_xds_proxy_groups", "gauge",
       "proxy groups in the snapshot cache (groups with a connected proxy)", m.groups.load());
  line("skiff_operator_xds_streams_refused_total", "counter",
       "xDS streams refused by --max-proxy-groups or --max-xds-streams", m.refused.load());
  line("skiff_operator_translations_total", "counter", "group snapshots computed",
       m.translations.load());
  line("skiff_operator_endpoint_translations_total", "counter",
       "group endpoints recomputed alone, without translating routes (EndpointSlice and Pod "
       "changes)",
       m.endpoint_translations.load());
  line("skiff_operator_translation_microseconds_total", "counter",
       "time spent computing group snapshots", m.translation_us_total.load());
  line("skiff_operator_config_applies_total", "counter", "input sets applied",
       pipeline.applied.load());
  line("skiff_operator_endpoint_applies_total", "counter",
       "input sets applied in which only EndpointSlices and Pods changed",
       pipeline.endpoint_applies.load());
  const auto& st = store.metrics();
  line("skiff_operator_store_objects", "gauge", "objects in the store", st.objects.load());
  line("skiff_operator_store_changes_total", "counter",
       "objects added, changed or deleted in the store", st.changes.load());
  line("skiff_operator_store_unchanged_total", "counter",
       "objects a source handed in equal to the stored ones (ignoring resourceVersion): no-ops",
       st.unchanged.load());
  body +=
      "# HELP skiff_operator_xds_type_pushes_total xDS responses sent, by resource type\n"
      "# TYPE skiff_operator_xds_type_pushes_total counter\n";
  for (size_t i = 0; i < skiff::xds::kTypeOrder.size(); ++i) {
    body += "skiff_operator_xds_type_pushes_total{type=\"" +
            skiff::xds::ShortType(skiff::xds::kTypeOrder[i]) + "\"} " +
            std::to_string(m.type_pushes[i].load()) + "\n";
  }
  body += m.push_time.Render("skiff_operator_xds_push_time_milliseconds",
                             "time to compute the snapshots of a change and start its pushes to "
                             "every connected proxy");
  body +=
      pipeline.translation_time.Render("skiff_operator_translation_time_milliseconds",
                                       "time to index, validate and check the inputs of a change");
  line("skiff_operator_config_load_errors", "gauge", "files/documents that failed to load",
       pipeline.load_errors.load());
  line("skiff_operator_invalid_resources", "gauge",
       "Istio resources whose current version is not accepted", pipeline.invalid_resources.load());
  {
    auto config = store.Status();
    body +=
        "# HELP skiff_operator_config_errors errors in the current version of a resource "
        "(its last valid version, if any, is served)\n"
        "# TYPE skiff_operator_config_errors gauge\n";
    for (const auto& e : config.resources) {
      body += "skiff_operator_config_errors{kind=\"" + std::string(skiff::api::KindName(e.kind)) +
              "\",namespace=\"" + e.namespace_ + "\",name=\"" + e.name + "\",served=\"" +
              (e.serving_last_good ? "last-good" : "none") + "\"} " +
              std::to_string(e.errors.size()) + "\n";
    }
  }
  if (webhook != nullptr) {
    const auto& w = webhook->metrics();
    line("skiff_operator_webhook_requests_total", "counter", "admission requests served",
         w.requests.load());
    line("skiff_operator_webhook_connections_total", "counter", "webhook connections accepted",
         w.connections.load());
    line("skiff_operator_webhook_rejected_connections_total", "counter",
         "webhook connections closed at accept (no certificate yet, or at the limit)",
         w.rejected_connections.load());
    line("skiff_operator_webhook_handshake_failures_total", "counter",
         "webhook TLS handshakes that failed or timed out", w.handshake_failures.load());
    if (cert_store != nullptr) {
      line("skiff_operator_webhook_ca_bundle_updates_total", "counter",
           "caBundle updates of the webhook configurations", cert_store->ca_bundle_updates.load());
    }
  }
  line("skiff_operator_http_connections", "gauge", "open connections to this port",
       http.active.load());
  line("skiff_operator_http_header_too_large_total", "counter",
       "requests answered 431 (head over 64 KiB)", http.head_too_large.load());
  line("skiff_operator_http_header_timeouts_total", "counter",
       "connections answered 408 (no complete head in time)", http.head_timeouts.load());
  line("skiff_operator_http_evicted_total", "counter",
       "connections closed to make room for new ones", http.evicted.load());
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
  }
  if (status_writer != nullptr) {
    const auto& w = status_writer->metrics();
    line("skiff_operator_status_writes_total", "counter", "status subresource patches",
         w.status_writes.load());
    line("skiff_operator_status_write_errors_total", "counter", "failed status subresource patches",
         w.status_write_errors.load());
    line("skiff_operator_k8s_events_total", "counter", "Kubernetes Events created",
         w.k8s_events_created.load());
    line("skiff_operator_leader", "gauge", "1 while this replica holds the Lease",
         static_cast<uint64_t>(lease != nullptr && lease->leader() ? 1 : 0));
  }
  return body;
}

// `skiffctl status`: the invalid inputs and what is served in their place.
class ConfigStatusServiceImpl final : public skiff::v1::ConfigStatusService::Service {
 public:
  ConfigStatusServiceImpl(const skiff::store::ObjectStore* store, std::string source)
      : store_(store), source_(std::move(source)) {}

  grpc::Status GetConfigStatus(grpc::ServerContext*, const skiff::v1::ConfigStatusRequest*,
                               skiff::v1::ConfigStatusResponse* resp) override {
    auto config = store_->Status();
    for (const auto& e : config.resources) {
      auto* r = resp->add_resources();
      r->set_kind(skiff::api::KindName(e.kind));
      r->set_namespace_(e.namespace_);
      r->set_name(e.name);
      r->set_origin(e.origin);
      for (const auto& text : e.errors) {
        r->add_errors(text);
      }
      r->set_serving_last_good(e.serving_last_good);
      r->set_last_good_origin(e.last_good_origin);
    }
    for (const auto& d : config.documents) {
      resp->add_document_errors(d.Format());
    }
    for (const auto& k : config.kept_from_broken) {
      resp->add_kept_from_broken_files(k);
    }
    resp->set_applies(config.applies);
    resp->set_source(source_);
    return grpc::Status::OK;
  }

 private:
  const skiff::store::ObjectStore* store_;
  std::string source_;
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
               "port of /metrics, /ready and /healthz (default 15014; 0 disables)");
  int64_t max_proxy_groups = 4096;
  flags.AddInt("max-proxy-groups", &max_proxy_groups, 1, 10000000,
               "proxy groups (role, labels, namespace) with connected proxies that the snapshot "
               "cache holds at most; a proxy of a further group is refused (default 4096)");
  int64_t max_xds_streams = 65536;
  flags.AddInt("max-xds-streams", &max_xds_streams, 1, 10000000,
               "open xDS streams at most; further streams are refused (default 65536)");
  flags.AddDuration("holdoff", &holdoff,
                    "batch changes for this long before pushing (default 100ms; 0 pushes at once)");
  flags.AddDuration("watch-interval", &watch_interval,
                    "how often --config-dir is polled for changes where inotify cannot watch it "
                    "(default 300ms; changes are otherwise noticed at once)");
  std::string kubeconfig;
  std::string kube_context;
  skiff::kube::SourceOptions kube;
  skiff::status::LeaseOptions lease_options;
  lease_options.namespace_.clear();  // default: the operator's own, else skiff-system
  bool no_leader_election = false;
  flags.AddString("kubeconfig", &kubeconfig,
                  "watch the Kubernetes API with this kubeconfig (default: in-cluster config, "
                  "then $KUBECONFIG, then ~/.kube/config) when --config-dir is not given",
                  "FILE");
  flags.AddString("kube-context", &kube_context, "kubeconfig context (default: current)", "NAME");
  flags.AddString("namespace", &kube.namespace_, "watch only this namespace (default: all)", "NS");
  flags.AddStringList("secret-namespaces", &kube.secret_namespaces,
                      "watch TLS Secrets (Gateway credentialName) only in these namespaces, "
                      "one watch each, so that a Role in each is all the access needed "
                      "(default: as --namespace)",
                      "NS,...");
  flags.AddString("istio-api-version", &kube.istio_version,
                  "networking.istio.io version to watch and write status to (default v1)",
                  "VERSION");
  flags.AddString("leader-election-namespace", &lease_options.namespace_,
                  "namespace of the leader Lease (default: the operator's own, else "
                  "skiff-system)",
                  "NS");
  flags.AddString("leader-election-id", &lease_options.name,
                  "name of the leader Lease (default skiff-operator)", "NAME");
  flags.AddString("identity", &lease_options.identity,
                  "this replica's identity in the Lease (default: $POD_NAME, else hostname-pid)",
                  "ID");
  flags.AddBool("no-leader-election", &no_leader_election,
                "never write status or events (a read-only replica)");
  int64_t webhook_port = -1;  // 15017 on Kubernetes, off with --config-dir
  std::string webhook_address = "0.0.0.0";
  std::string webhook_config = "skiff-validation";
  std::string webhook_secret = "skiff-webhook-certs";
  std::string webhook_service = "skiff-operator";
  std::string webhook_cert_dir;
  std::vector<std::string> webhook_names;
  flags.AddInt("webhook-port", &webhook_port, -1, 65535,
               "admission webhooks port: validation and sidecar injection (TLS; default 15017 "
               "on Kubernetes, off with --config-dir; 0 disables)");
  flags.AddString("webhook-address", &webhook_address, "webhook listen address (default 0.0.0.0)",
                  "ADDR");
  flags.AddString("webhook-config", &webhook_config,
                  "the ValidatingWebhookConfiguration whose caBundle the leader keeps current "
                  "(default skiff-validation)",
                  "NAME");
  flags.AddString("webhook-secret", &webhook_secret,
                  "the Secret (in the leader election namespace) that keeps the webhook's CA and "
                  "certificate (default skiff-webhook-certs)",
                  "NAME");
  flags.AddString("webhook-service", &webhook_service,
                  "the Service in front of the webhook, for the certificate's names (default "
                  "skiff-operator)",
                  "NAME");
  flags.AddString("webhook-cert-dir", &webhook_cert_dir,
                  "with --config-dir: keep the webhook's CA and certificate in this directory "
                  "(ca.crt, ca.key, tls.crt, tls.key)",
                  "DIR");
  std::string injection_config = "skiff-injection";
  skiff::inject::InjectOptions inject_options;
  std::string injection_xds_address;  // default: the operator's Service in its namespace
  flags.AddString("injection-webhook-config", &injection_config,
                  "the MutatingWebhookConfiguration of sidecar injection whose caBundle the "
                  "leader keeps current (default skiff-injection; \"\" for none)",
                  "NAME");
  flags.AddString("proxy-image", &inject_options.proxy_image,
                  "the image of the injected skiff-proxy and skiff-init containers (default "
                  "skiff-proxy:latest, as docker/Dockerfile's proxy target builds it)",
                  "IMAGE");
  flags.AddString("injection-xds-address", &injection_xds_address,
                  "the xDS address injected sidecars connect to (default: "
                  "<--webhook-service>.<namespace>.svc:<--xds-port>)",
                  "HOST:PORT");
  flags.AddStringList("webhook-name", &webhook_names,
                      "another DNS name or IP the webhook certificate is for (repeatable; "
                      "localhost, 127.0.0.1 and ::1 always are)",
                      "NAME");
  skiff::translate::MeshConfig mesh;
  flags.AddCustom(
      "outbound-traffic-policy",
      [&mesh](std::string_view v) -> std::optional<std::string> {
        if (v == "ALLOW_ANY") {
          mesh.outbound_traffic_policy =
              skiff::translate::MeshConfig::OutboundTrafficPolicy::kAllowAny;
        } else if (v == "REGISTRY_ONLY") {
          mesh.outbound_traffic_policy =
              skiff::translate::MeshConfig::OutboundTrafficPolicy::kRegistryOnly;
        } else {
          return "expected ALLOW_ANY or REGISTRY_ONLY";
        }
        return std::nullopt;
      },
      "Istio's meshConfig.outboundTrafficPolicy for captured sidecars: a connection to a "
      "destination that is no Service passes through (ALLOW_ANY, the default) or is refused "
      "(REGISTRY_ONLY)",
      "ALLOW_ANY|REGISTRY_ONLY");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  if (webhook_port < 0) {
    webhook_port = config_dir.empty() ? 15017 : 0;
  }
  ::signal(SIGPIPE, SIG_IGN);  // a peer that goes away must not kill the operator
  skiff::SetupLogging("skiff-operator", log_level);
  if (lease_options.identity.empty()) {
    lease_options.identity = skiff::status::DefaultIdentity();
  }
  std::unique_ptr<skiff::kube::Client> kube_client;
  std::unique_ptr<skiff::kube::Client> status_client;
  std::unique_ptr<skiff::kube::Client> lease_client;
  std::unique_ptr<skiff::kube::Client> webhook_client;
  if (config_dir.empty()) {
    std::string error;
    auto cluster = skiff::kube::LoadClusterConfig(kubeconfig, kube_context, &error);
    if (!cluster) {
      spdlog::error("{}", error);
      spdlog::error("pass --config-dir DIR to run from manifests on disk instead");
      return skiff::kExitUsage;
    }
    spdlog::info("kube: {} at {}", cluster->source, cluster->server);
    if (webhook_port != 0) {
      webhook_client = std::make_unique<skiff::kube::Client>(*cluster);
    }
    if (lease_options.namespace_.empty()) {
      lease_options.namespace_ = cluster->namespace_.empty() ? "skiff-system" : cluster->namespace_;
    }
    status_client = std::make_unique<skiff::kube::Client>(*cluster);
    if (!no_leader_election) {
      lease_client = std::make_unique<skiff::kube::Client>(*cluster);
    }
    kube_client = std::make_unique<skiff::kube::Client>(std::move(*cluster));
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Both ports are taken before anything starts, so a port in use is an exit with the address
  // and the flag. Neither is shared with another process: the metrics server never sets
  // SO_REUSEPORT, and gRPC's (grpc.so_reuseport, on by default) is turned off below; a probe
  // bind first gives the precise reason, which gRPC does not report.
  std::unique_ptr<skiff::HttpServer> http;
  std::function<skiff::HttpResponse(const skiff::HttpRequest&)> http_handler;
  if (metrics_port != 0) {
    skiff::HttpServerOptions o;
    o.address = metrics_address;
    o.port = static_cast<uint16_t>(metrics_port);
    o.flag = "--metrics-port";
    http = std::make_unique<skiff::HttpServer>(
        o, [&http_handler](const skiff::HttpRequest& r) { return http_handler(r); });
    std::string error;
    if (!http->Listen(&error)) {
      spdlog::error("{}", error);
      return EXIT_FAILURE;
    }
  }
  {
    std::string error;
    int probe =
        skiff::ListenExclusive(xds_address, static_cast<uint16_t>(xds_port), "--xds-port", &error);
    if (probe < 0) {
      spdlog::error("{}", error);
      return EXIT_FAILURE;
    }
    ::close(probe);
  }

  skiff::xds::XdsServerOptions xds_options;
  xds_options.max_groups = static_cast<size_t>(max_proxy_groups);
  xds_options.max_streams = static_cast<size_t>(max_xds_streams);
  skiff::xds::XdsServer server(xds_options);
  Pipeline pipeline(&server);
  pipeline.mesh = mesh;
  skiff::store::StoreOptions store_options;
  store_options.holdoff = holdoff;
  skiff::store::ObjectStore store(
      store_options, [&pipeline](skiff::store::StoreUpdate u) { pipeline.Apply(std::move(u)); });
  pipeline.config_status = [&store] { return store.Status(); };
  std::unique_ptr<skiff::source::FileSource> file_source;
  std::unique_ptr<skiff::kube::ObservedObjects> observed;
  std::unique_ptr<skiff::status::LeaderElection> lease;
  std::unique_ptr<skiff::status::StatusWriter> status_writer;
  std::unique_ptr<skiff::kube::Source> kube_source;

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(xds_address + ":" + std::to_string(xds_port),
                           grpc::InsecureServerCredentials(), &bound_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Responses (snapshots) may be large: no send limit. Requests are small except a delta
  // proxy's initial_resource_versions, which lists every resource it has.
  builder.SetMaxSendMessageSize(-1);
  builder.SetMaxReceiveMessageSize(16 << 20);
  builder.RegisterService(static_cast<skiff::v1::AggregatedDiscoveryService::Service*>(&server));
  builder.RegisterService(static_cast<skiff::v1::ProxyStatusService::Service*>(&server));
  ConfigStatusServiceImpl config_status(&store,
                                        config_dir.empty() ? "kubernetes" : "files " + config_dir);
  builder.RegisterService(&config_status);
  std::unique_ptr<grpc::Server> grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || bound_port == 0) {
    spdlog::error("cannot listen on {}:{} (--xds-port): gRPC could not bind it", xds_address,
                  xds_port);
    return EXIT_FAILURE;
  }
  spdlog::info("xDS (ADS, sotw and delta) on {}:{}", xds_address, bound_port);

  if (kube_client != nullptr) {
    // Reflectors -> store; translations -> status writer (leader only) -> status subresource.
    observed = std::make_unique<skiff::kube::ObservedObjects>();
    skiff::status::StatusWriterOptions so;
    so.istio_version = kube.istio_version;
    so.identity = lease_options.identity;
    status_writer = std::make_unique<skiff::status::StatusWriter>(
        std::move(status_client), so, observed.get(),
        [&lease] { return lease != nullptr && lease->leader(); });
    observed->on_status_changed = [w = status_writer.get()](const std::string& key) {
      w->Recheck(key);
    };
    pipeline.on_statuses = [w = status_writer.get()](const auto& statuses) { w->Submit(statuses); };
    status_writer->Start();
    if (lease_client != nullptr) {
      lease = std::make_unique<skiff::status::LeaderElection>(
          std::move(lease_client), lease_options, [w = status_writer.get()](bool leader) {
            if (leader) {
              w->OnLeader();
            }
          });
      lease->Start();
    }
    kube_source =
        std::make_unique<skiff::kube::Source>(std::move(kube_client), kube, &store, observed.get());
    kube_source->Start();
  } else {
    file_source = std::make_unique<skiff::source::FileSource>(config_dir, watch_interval, &store);
    file_source->Start();
  }

  // The validating admission webhook: POST /validate over TLS.
  std::unique_ptr<skiff::webhook::TlsServer> webhook;
  std::unique_ptr<skiff::webhook::KubeCertStore> cert_store;
  if (webhook_port != 0) {
    skiff::webhook::ServerOptions wo;
    wo.address = webhook_address;
    wo.port = static_cast<int>(webhook_port);
    std::string ns = lease_options.namespace_.empty() ? "default" : lease_options.namespace_;
    inject_options.xds_address =
        !injection_xds_address.empty()
            ? injection_xds_address
            : webhook_service + "." + ns + ".svc:" + std::to_string(xds_port);
    webhook = std::make_unique<skiff::webhook::TlsServer>(
        wo, [inject_options](const std::string& method, const std::string& path,
                             const std::string& body) {
          skiff::webhook::HttpResponse resp;
          if (path != "/validate" && path != "/inject") {
            resp.status = 404;
            resp.content_type = "text/plain";
            resp.body = "not found: the webhook serves POST /validate and POST /inject\n";
          } else if (method != "POST") {
            resp.status = 405;
            resp.content_type = "text/plain";
            resp.body = "POST an AdmissionReview to " + path + "\n";
          } else if (path == "/inject") {
            resp.body = skiff::webhook::InjectReviewBody(body, inject_options, &resp.status);
          } else {
            resp.body = skiff::webhook::ReviewBody(body, &resp.status);
          }
          return resp;
        });
    skiff::webhook::ServingNames names;
    for (const std::string& n :
         {webhook_service, webhook_service + "." + ns, webhook_service + "." + ns + ".svc",
          webhook_service + "." + ns + ".svc.cluster.local", std::string("localhost")}) {
      names.dns.push_back(n);
    }
    names.ips = {"127.0.0.1", "::1"};
    for (const auto& n : webhook_names) {
      (skiff::api::IsValidIp(n) ? names.ips : names.dns).push_back(n);
    }
    std::string error;
    if (!webhook->Start(&error)) {
      spdlog::error("webhook: {}", error);
      return EXIT_FAILURE;
    }
    spdlog::info("admission webhooks on https://{}:{}: /validate, /inject (sidecars: {}, xDS {})",
                 webhook_address, webhook->port(), inject_options.proxy_image,
                 inject_options.xds_address);
    if (webhook_client != nullptr) {
      skiff::webhook::KubeCertOptions co;
      co.namespace_ = ns;
      co.secret_name = webhook_secret;
      co.webhook_config = webhook_config;
      co.mutating_webhook_config = injection_config;
      co.names = names;
      skiff::webhook::TlsServer* server_ptr = webhook.get();
      cert_store = std::make_unique<skiff::webhook::KubeCertStore>(
          std::move(webhook_client), co, [&lease] { return lease != nullptr && lease->leader(); },
          [server_ptr](const skiff::webhook::CertBundle& b) {
            std::string err;
            if (!server_ptr->SetCertificate(b, &err)) {
              spdlog::error("webhook: {}", err);
            }
          });
      cert_store->Start();
    } else {
      skiff::webhook::CertBundle bundle;
      if (!webhook_cert_dir.empty()) {
        if (!skiff::webhook::LoadOrCreateInDir(webhook_cert_dir, names, {}, &bundle, &error)) {
          spdlog::error("webhook: {}", error);
          return EXIT_FAILURE;
        }
      } else {
        bundle = skiff::webhook::GenerateCerts(names, std::chrono::hours(24 * 365 * 10),
                                               std::chrono::hours(24 * 365), &error);
        spdlog::warn("webhook: a new CA for this run only (--webhook-cert-dir keeps it)");
      }
      if (bundle.cert_pem.empty() || !webhook->SetCertificate(bundle, &error)) {
        spdlog::error("webhook: {}", error);
        return EXIT_FAILURE;
      }
    }
  }

  if (http != nullptr) {
    http_handler = [&](const skiff::HttpRequest& req) {
      skiff::HttpResponse resp;
      if (req.path == "/healthz") {  // liveness: the process answers
        resp.body = "ok\n";
        return resp;
      }
      if (req.path == "/ready") {
        // Ready once the inputs were applied and, with the webhook on, it has a certificate
        // (until then the API server could not reach it).
        if (pipeline.applied == 0) {
          resp.status = 503;
          resp.body = "starting: inputs not applied yet\n";
        } else if (webhook != nullptr && !webhook->HasCertificate()) {
          resp.status = 503;
          resp.body = "starting: the webhook has no certificate yet\n";
        } else {
          resp.body = "ready\n";
        }
        return resp;
      }
      if (req.path == "/") {
        resp.body =
            "skiff-operator\n\n/metrics  Prometheus metrics\n/ready    200 once a configuration "
            "was applied\n/healthz  liveness\n";
        return resp;
      }
      if (req.path != "/metrics") {
        resp.status = 404;
        resp.body = "not found: " + req.path + "\n";
        return resp;
      }
      resp.content_type = "text/plain; version=0.0.4";
      resp.body = MetricsText(server, pipeline, store, kube_source.get(), lease.get(),
                              status_writer.get(), http->stats(), webhook.get(), cert_store.get());
      return resp;
    };
    http->Start();
    spdlog::info("metrics on http://{}:{}/metrics", metrics_address, http->port());
  }

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("stopping");
  auto stopping = std::chrono::steady_clock::now();
  if (http != nullptr) {
    http->Stop();
  }
  if (cert_store != nullptr) {
    cert_store->Stop();
  }
  if (webhook != nullptr) {
    webhook->Stop();
  }
  if (file_source != nullptr) {
    file_source->Stop();
  }
  if (kube_source != nullptr) {
    kube_source->Stop();
  }
  if (lease != nullptr) {
    lease->Stop();
  }
  if (status_writer != nullptr) {
    status_writer->Stop();
  }
  store.Stop();
  // Finishes every xDS stream; gRPC then waits only for clients that neither read nor close
  // (their pending reads end at the deadline, when gRPC cancels what is left).
  server.Shutdown();
  grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  spdlog::info("stopped in {} ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::steady_clock::now() - stopping)
                                       .count());
  return EXIT_SUCCESS;
}

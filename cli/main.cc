// skiffctl: validate Istio manifests, print the snapshot a proxy group would get, show what
// running proxies have (proxy-status, proxy-config), the operator's invalid inputs (status),
// version.
#include <google/protobuf/arena.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "common/flags.h"
#include "common/strings.h"
#include "common/version.h"
#include "operator/source/file/load.h"
#include "operator/translate/translate.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace {

constexpr const char* kUsage = R"(Usage: skiffctl COMMAND [flags]

Commands:
  validate -f FILE|DIR|- [-f ...] [--strict]
                           check Istio manifests as Istio does; exit 0 when valid, 1 when
                           not (--strict: unresolved references are errors too)
  translate --config-dir DIR [--role gateway|sidecar] [--labels k=v,...] [--namespace NS]
                           print the snapshot a proxy group gets, as JSON
  inject -f FILE|- [--proxy-image IMAGE] [--xds-address HOST:PORT] [-o yaml|json]
                           add the sidecar to the manifest's pods as the injection webhook
                           does (as istioctl kube-inject) and print the result
  proxy-status [--operator HOST:PORT]
                           each connected proxy and, per resource type, the version sent,
                           the version ACKed and the operator's current one: SYNCED, STALE
                           or NACKED (with the proxy's error)
  proxy-config listeners|routes|clusters|endpoints|all PROXY [-o short|json|yaml]
                           what a proxy serves, from its admin port (found through the
                           operator, or --admin HOST:PORT)
  status [--operator HOST:PORT]
                           the operator's invalid inputs, their errors and whether their last
                           valid version is served in their place (exit 1 when there are any)
  version                  print the version

Run 'skiffctl COMMAND --help' for a command's flags.
)";

bool ParseLabels(std::string_view text, skiff::api::Labels* out, std::string* error) {
  for (const auto& pair : skiff::Split(text, ',')) {
    auto eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      *error = "expected k=v pairs separated by commas, got '" + pair + "'";
      return false;
    }
    (*out)[pair.substr(0, eq)] = pair.substr(eq + 1);
  }
  return true;
}

int Validate(const std::vector<std::string>& args) {
  std::vector<std::string> paths;
  bool strict = false;
  skiff::FlagSet flags(
      "skiffctl validate",
      "Checks Gateway, VirtualService and DestinationRule manifests as Istio validates them and\n"
      "prints every problem with its field path. References that do not resolve (a Service,\n"
      "Gateway or subset that is not in the input) are warnings, as with istioctl validate;\n"
      "--strict makes them errors, for a directory that holds everything it refers to.");
  flags.AddStringList("filename,f", &paths,
                      "a manifest file, a directory (searched recursively) or - for standard "
                      "input (repeatable)",
                      "FILE|DIR|-");
  flags.AddBool("strict", &strict, "unresolved references are errors");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  if (paths.empty()) {
    std::cerr << "skiffctl validate: -f FILE|DIR|- is required\n";
    return skiff::kExitUsage;
  }
  auto loaded = skiff::source::LoadPaths(paths, &std::cin);
  int errors = 0;
  int warnings = 0;
  for (const auto& e : loaded.errors) {
    std::cout << "error: " << e.Format() << "\n";
    ++errors;
  }
  for (const auto& w : loaded.warnings) {
    std::cout << "warning: " << w.text << "  (" << w.origin << ")\n";
    ++warnings;
  }
  const std::vector<skiff::api::Object>& objects = loaded.objects;
  skiff::translate::Translator translator(objects);
  for (const auto& o : objects) {
    for (const auto& m : o.messages) {
      bool error = m.level == skiff::api::Message::Level::kError;
      errors += error ? 1 : 0;
      warnings += error ? 0 : 1;
      std::cout << (error ? "error: " : "warning: ") << o.Ref() << ": " << m.Format() << "  ("
                << o.origin << ")\n";
    }
  }
  size_t valid = 0;
  for (const auto& st : translator.Statuses()) {
    valid += st.Accepted() ? 1 : 0;
    for (const auto& c : st.conditions) {
      if (c.type == "ResolvedRefs" && c.status == "False") {
        for (const auto& problem : skiff::Split(c.message, ';')) {
          std::cout << (strict ? "error: " : "warning: ") << st.Ref() << ": "
                    << skiff::Trim(problem) << "\n";
          (strict ? errors : warnings) += 1;
        }
      }
    }
    for (const auto& w : st.warnings) {
      // Decoder warnings were printed above; these are the translator's own.
      bool from_decoder = false;
      for (const auto& o : objects) {
        if (o.Ref() == st.Ref()) {
          for (const auto& m : o.messages) {
            from_decoder = from_decoder || m.Format() == w;
          }
        }
      }
      if (!from_decoder) {
        std::cout << "warning: " << st.Ref() << ": " << w << "\n";
        ++warnings;
      }
    }
  }
  // Every object of the input counts, also those of kinds skiff does not use: "0 object(s)"
  // means the input really held nothing.
  size_t total = objects.size() + static_cast<size_t>(loaded.ignored);
  if (errors > 0) {
    std::cout << errors << " error(s) in " << total << " object(s)\n";
    return 1;
  }
  size_t istio = translator.Statuses().size();
  std::cout << "ok: " << total << " object(s), " << valid << " of " << istio
            << " Istio resource(s) valid";
  if (warnings > 0) {
    std::cout << ", " << warnings << " warning(s)";
  }
  std::cout << "\n";
  return 0;
}

int Translate(const std::vector<std::string>& args) {
  std::string dir;
  skiff::translate::ProxyGroup group;
  bool labels_set = false;
  bool status = false;
  skiff::FlagSet flags("skiffctl translate",
                       "Prints the snapshot (listeners, route tables, clusters, endpoints) that "
                       "proxies of one\ngroup get from the manifests in DIR, as protobuf JSON.");
  flags.AddString("config-dir", &dir, "directory (or file) of manifests", "DIR");
  flags.AddCustom(
      "role",
      [&group](std::string_view v) -> std::optional<std::string> {
        if (v != "gateway" && v != "sidecar") {
          return "expected gateway or sidecar";
        }
        group.role = std::string(v);
        return std::nullopt;
      },
      "gateway (default) or sidecar", "ROLE");
  flags.AddCustom(
      "labels",
      [&group, &labels_set](std::string_view v) -> std::optional<std::string> {
        std::string error;
        if (!ParseLabels(v, &group.labels, &error)) {
          return error;
        }
        labels_set = true;
        return std::nullopt;
      },
      "proxy labels (default for gateways: istio=ingressgateway)", "k=v,...");
  flags.AddString("namespace", &group.namespace_, "proxy namespace (default \"default\")", "NS");
  flags.AddBool("capture", &group.capture,
                "a sidecar whose pod's traffic is redirected to it (interception mode "
                "REDIRECT): outbound by original destination, and the inbound listener");
  skiff::translate::MeshConfig mesh;
  flags.AddCustom(
      "outbound-traffic-policy",
      [&mesh](std::string_view v) -> std::optional<std::string> {
        if (v != "ALLOW_ANY" && v != "REGISTRY_ONLY") {
          return "expected ALLOW_ANY or REGISTRY_ONLY";
        }
        mesh.outbound_traffic_policy =
            v == "ALLOW_ANY" ? skiff::translate::MeshConfig::OutboundTrafficPolicy::kAllowAny
                             : skiff::translate::MeshConfig::OutboundTrafficPolicy::kRegistryOnly;
        return std::nullopt;
      },
      "as the operator's flag (default ALLOW_ANY)", "ALLOW_ANY|REGISTRY_ONLY");
  flags.AddBool("status", &status, "print the resources' status instead of the snapshot");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  if (dir.empty()) {
    std::cerr << "skiffctl translate: --config-dir DIR is required\n";
    return skiff::kExitUsage;
  }
  if (!labels_set && group.role == "gateway") {
    group.labels["istio"] = "ingressgateway";
  }
  auto loaded = skiff::source::LoadPath(dir);
  for (const auto& e : loaded.errors) {
    std::cerr << "error: " << e.Format() << "\n";
  }
  if (group.capture && group.role != "sidecar") {
    std::cerr << "skiffctl translate: --capture is for --role sidecar\n";
    return skiff::kExitUsage;
  }
  skiff::translate::Translator translator(std::move(loaded.objects), mesh);
  if (status) {
    std::cout << skiff::translate::StatusesToJson(translator.Statuses());
  } else {
    google::protobuf::Arena arena(skiff::translate::SnapshotArenaOptions());
    auto* snapshot = google::protobuf::Arena::CreateMessage<skiff::v1::Snapshot>(&arena);
    translator.Build(group, snapshot);
    std::cout << skiff::translate::SnapshotToJson(*snapshot);
  }
  return loaded.errors.empty() ? 0 : 1;
}

int Status(const std::vector<std::string>& args) {
  std::string address = "127.0.0.1:15010";
  skiff::FlagSet flags("skiffctl status",
                       "Lists the operator's inputs that are invalid: for each, its errors and "
                       "whether its last\nvalid version is served in its place (a bad edit "
                       "never changes traffic), and the\nfiles that do not decode. Exits 0 when "
                       "there is none, 1 otherwise.");
  flags.AddString("operator", &address, "the operator's xDS address (default 127.0.0.1:15010)",
                  "HOST:PORT");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = skiff::v1::ConfigStatusService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  skiff::v1::ConfigStatusRequest req;
  skiff::v1::ConfigStatusResponse resp;
  auto status = stub->GetConfigStatus(&ctx, req, &resp);
  if (!status.ok()) {
    std::cerr << "skiffctl status: cannot reach the operator at " << address << ": "
              << status.error_message() << "\n";
    return 1;
  }
  std::cout << "source: " << resp.source() << " (" << resp.applies() << " input set(s) applied)\n";
  if (resp.resources_size() == 0 && resp.document_errors_size() == 0) {
    std::cout << "ok: no configuration errors\n";
    return 0;
  }
  for (const auto& r : resp.resources()) {
    std::cout << r.kind() << " " << r.namespace_() << "/" << r.name() << ": INVALID (" << r.origin()
              << ")\n";
    for (const auto& e : r.errors()) {
      std::cout << "  " << e << "\n";
    }
    if (r.serving_last_good()) {
      std::cout << "  serving its last valid version (" << r.last_good_origin()
                << ") until this is fixed\n";
    } else {
      std::cout << "  not served: it has no earlier valid version\n";
    }
  }
  for (const auto& d : resp.document_errors()) {
    std::cout << "document error: " << d << "\n";
  }
  for (const auto& k : resp.kept_from_broken_files()) {
    std::cout << "kept: " << k << ": its file does not decode; its last good version is served\n";
  }
  std::cout << resp.resources_size() << " invalid resource(s), " << resp.document_errors_size()
            << " document error(s)\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << kUsage;
    return skiff::kExitUsage;
  }
  const std::string cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd == "--version" || cmd == "version") {
    std::cout << "skiffctl " << skiff::kVersion << "\n";
    return 0;
  }
  if (cmd == "validate") {
    return Validate(rest);
  }
  if (cmd == "translate") {
    return Translate(rest);
  }
  if (cmd == "proxy-status") {
    return skiff::cli::ProxyStatus(rest);
  }
  if (cmd == "proxy-config") {
    return skiff::cli::ProxyConfig(rest);
  }
  if (cmd == "status") {
    return Status(rest);
  }
  if (cmd == "inject") {
    return skiff::cli::Inject(rest);
  }
  if (!cmd.empty() && cmd[0] == '-') {
    std::cerr << "skiffctl: unknown flag '" << cmd << "'\nTry 'skiffctl --help'.\n";
  } else {
    std::cerr << "skiffctl: unknown command '" << cmd << "'\nTry 'skiffctl --help'.\n";
  }
  return skiff::kExitUsage;
}

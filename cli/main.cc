// skiffctl: validate Istio manifests, print the snapshot a proxy group would get, version.
#include <google/protobuf/arena.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/strings.h"
#include "common/version.h"
#include "operator/source/file/load.h"
#include "operator/translate/translate.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace {

constexpr const char* kUsage = R"(Usage: skiffctl COMMAND [flags]

Commands:
  validate -f FILE|DIR     check Istio manifests; exit 0 when valid, 1 when not
  translate --config-dir DIR [--role gateway|sidecar] [--labels k=v,...] [--namespace NS]
                           print the snapshot a proxy group gets, as JSON
  proxy-status [--operator HOST:PORT]
                           each connected proxy and, per resource type, whether it is
                           SYNCED, STALE or NACKED (with the proxy's error)
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
  skiff::FlagSet flags("skiffctl validate",
                       "Checks Gateway, VirtualService and DestinationRule manifests (with the "
                       "Services,\nEndpointSlices and Pods beside them) and prints every problem "
                       "with its field path.");
  flags.AddStringList("filename,f", &paths, "a manifest file or directory (repeatable)",
                      "FILE|DIR");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  if (paths.empty()) {
    std::cerr << "skiffctl validate: -f FILE|DIR is required\n";
    return skiff::kExitUsage;
  }
  std::vector<skiff::api::Object> objects;
  int errors = 0;
  for (const auto& p : paths) {
    auto loaded = skiff::source::LoadPath(p);
    for (const auto& e : loaded.errors) {
      std::cout << "error: " << e.Format() << "\n";
      ++errors;
    }
    for (auto& o : loaded.objects) {
      objects.push_back(std::move(o));
    }
  }
  skiff::translate::Translator translator(objects);
  for (const auto& o : objects) {
    for (const auto& m : o.messages) {
      bool error = m.level == skiff::api::Message::Level::kError;
      errors += error ? 1 : 0;
      std::cout << (error ? "error: " : "warning: ") << o.Ref() << ": " << m.Format() << "  ("
                << o.origin << ")\n";
    }
  }
  for (const auto& st : translator.Statuses()) {
    for (const auto& c : st.conditions) {
      if (c.type == "ResolvedRefs" && c.status == "False") {
        for (const auto& problem : skiff::Split(c.message, ';')) {
          std::cout << "error: " << st.Ref() << ": " << skiff::Trim(problem) << "\n";
          ++errors;
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
      }
    }
  }
  size_t istio = translator.Statuses().size();
  if (errors > 0) {
    std::cout << errors << " error(s) in " << objects.size() << " object(s)\n";
    return 1;
  }
  std::cout << "ok: " << objects.size() << " object(s), " << istio << " Istio resource(s) valid\n";
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
  skiff::translate::Translator translator(std::move(loaded.objects));
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

int ProxyStatus(const std::vector<std::string>& args) {
  std::string address = "127.0.0.1:15010";
  skiff::FlagSet flags("skiffctl proxy-status",
                       "Lists the proxies connected to an operator and their xDS state.");
  flags.AddString("operator", &address, "the operator's xDS address (default 127.0.0.1:15010)",
                  "HOST:PORT");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = skiff::v1::ProxyStatusService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  skiff::v1::ProxyStatusRequest req;
  skiff::v1::ProxyStatusResponse resp;
  auto status = stub->ListProxies(&ctx, req, &resp);
  if (!status.ok()) {
    std::cerr << "skiffctl proxy-status: cannot reach the operator at " << address << ": "
              << status.error_message() << "\n";
    return 1;
  }
  std::printf("%-24s %-8s %-7s %-30s %-9s %-9s %-9s %-9s\n", "PROXY", "ROLE", "STREAM", "LABELS",
              "CLUSTERS", "ENDPOINTS", "LISTENERS", "ROUTES");
  for (const auto& p : resp.proxies()) {
    std::vector<std::string> labels;
    std::map<std::string, std::string> sorted(p.node().labels().begin(), p.node().labels().end());
    for (const auto& [k, v] : sorted) {
      labels.push_back(k + "=" + v);
    }
    std::map<std::string, std::string> state;
    for (const auto& t : p.types()) {
      state[t.type_url()] = t.state();
    }
    std::printf("%-24s %-8s %-7s %-30s %-9s %-9s %-9s %-9s\n", p.node().id().c_str(),
                p.node().role().c_str(), p.stream().c_str(),
                (skiff::Join(labels, ",") + " ns=" + p.node().namespace_()).c_str(),
                state[skiff::xds::kClusterType].c_str(), state[skiff::xds::kEndpointsType].c_str(),
                state[skiff::xds::kListenerType].c_str(),
                state[skiff::xds::kRouteTableType].c_str());
    for (const auto& t : p.types()) {
      if (!t.error().empty()) {
        std::printf("  %s %s: %s\n", skiff::xds::ShortType(t.type_url()).c_str(), t.state().c_str(),
                    t.error().c_str());
      }
    }
  }
  return 0;
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
    return ProxyStatus(rest);
  }
  if (!cmd.empty() && cmd[0] == '-') {
    std::cerr << "skiffctl: unknown flag '" << cmd << "'\nTry 'skiffctl --help'.\n";
  } else {
    std::cerr << "skiffctl: unknown command '" << cmd << "'\nTry 'skiffctl --help'.\n";
  }
  return skiff::kExitUsage;
}

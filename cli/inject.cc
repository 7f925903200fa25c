// skiffctl inject: the sidecar injection of the webhook, offline (as istioctl kube-inject).
#include "operator/inject/inject.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "common/flags.h"
#include "operator/api/decode.h"

namespace skiff::cli {

int Inject(const std::vector<std::string>& args) {
  std::string path;
  std::string output = "yaml";
  inject::InjectOptions options;
  FlagSet flags("skiffctl inject",
                "Adds the skiff sidecar to the pods of a manifest as the operator's injection "
                "webhook does\n(as istioctl kube-inject): Pods and the pod templates of "
                "Deployments, StatefulSets,\nDaemonSets, ReplicaSets, ReplicationControllers, "
                "Jobs and CronJobs; other objects are\nprinted unchanged. A pod that opted out "
                "(sidecar.istio.io/inject: \"false\") or is\nalready injected is left as it is. "
                "Pass the operator's --proxy-image and\n--injection-xds-address values to get "
                "what its webhook makes.");
  flags.AddString("filename,f", &path,
                  "the manifest (YAML or JSON, any number of documents), "
                  "or - for standard input",
                  "FILE|-");
  flags.AddString("proxy-image", &options.proxy_image,
                  "the image of skiff-proxy and skiff-init (default skiff-proxy:latest)", "IMAGE");
  flags.AddString("image-pull-policy", &options.image_pull_policy,
                  "of the injected containers (default IfNotPresent)", "POLICY");
  flags.AddString("xds-address", &options.xds_address,
                  "the operator's xDS address the sidecar connects to (default "
                  "skiff-operator.skiff-system.svc:15010)",
                  "HOST:PORT");
  flags.AddCustom(
      "output,o",
      [&output](std::string_view v) -> std::optional<std::string> {
        if (v != "yaml" && v != "json") {
          return "expected yaml or json";
        }
        output = std::string(v);
        return std::nullopt;
      },
      "yaml (default) or json", "FORMAT");
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  if (path.empty()) {
    std::cerr << "skiffctl inject: -f FILE|- is required\n";
    return kExitUsage;
  }
  std::stringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "skiffctl inject: cannot read " << path << "\n";
      return 1;
    }
    ss << in.rdbuf();
  }
  std::string text = ss.str();
  auto parsed = api::ParseDocuments(text, path == "-" ? "<stdin>" : path);
  if (!parsed.errors.empty()) {
    for (const auto& e : parsed.errors) {
      std::cerr << "error: " << e.Format() << "\n";
    }
    return 1;
  }
  std::string out;
  for (size_t i = 0; i < parsed.documents.size(); ++i) {
    auto& doc = parsed.documents[i];
    std::string error;
    if (!inject::InjectManifest(&doc, options, &error)) {
      std::cerr << "skiffctl inject: " << error << "\n";
      return 1;
    }
    if (output == "json") {
      out += doc.dump(2) + "\n";
    } else {
      out += (i > 0 ? "---\n" : "") + api::JsonToYaml(doc);
    }
  }
  std::cout << out;
  return 0;
}

}  // namespace skiff::cli

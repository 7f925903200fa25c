// skiff-proxy: the data-plane HTTP proxy.
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

#include "common/flags.h"
#include "common/logging.h"
#include "proxy/config/bootstrap.h"

int main(int argc, char** argv) {
  std::string log_level = "info";
  std::string bootstrap;
  bool check = false;
  skiff::FlagSet flags("skiff-proxy", "The skiff data-plane HTTP proxy.");
  flags.AddString("bootstrap", &bootstrap,
                  "load a snapshot (the JSON that `skiffctl translate` prints)", "FILE");
  flags.AddBool("check", &check, "only load and check the --bootstrap file, then exit");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  skiff::SetupLogging("skiff-proxy", log_level);
  if (bootstrap.empty()) {
    spdlog::error("no configuration: pass --bootstrap FILE");
    return skiff::kExitUsage;
  }
  skiff::v1::Snapshot snapshot;
  std::string error;
  if (!skiff::proxy::LoadSnapshotFile(bootstrap, &snapshot, &error)) {
    spdlog::error("{}", error);
    return EXIT_FAILURE;
  }
  spdlog::info("loaded {}: {} listeners, {} route tables, {} clusters", bootstrap,
               snapshot.listeners_size(), snapshot.route_tables_size(), snapshot.clusters_size());
  if (check) {
    return EXIT_SUCCESS;
  }
  spdlog::error("serving traffic is not implemented in this build yet; use --check");
  return EXIT_FAILURE;
}

// skiff-operator: watches Istio resources and serves proxy configuration.
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

#include "common/flags.h"
#include "common/logging.h"

int main(int argc, char** argv) {
  std::string log_level = "info";
  skiff::FlagSet flags("skiff-operator",
                       "Watches networking.istio.io Gateway, VirtualService and DestinationRule "
                       "resources and\ntranslates them into proxy configuration.");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  skiff::SetupLogging("skiff-operator", log_level);
  spdlog::error("no configuration source is available in this build yet");
  return EXIT_FAILURE;
}

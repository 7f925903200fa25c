#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <string>

namespace skiff {

bool SetupLogging(std::string_view program, std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return false;
  }
  auto logger = spdlog::stderr_color_mt(std::string(program));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ [%n] %v", spdlog::pattern_time_type::utc);
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace skiff

#include "common/flags.h"

namespace skiff {

void AddLogLevelFlag(FlagSet& flags, std::string* level) {
  flags.AddCustom(
      "log-level",
      [level](std::string_view v) -> std::optional<std::string> {
        if (v != "trace" && v != "debug" && v != "info" && v != "warn" && v != "error" &&
            v != "off") {
          return "expected trace, debug, info, warn, error or off";
        }
        *level = std::string(v);
        return std::nullopt;
      },
      "trace, debug, info, warn, error or off (default info)", "LEVEL");
}

}  // namespace skiff

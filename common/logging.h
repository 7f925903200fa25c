#pragma once
#include <string>
#include <string_view>

namespace skiff {

// Sets up the process-wide spdlog logger (stderr, with timestamps). `level` is one of
// trace, debug, info, warn, error, off; returns false for anything else.
bool SetupLogging(std::string_view program, std::string_view level);

}  // namespace skiff

namespace skiff {
class FlagSet;
// Adds --log-level (validated while parsing) to a binary's flags.
void AddLogLevelFlag(FlagSet& flags, std::string* level);
}  // namespace skiff

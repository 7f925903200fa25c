#pragma once
// Durations as Istio users write them: Go's time.ParseDuration syntax ("2s", "0.5s",
// "100ms", "1m30s", "1h"), which is also what Istio accepts in its YAML.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace skiff {

// Returns nullopt for anything that is not a valid duration. Negative values parse
// ("-1s"); callers decide whether they are allowed.
std::optional<std::chrono::nanoseconds> ParseDuration(std::string_view text);

// Formats as protobuf JSON does: seconds with up to 9 fractional digits, e.g. "2s", "0.100s".
std::string FormatDuration(std::chrono::nanoseconds d);

}  // namespace skiff

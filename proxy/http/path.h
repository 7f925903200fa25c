#pragma once
// Path normalization before routing, as Istio's meshConfig.pathNormalization (Envoy's
// normalize_path, merge_slashes and path_with_escaped_slashes_action):
//   kNone                   the path as received
//   kBase (the default)     RFC 3986: percent-escapes of unreserved characters decoded
//                           ("%61" -> "a", "%2E" -> "."), other escapes' hex upper-cased,
//                           backslashes as slashes, then dot-segments removed ("/a/./b/../c"
//                           -> "/a/c"; never above the root); %2F and %5C stay escaped
//   kMergeSlashes           kBase, then runs of "/" merged into one
//   kDecodeAndMergeSlashes  %2F / %5C decoded to "/" / "\" first, then kMergeSlashes
// The normalized path is used for route matching and is the path sent upstream.
#include <optional>
#include <string>
#include <string_view>

namespace skiff::http {

enum class PathNormalization { kNone, kBase, kMergeSlashes, kDecodeAndMergeSlashes };

// "none", "base", "merge_slashes", "decode_and_merge_slashes" (case-insensitive; Istio's
// enum names NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES work too).
std::optional<PathNormalization> ParsePathNormalization(std::string_view name);

// Normalizes `path` (an origin-form path without its query, starting with "/"). Returns
// false when nothing changed (the common case: `out` is untouched), true when `out` holds
// the normalized path.
bool NormalizePath(std::string_view path, PathNormalization mode, std::string* out);

}  // namespace skiff::http

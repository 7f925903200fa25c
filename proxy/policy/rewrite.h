#pragma once
// Istio's HTTPRewrite of the path: `uri` replaces the part of the path the route's uri
// match matched (the prefix of a prefix match, the whole path of an exact match, the
// leading "/" otherwise); `uri_regex` substitutes every match of its pattern.
#include <re2/re2.h>

#include <string>
#include <string_view>

#include "skiff/v1/config.pb.h"

namespace skiff::policy {

enum class UriMatchKind { kNone, kExact, kPrefix, kRegex };

// The rewritten path with `query` ("?..." or empty) appended, or the path unchanged when
// the rewrite has no uri and `regex` is null.
std::string RewritePath(std::string_view path, std::string_view query, const v1::Rewrite& rewrite,
                        UriMatchKind kind, std::string_view matched, const RE2* regex);

}  // namespace skiff::policy

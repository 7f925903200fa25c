#include "proxy/http/path.h"

#include <vector>

#include "proxy/http/parser.h"

namespace skiff::http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

bool IsUnreserved(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Does the path need any work? Most do not: no escapes, no backslashes, no dot-segments
// and (when merging) no empty segments.
bool NeedsWork(std::string_view p, bool merge) {
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '%' || c == '\\') {
      return true;
    }
    if (c == '/' && i + 1 < p.size()) {
      char n = p[i + 1];
      if (n == '.' || (merge && n == '/')) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::optional<PathNormalization> ParsePathNormalization(std::string_view name) {
  if (EqualsIgnoreCase(name, "none")) {
    return PathNormalization::kNone;
  }
  if (EqualsIgnoreCase(name, "base")) {
    return PathNormalization::kBase;
  }
  if (EqualsIgnoreCase(name, "merge_slashes") || EqualsIgnoreCase(name, "merge-slashes")) {
    return PathNormalization::kMergeSlashes;
  }
  if (EqualsIgnoreCase(name, "decode_and_merge_slashes") ||
      EqualsIgnoreCase(name, "decode-and-merge-slashes")) {
    return PathNormalization::kDecodeAndMergeSlashes;
  }
  return std::nullopt;
}

bool NormalizePath(std::string_view path, PathNormalization mode, std::string* out) {
  if (mode == PathNormalization::kNone || path.empty() || path.front() != '/') {
    return false;
  }
  const bool merge = mode != PathNormalization::kBase;
  if (!NeedsWork(path, merge)) {
    return false;
  }
  const bool decode_slashes = mode == PathNormalization::kDecodeAndMergeSlashes;
  // 1. Escapes and backslashes.
  std::string decoded;
  decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '%' && i + 2 < path.size()) {
      int hi = HexValue(path[i + 1]);
      int lo = HexValue(path[i + 2]);
      if (hi >= 0 && lo >= 0) {
        char v = static_cast<char>(hi * 16 + lo);
        if (IsUnreserved(v) || (decode_slashes && (v == '/' || v == '\\'))) {
          decoded += v == '\\' ? '/' : v;
        } else {
          static const char* kUpper = "0123456789ABCDEF";
          decoded += '%';
          decoded += kUpper[hi];
          decoded += kUpper[lo];
        }
        i += 2;
        continue;
      }
    }
    decoded += c == '\\' ? '/' : c;
  }
  // 2. Dot-segments (RFC 3986 5.2.4), segment by segment; ".." never climbs above "/".
  std::vector<std::string_view> segments;
  std::string_view rest = std::string_view(decoded).substr(1);
  while (true) {
    size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    if (seg == ".") {
      if (last) {
        segments.emplace_back();
      }
    } else if (seg == "..") {
      if (!segments.empty()) {
        segments.pop_back();
      }
      if (last) {
        segments.emplace_back();
      }
    } else if (!(merge && seg.empty() && !last)) {
      segments.push_back(seg);
    }
    if (last) {
      break;
    }
    rest.remove_prefix(slash + 1);
  }
  std::string result;
  result.reserve(decoded.size());
  for (const auto& seg : segments) {
    result += '/';
    result.append(seg.data(), seg.size());
  }
  if (result.empty()) {
    result.push_back('/');
  }
  if (merge) {
    // Empty segments were skipped above; a trailing empty one stays as the final "/".
    std::string merged;
    merged.reserve(result.size());
    for (char c : result) {
      if (c == '/' && !merged.empty() && merged.back() == '/') {
        continue;
      }
      merged += c;
    }
    result = std::move(merged);
  }
  if (result == path) {
    return false;
  }
  *out = std::move(result);
  return true;
}

}  // namespace skiff::http

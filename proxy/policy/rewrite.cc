#include "proxy/policy/rewrite.h"

namespace skiff::policy {

std::string RewritePath(std::string_view path, std::string_view query, const v1::Rewrite& rewrite,
                        UriMatchKind kind, std::string_view matched, const RE2* regex) {
  std::string out;
  if (!rewrite.uri().empty()) {
    std::string_view prefix = "/";
    if (kind == UriMatchKind::kPrefix || kind == UriMatchKind::kExact) {
      prefix = matched;
    }
    out = rewrite.uri();
    if (kind != UriMatchKind::kExact && path.size() >= prefix.size()) {
      std::string_view rest = path.substr(prefix.size());
      if (!out.empty() && out.back() == '/' && !rest.empty() && rest.front() == '/') {
        rest.remove_prefix(1);
      }
      out.append(rest.data(), rest.size());
    }
  } else if (regex != nullptr) {
    out.assign(path.data(), path.size());
    RE2::GlobalReplace(&out, *regex, rewrite.uri_regex().substitution());
  } else {
    out.assign(path.data(), path.size());
  }
  out.append(query.data(), query.size());
  return out;
}

}  // namespace skiff::policy

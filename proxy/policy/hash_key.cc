#include "proxy/policy/hash_key.h"

namespace skiff::policy {

namespace {
std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}
}  // namespace

std::optional<std::string_view> CookieValue(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view pair = TrimSpaces(header.substr(0, semi));
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && TrimSpaces(pair.substr(0, eq)) == name) {
      std::string_view v = TrimSpaces(pair.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
        v = v.substr(1, v.size() - 2);
      }
      return v;
    }
    if (semi == std::string_view::npos) {
      break;
    }
    header.remove_prefix(semi + 1);
  }
  return std::nullopt;
}

std::optional<std::string_view> QueryParameter(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::string HashCookieField(std::string_view name, std::string_view value, std::string_view path,
                            uint64_t ttl_seconds) {
  std::string out;
  out.reserve(name.size() + value.size() + path.size() + 48);
  out.append(name).append("=\"").append(value).append("\"");
  if (ttl_seconds > 0) {
    out.append("; Max-Age=").append(std::to_string(ttl_seconds));
  }
  if (!path.empty()) {
    out.append("; Path=").append(path);
  }
  out.append("; HttpOnly");
  return out;
}

}  // namespace skiff::policy

#include "operator/api/names.h"

#include "common/strings.h"

namespace skiff::api {

namespace {
bool IsAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsAlnumLower(c) || (c >= 'A' && c <= 'Z'); }
}  // namespace

bool IsDns1123Label(std::string_view s) {
  if (s.empty() || s.size() > 63 || !IsAlnumLower(s.front()) || !IsAlnumLower(s.back())) {
    return false;
  }
  for (char c : s) {
    if (!IsAlnumLower(c) && c != '-') {
      return false;
    }
  }
  return true;
}

bool IsDns1123Subdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) {
    return false;
  }
  for (const auto& label : Split(s, '.', false)) {
    if (!IsDns1123Label(label)) {
      return false;
    }
  }
  return true;
}

std::string ValidateHost(std::string_view host) {
  if (host.empty()) {
    return "host must not be empty";
  }
  if (host == "*") {
    return {};
  }
  if (host.size() > 255) {
    return "host \"" + std::string(host) + "\" is too long (at most 255 characters)";
  }
  std::string_view rest = host;
  if (StartsWith(rest, "*.")) {
    rest.remove_prefix(2);
  } else if (StartsWith(rest, "*")) {
    // Istio also accepts "*suffix" (e.g. "*example.com") as a suffix wildcard.
    rest.remove_prefix(1);
  }
  auto labels = Split(rest, '.', false);
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto& l = labels[i];
    // A trailing dot (absolute name) leaves one empty label at the end.
    if (l.empty() && i + 1 == labels.size() && i > 0) {
      continue;
    }
    bool ok = !l.empty() && l.size() <= 63 && IsAlnum(l.front()) && IsAlnum(l.back());
    for (char c : l) {
      ok = ok && (IsAlnum(c) || c == '-');
    }
    if (!ok) {
      return "invalid host \"" + std::string(host) +
             "\": each label must be 1-63 letters, digits or '-', and '*' may only be the "
             "whole left-most label";
    }
  }
  return {};
}

std::string ValidateGatewayHost(std::string_view host) {
  auto slash = host.find('/');
  if (slash != std::string_view::npos) {
    std::string_view ns = host.substr(0, slash);
    if (ns != "*" && ns != "." && !IsDns1123Label(ns)) {
      return "invalid namespace \"" + std::string(ns) + "\" in host \"" + std::string(host) +
             "\": use \"*\", \".\" or a namespace name";
    }
    host = host.substr(slash + 1);
  }
  return ValidateHost(host);
}

bool IsValidHeaderName(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (unsigned char c : s) {
    // RFC 9110 token characters.
    bool tchar =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
    if (!tchar) {
      return false;
    }
  }
  return true;
}

}  // namespace skiff::api

#include "operator/api/names.h"

#include <arpa/inet.h>

#include "common/strings.h"

namespace skiff::api {

namespace {
bool IsAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsAlnumLower(c) || (c >= 'A' && c <= 'Z'); }

bool IsLabel(std::string_view s, bool any_case) {
  auto alnum = [any_case](char c) { return any_case ? IsAlnum(c) : IsAlnumLower(c); };
  if (s.empty() || s.size() > 63 || !alnum(s.front()) || !alnum(s.back())) {
    return false;
  }
  for (char c : s) {
    if (!alnum(c) && c != '-') {
      return false;
    }
  }
  return true;
}

// Istio's wildcard first label: "*", or a label with a leading "*" or "*-".
bool IsWildcardLabel(std::string_view s) {
  if (s == "*") {
    return true;
  }
  if (s.size() > 63) {
    return false;
  }
  if (StartsWith(s, "*-")) {
    s.remove_prefix(2);
  } else if (StartsWith(s, "*")) {
    s.remove_prefix(1);
  }
  return IsLabel(s, true);
}

std::string CheckLength(std::string_view host) {
  if (host.empty()) {
    return "empty domain name not allowed";
  }
  if (host.size() > 255) {
    return "domain name \"" + std::string(host.substr(0, 64)) + "...\" too long (max 255)";
  }
  return {};
}

// The labels after the first one: DNS labels, the last one not all digits, an empty last
// label (a trailing dot) allowed.
std::string ValidateLabels(std::string_view full, std::string_view rest) {
  auto labels = Split(rest, '.', false);
  const std::string& tld = labels.back();
  if (!tld.empty() && tld.find_first_not_of("0123456789") == std::string::npos) {
    return "domain name \"" + std::string(full) + "\" invalid (top level domain \"" + tld +
           "\" cannot be all-numeric)";
  }
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i + 1 == labels.size() && labels[i].empty()) {
      break;
    }
    if (!IsLabel(labels[i], true)) {
      return "domain name \"" + std::string(full) + "\" invalid (label \"" + labels[i] +
             "\" invalid)";
    }
  }
  return {};
}
}  // namespace

bool IsDns1123Label(std::string_view s) { return IsLabel(s, false); }
bool IsDns1123LabelAnyCase(std::string_view s) { return IsLabel(s, true); }

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

bool IsValidIp(std::string_view s) {
  std::string text(s);
  unsigned char buf[16];
  return inet_pton(AF_INET, text.c_str(), buf) == 1 || inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

bool IsValidIpOrCidr(std::string_view s) {
  auto slash = s.find('/');
  if (slash == std::string_view::npos) {
    return IsValidIp(s);
  }
  std::string ip(s.substr(0, slash));
  std::string_view bits = s.substr(slash + 1);
  unsigned char buf[16];
  int max = 0;
  if (inet_pton(AF_INET, ip.c_str(), buf) == 1) {
    max = 32;
  } else if (inet_pton(AF_INET6, ip.c_str(), buf) == 1) {
    max = 128;
  } else {
    return false;
  }
  if (bits.empty() || bits.size() > 3 || bits.find_first_not_of("0123456789") != bits.npos ||
      (bits.size() > 1 && bits[0] == '0')) {
    return false;
  }
  int n = 0;
  for (char c : bits) {
    n = n * 10 + (c - '0');
  }
  return n <= max;
}

std::string ValidateWildcardDomain(std::string_view host) {
  if (auto err = CheckLength(host); !err.empty()) {
    return err;
  }
  auto dot = host.find('.');
  std::string_view first = host.substr(0, dot);
  if (!IsWildcardLabel(first)) {
    return "domain name \"" + std::string(host) + "\" invalid (label \"" + std::string(first) +
           "\" invalid)";
  }
  if (dot == std::string_view::npos) {
    return {};
  }
  return ValidateLabels(host, host.substr(dot + 1));
}

std::string ValidateFqdn(std::string_view host) {
  if (auto err = CheckLength(host); !err.empty()) {
    return err;
  }
  return ValidateLabels(host, host);
}

std::string ValidateHost(std::string_view host) { return ValidateWildcardDomain(host); }

std::string ValidateGatewayHost(std::string_view host) {
  auto slash = host.find('/');
  if (slash != std::string_view::npos) {
    std::string_view ns = host.substr(0, slash);
    std::string_view name = host.substr(slash + 1);
    if (ns.empty() || name.empty()) {
      return "config namespace and dnsName in host entry cannot be empty";
    }
    if (ns != "*" && ns != "." && !IsDns1123LabelAnyCase(ns)) {
      return "invalid namespace value \"" + std::string(ns) + "\" in gateway host \"" +
             std::string(host) + "\" (use \"*\", \".\" or a namespace name)";
    }
    host = name;
  }
  if (host != "*" && host.find('.') == std::string_view::npos) {
    return "short names (non FQDN) are not allowed in gateway hosts: \"" + std::string(host) +
           "\" (use a full name such as \"" + std::string(host) + ".example.com\", or \"*\")";
  }
  if (auto err = ValidateWildcardDomain(host); !err.empty() && !IsValidIp(host)) {
    return err;
  }
  return {};
}

bool IsValidHeaderName(std::string_view s, bool allow_pseudo) {
  if (allow_pseudo && StartsWith(s, ":")) {
    s.remove_prefix(1);
  }
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

std::string ValidateHeaderValue(std::string_view value) {
  if (value.find_first_of("\r\n") != std::string_view::npos ||
      value.find('\0') != std::string_view::npos) {
    return "header value must not contain CR, LF or NUL";
  }
  auto invalid = [&] {
    return "header value configuration " + std::string(value) +
           " is invalid: a '%' must be written \"%%\" or start a %COMMAND% (e.g. %HOSTNAME%)";
  };
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '%') {
      continue;
    }
    if (i + 1 < value.size() && value[i + 1] == '%') {
      ++i;  // an escaped percent
      continue;
    }
    size_t j = i + 1;
    while (j < value.size() && ((value[j] >= 'A' && value[j] <= 'Z') ||
                                (value[j] >= '0' && value[j] <= '9') || value[j] == '_')) {
      ++j;
    }
    if (j == i + 1) {
      return invalid();
    }
    if (j < value.size() && value[j] == '(') {
      size_t close = value.find(')', j);
      if (close == std::string_view::npos) {
        return invalid();
      }
      j = close + 1;
      if (j < value.size() && value[j] == ':') {  // "%REQ(x):10%": a length limit
        ++j;
        while (j < value.size() && value[j] >= '0' && value[j] <= '9') {
          ++j;
        }
      }
    }
    if (j >= value.size() || value[j] != '%') {
      return invalid();
    }
    i = j;
  }
  return {};
}

namespace {
// "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", at most 63 characters.
bool IsQualifiedNamePart(std::string_view s) {
  if (s.empty() || s.size() > 63 || !IsAlnum(s.front()) || !IsAlnum(s.back())) {
    return false;
  }
  for (char c : s) {
    if (!IsAlnum(c) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}
}  // namespace

std::string ValidateLabelKey(std::string_view key) {
  std::string_view name = key;
  auto slash = key.find('/');
  if (slash != std::string_view::npos) {
    std::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (!IsDns1123Subdomain(prefix)) {
      return "invalid label key \"" + std::string(key) + "\": the prefix must be a DNS subdomain";
    }
  }
  if (!IsQualifiedNamePart(name)) {
    return "invalid label key \"" + std::string(key) +
           "\": at most 63 letters, digits, '-', '_' or '.', beginning and ending with a "
           "letter or digit";
  }
  return {};
}

std::string ValidateLabelValue(std::string_view value) {
  if (!value.empty() && !IsQualifiedNamePart(value)) {
    return "invalid label value \"" + std::string(value) +
           "\": at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter "
           "or digit";
  }
  return {};
}

}  // namespace skiff::api

#include "proxy/policy/redirect.h"

namespace skiff::policy {

namespace {
// "host:port" / "[v6]:port" -> the host part.
std::string_view HostPart(std::string_view authority) {
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    return close == std::string_view::npos ? authority : authority.substr(0, close + 1);
  }
  size_t colon = authority.rfind(':');
  return colon == std::string_view::npos ? authority : authority.substr(0, colon);
}
}  // namespace

std::string RedirectLocation(const v1::Redirect& red, std::string_view request_scheme,
                             std::string_view authority, std::string_view path,
                             std::string_view query, std::string_view matched_prefix) {
  std::string location = red.scheme().empty() ? std::string(request_scheme) : red.scheme();
  location += "://";
  std::string_view host =
      red.authority().empty() ? HostPart(authority) : std::string_view(red.authority());
  location.append(host.data(), host.size());
  if (red.port() != 0) {
    // The scheme's default port is left out ("https://shop.example/", as browsers write it).
    std::string_view scheme = red.scheme().empty() ? request_scheme : red.scheme();
    bool default_port =
        (scheme == "https" && red.port() == 443) || (scheme == "http" && red.port() == 80);
    if (!default_port) {
      location += ':';
      location += std::to_string(red.port());
    }
  } else if (red.authority().empty() && host.size() != authority.size()) {
    // The request's ":port" is kept, but for a default port: the final scheme's, or the
    // request scheme's when the redirect changes the scheme (as Envoy: http://a:80 to
    // https://a, not https://a:80).
    std::string_view port = authority.substr(host.size());
    std::string_view scheme = red.scheme().empty() ? request_scheme : red.scheme();
    auto is_default = [&](std::string_view s) {
      return (s == "https" && port == ":443") || (s == "http" && port == ":80");
    };
    if (!is_default(scheme) && !(scheme != request_scheme && is_default(request_scheme))) {
      location.append(port);
    }
  }
  if (!red.prefix_rewrite().empty()) {
    location += red.prefix_rewrite();
    if (matched_prefix.size() < path.size()) {
      location.append(path.substr(matched_prefix.size()));
    }
    if (!query.empty()) {
      location += '?';
      location.append(query.data(), query.size());
    }
  } else if (red.uri().empty()) {
    location.append(path.data(), path.size());
    if (!query.empty()) {
      location += '?';
      location.append(query.data(), query.size());
    }
  } else {
    location += red.uri();
    if (!query.empty() && red.uri().find('?') == std::string::npos) {
      location += '?';
      location.append(query.data(), query.size());
    }
  }
  return location;
}

int RedirectStatus(const v1::Redirect& redirect) {
  return redirect.response_code() != 0 ? static_cast<int>(redirect.response_code()) : 301;
}

}  // namespace skiff::policy

#include "proxy/http/authority.h"

#include <array>
#include <string_view>

namespace skiff::http {
namespace {

// reg-name = *( unreserved / pct-encoded / sub-delims ); IPv4 fits in it.
constexpr std::array<bool, 256> MakeRegNameTable() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) {
    t[c] = true;
  }
  for (int c = 'a'; c <= 'z'; ++c) {
    t[c] = true;
  }
  for (int c = 'A'; c <= 'Z'; ++c) {
    t[c] = true;
  }
  for (char c : std::string_view("-._~!$&'()*+,;=%")) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}
constexpr std::array<bool, 256> kRegName = MakeRegNameTable();

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

}  // namespace

std::optional<Authority> ParseAuthority(std::string_view value) {
  Authority a;
  std::string_view rest;
  if (!value.empty() && value.front() == '[') {
    size_t close = value.find(']');
    if (close == std::string_view::npos || close < 2) {
      return std::nullopt;
    }
    // IPv6address or IPvFuture ("v" 1*HEXDIG "." ...): hex digits, ':' and '.', plus the
    // few letters IPvFuture allows; anything else is not an IP-literal.
    for (size_t i = 1; i < close; ++i) {
      char c = value[i];
      if (!(IsHex(c) || c == ':' || c == '.' || c == 'v' || c == 'V')) {
        return std::nullopt;
      }
    }
    a.host = value.substr(0, close + 1);
    rest = value.substr(close + 1);
  } else {
    size_t colon = value.find(':');
    a.host = value.substr(0, colon);
    for (char c : a.host) {
      if (!kRegName[static_cast<unsigned char>(c)]) {
        return std::nullopt;
      }
    }
    rest = colon == std::string_view::npos ? std::string_view() : value.substr(colon);
  }
  if (rest.empty()) {
    return a;
  }
  if (rest.front() != ':') {
    return std::nullopt;
  }
  rest.remove_prefix(1);
  if (rest.empty()) {
    return a;  // "host:" - an empty port is allowed and means none
  }
  if (rest.size() > 5) {
    return std::nullopt;
  }
  uint32_t port = 0;
  for (char c : rest) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port > 65535) {
    return std::nullopt;
  }
  a.port = static_cast<uint16_t>(port);
  return a;
}

}  // namespace skiff::http

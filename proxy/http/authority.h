#pragma once
// The authority of a request (Host, or the authority of an absolute-form target), as
// RFC 3986 section 3.2 defines it without userinfo: host [ ":" port ], where host is an
// IP-literal ("[v6]"), an IPv4 address or a reg-name.
#include <cstdint>
#include <optional>
#include <string_view>

namespace skiff::http {

struct Authority {
  std::string_view host;         // without brackets' removal: "[::1]" stays "[::1]"
  std::optional<uint16_t> port;  // absent when there is no port or it is empty ("a:")
};

// Parses `value`; nullopt when it is not a valid authority (bad bytes, a port that is not
// 0-65535, unbalanced brackets, userinfo). An empty value is valid (RFC 9112 3.2 allows
// an empty Host when the target has no authority).
[[nodiscard]] std::optional<Authority> ParseAuthority(std::string_view value);

}  // namespace skiff::http

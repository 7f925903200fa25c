#pragma once
// Values taken from a request by their exact name — a cookie, a query parameter (for the
// consistent hash and the router's queryParams matches) — and the cookie the proxy sets
// when a hash policy with a ttl finds none.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace skiff::policy {

// The value of the cookie called `name` in a Cookie header ("a=1; b=2"), its surrounding
// double quotes removed; nullopt when there is none.
std::optional<std::string_view> CookieValue(std::string_view cookie_header, std::string_view name);

// The value of the parameter called `name` in a query string ("a=1&b=2", without '?'):
// "" for "a" or "a="; nullopt when there is none.
std::optional<std::string_view> QueryParameter(std::string_view query, std::string_view name);

// The Set-Cookie value for a generated hash cookie: name="value", then Max-Age (a ttl of 0
// makes a session cookie) and Path when given, and HttpOnly, as Envoy writes it.
std::string HashCookieField(std::string_view name, std::string_view value, std::string_view path,
                            uint64_t ttl_seconds);

}  // namespace skiff::policy

#include "common/duration.h"

#include <cstdint>
#include <cstdio>
#include <limits>

namespace skiff {

std::optional<std::chrono::nanoseconds> ParseDuration(std::string_view s) {
  if (s.empty()) {
    return std::nullopt;
  }
  bool negative = false;
  if (s[0] == '-' || s[0] == '+') {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") {
    return std::chrono::nanoseconds(0);
  }
  if (s.empty()) {
    return std::nullopt;
  }
  // Sum of (number, unit) pairs, computed in long double nanoseconds then checked.
  long double total = 0;
  while (!s.empty()) {
    size_t i = 0;
    long double whole = 0;
    bool digits = false;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      whole = whole * 10 + (s[i] - '0');
      ++i;
      digits = true;
    }
    long double frac = 0;
    if (i < s.size() && s[i] == '.') {
      ++i;
      long double scale = 0.1L;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        frac += (s[i] - '0') * scale;
        scale /= 10;
        ++i;
        digits = true;
      }
    }
    if (!digits) {
      return std::nullopt;
    }
    size_t u = i;
    while (u < s.size() && !(s[u] >= '0' && s[u] <= '9') && s[u] != '.') {
      ++u;
    }
    std::string_view unit = s.substr(i, u - i);
    long double mult = 0;
    if (unit == "ns") {
      mult = 1;
    } else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") {
      mult = 1e3L;
    } else if (unit == "ms") {
      mult = 1e6L;
    } else if (unit == "s") {
      mult = 1e9L;
    } else if (unit == "m") {
      mult = 60e9L;
    } else if (unit == "h") {
      mult = 3600e9L;
    } else {
      return std::nullopt;  // missing or unknown unit
    }
    total += (whole + frac) * mult;
    if (total > static_cast<long double>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    s.remove_prefix(u);
  }
  auto ns = static_cast<int64_t>(total + 0.5L);
  return std::chrono::nanoseconds(negative ? -ns : ns);
}

std::string FormatDuration(std::chrono::nanoseconds d) {
  int64_t ns = d.count();
  std::string sign;
  if (ns < 0) {
    sign = "-";
    ns = -ns;
  }
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  char buf[64];
  if (frac == 0) {
    std::snprintf(buf, sizeof buf, "%lds", static_cast<long>(secs));
  } else if (frac % 1000000 == 0) {
    std::snprintf(buf, sizeof buf, "%ld.%03lds", static_cast<long>(secs),
                  static_cast<long>(frac / 1000000));
  } else if (frac % 1000 == 0) {
    std::snprintf(buf, sizeof buf, "%ld.%06lds", static_cast<long>(secs),
                  static_cast<long>(frac / 1000));
  } else {
    std::snprintf(buf, sizeof buf, "%ld.%09lds", static_cast<long>(secs), static_cast<long>(frac));
  }
  return sign + buf;
}

}  // namespace skiff

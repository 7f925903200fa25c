#include "proxy/http/grpc.h"

#include <charconv>
#include <cstdint>

#include "proxy/http/headers.h"

namespace skiff::http {

std::optional<std::chrono::milliseconds> ParseGrpcTimeout(std::string_view v) {
  if (v.size() < 2 || v.size() > 9) {
    return std::nullopt;
  }
  uint64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  switch (v.back()) {
    case 'H':
      return std::chrono::milliseconds(n * 3600 * 1000);
    case 'M':
      return std::chrono::milliseconds(n * 60 * 1000);
    case 'S':
      return std::chrono::milliseconds(n * 1000);
    case 'm':
      return std::chrono::milliseconds(n);
    case 'u':
      return std::chrono::milliseconds((n + 999) / 1000);
    case 'n':
      return std::chrono::milliseconds((n + 999999) / 1000000);
    default:
      return std::nullopt;
  }
}

int GrpcStatusForHttp(int status) {
  switch (status) {
    case 400:
      return 13;  // INTERNAL
    case 401:
      return 16;  // UNAUTHENTICATED
    case 403:
      return 7;  // PERMISSION_DENIED
    case 404:
      return 12;  // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14;  // UNAVAILABLE
    default:
      return 2;  // UNKNOWN
  }
}

void AppendGrpcMessage(std::string* out, std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char ch : message) {
    auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out->push_back(ch);
    } else {
      out->push_back('%');
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    }
  }
}

int GrpcStatusOf(std::string_view fields) {
  while (!fields.empty()) {
    size_t eol = fields.find("\r\n");
    std::string_view line = fields.substr(0, eol);
    fields = eol == std::string_view::npos ? std::string_view() : fields.substr(eol + 2);
    if (line.size() > 12 && EqualsIgnoreCase(line.substr(0, 12), "grpc-status:")) {
      std::string_view v = line.substr(12);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
        v.remove_prefix(1);
      }
      int code = -1;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), code);
      return ec == std::errc() ? code : -1;
    }
  }
  return -1;
}

}  // namespace skiff::http

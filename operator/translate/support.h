#pragma once
// Small helpers every phase of the translation uses: string-keyed maps that look up by
// string_view, numbers appended without allocating, durations, label selectors and sort keys.
#include <google/protobuf/duration.pb.h>

#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "operator/api/types.h"

namespace skiff::translate {

// Hash maps with std::string keys that can be looked up with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

inline void AppendNumber(std::string* out, uint64_t n) {
  char buf[20];
  auto res = std::to_chars(buf, buf + sizeof(buf), n);
  out->append(buf, res.ptr);
}

inline void SetDuration(google::protobuf::Duration* out, api::Duration d) {
  out->set_seconds(d.count() / 1000000000);
  out->set_nanos(static_cast<int32_t>(d.count() % 1000000000));
}

// Gateway server protocols skiff serves as HTTP (HTTP/1.1, and HTTP/2 told by its preface).
inline bool IsServedProtocol(std::string_view protocol) {
  return protocol == "HTTP" || protocol == "HTTP2" || protocol == "GRPC";
}

// Gateway server protocols served as plain TCP, by the VirtualServices' tcp: routes (as
// Istio, which proxies MONGO, MYSQL and REDIS as TCP unless their filters are turned on).
inline bool IsTcpProtocol(std::string_view protocol) {
  return protocol == "TCP" || protocol == "MONGO" || protocol == "MYSQL" || protocol == "REDIS";
}

// Is a Gateway server served (HTTP, HTTP2, GRPC, TCP; HTTPS and TLS with a mode skiff serves)? When
// not, `*why` says why unless the server is invalid anyway (gateway_listeners.cc).
bool GatewayServerServed(const api::Server& s, std::string* why);

inline bool LabelsMatch(const api::Labels& selector, const api::Labels& labels) {
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) {
      return false;
    }
  }
  return true;
}

// The first 8 bytes of `s` as a big-endian number (zero-padded): a < b for two prefixes
// means the same for the strings; equal prefixes say nothing.
inline uint64_t Prefix(std::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) {
    v = v << 8 | (i < s.size() ? static_cast<unsigned char>(s[i]) : 0U);
  }
  return v;
}

}  // namespace skiff::translate

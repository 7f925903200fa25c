// What the decoders of the Istio kinds share (decode_gateway.cc, decode_virtual_service.cc,
// decode_http_route.cc, decode_destination_rule.cc). Together they follow Istio's rules
// (pkg/config/validation): what istiod's webhook refuses is an error, what it accepts is
// accepted, and every problem names the field path it is about. On top of Istio's rules,
// nothing that reaches the wire from config (paths, authorities, header names and values,
// CORS lists) may hold CR, LF or NUL. Fields Istio accepts but skiff does not serve yet are
// validated all the same and reported as warnings.
#include <cctype>
#include <set>

#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

namespace skiff::api {

namespace {

// Istio's ValidateDuration: at least 1ms (the Reader already refuses sub-millisecond
// precision and negative values).
void RequireAtLeastMs(Reader& r, std::string_view field, const std::optional<Duration>& d) {
  if (d && *d < std::chrono::milliseconds(1)) {
    r.msgs().Error(r.Path(field), "duration must be at least 1ms");
  }
}

}  // namespace

bool IsIstioPortProtocol(std::string_view upper) {
  static const std::set<std::string, std::less<>> kProtocols = {
      "HTTP", "HTTPS", "HTTP2", "GRPC",  "GRPC-WEB", "TCP",
      "TLS",  "MONGO", "REDIS", "MYSQL", "UDP",      "HTTP_PROXY"};
  return kProtocols.count(upper) > 0;
}

bool IsIstioHttpProtocol(std::string_view p) {
  return p == "HTTP" || p == "HTTP2" || p == "GRPC" || p == "GRPC-WEB" || p == "HTTP_PROXY";
}

std::string UpperAscii(std::string s) {
  for (auto& c : s) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return s;
}

bool HasCrLfNul(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos ||
         s.find('\0') != std::string_view::npos;
}

std::optional<Duration> PositiveDuration(Reader& r, std::string_view field) {
  auto d = r.DurationField(field);
  RequireAtLeastMs(r, field, d);
  return d;
}

void CheckLabels(const Labels& labels, const std::string& path, Messages& msgs) {
  for (const auto& [k, v] : labels) {
    if (auto err = ValidateLabelKey(k); !err.empty()) {
      msgs.Error(path + "." + k, err);
    } else if (auto verr = ValidateLabelValue(v); !verr.empty()) {
      msgs.Error(path + "." + k, verr);
    }
  }
}

void CheckExportTo(const std::vector<std::string>& export_to, const std::string& path,
                   Messages& msgs) {
  std::set<std::string> seen;
  for (size_t i = 0; i < export_to.size(); ++i) {
    const std::string& e = export_to[i];
    if (e != "*" && e != "." && e != "~" && !IsDns1123Label(e)) {
      msgs.Error(IndexPath(path, i), "\"" + e + "\" is not \"*\", \".\" or a namespace");
    } else if (!seen.insert(e).second) {
      msgs.Error(IndexPath(path, i), "duplicate entry \"" + e + "\"");
    }
  }
  if (seen.count("*") > 0 && export_to.size() > 1) {
    msgs.Error(path, "\"*\" (every namespace) cannot be combined with other entries");
  }
}

}  // namespace skiff::api

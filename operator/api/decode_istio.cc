// Decoding and validation of Gateway, VirtualService and DestinationRule with Istio's rules
// (pkg/config/validation): what istiod's webhook refuses is an error here, what it accepts
// is accepted, and every problem names the field path it is about. On top of Istio's rules,
// nothing that reaches the wire from config (paths, authorities, header names and values,
// CORS lists) may hold CR, LF or NUL. Fields Istio accepts but skiff does not serve yet are
// validated all the same and reported as warnings.
#include <re2/re2.h>

#include <cmath>
#include <limits>
#include <set>

#include "common/strings.h"
#include "operator/api/decode_internal.h"

namespace skiff::api {

namespace {

const std::set<std::string, std::less<>> kRetryConditions = {
    "5xx", "gateway-error", "reset", "connect-failure", "envoy-ratelimited", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "reset-before-request",
    "http3-post-connect-failure",
    // gRPC conditions, as Istio accepts them
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"};

// The status codes Go's net/http names (Istio accepts a bare code in retryOn when it has a
// name there).
bool IsKnownHttpStatus(int code) {
  static const std::set<int> kCodes = {
      100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301,
      302, 303, 304, 305, 306, 307, 308, 400, 401, 402, 403, 404, 405, 406, 407, 408,
      409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424, 425, 426,
      428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511};
  return kCodes.count(code) > 0;
}

// Gateway server protocols, as Istio parses them (case-insensitive).
const std::set<std::string, std::less<>> kServerProtocols = {
    "HTTP", "HTTPS", "HTTP2", "GRPC",  "GRPC-WEB", "TCP",
    "TLS",  "MONGO", "REDIS", "MYSQL", "UDP",      "HTTP_PROXY"};
bool IsHttpProtocol(std::string_view p) {
  return p == "HTTP" || p == "HTTP2" || p == "GRPC" || p == "GRPC-WEB" || p == "HTTP_PROXY";
}
bool IsTlsProtocol(std::string_view p) { return p == "HTTPS" || p == "TLS"; }

const std::set<std::string, std::less<>> kGrpcCodes = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const std::set<std::string, std::less<>> kHttpMethods = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;
constexpr int64_t kMaxWeight = std::numeric_limits<int32_t>::max();

bool HasCrLfNul(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos ||
         s.find('\0') != std::string_view::npos;
}

// A path as a request target's origin form: "/" then path and query characters.
std::string ValidatePath(std::string_view path) {
  if (HasCrLfNul(path)) {
    return "must not contain CR, LF or NUL";
  }
  if (path.empty() || path[0] != '/') {
    return "\"" + std::string(path) + "\" is not a path: it must start with '/'";
  }
  for (unsigned char c : path) {
    if (c <= 0x20 || c == 0x7f || c == '#') {
      return "\"" + std::string(path) +
             "\" is not a valid path: no spaces, control characters or '#' (percent-encode "
             "them)";
    }
  }
  return {};
}

// An authority as "host[:port]": a registered name or IPv4 address, or "[IPv6]".
std::string ValidateAuthority(std::string_view authority) {
  if (HasCrLfNul(authority)) {
    return "must not contain CR, LF or NUL";
  }
  std::string_view host = authority;
  std::string_view port;
  if (StartsWith(host, "[")) {
    auto close = host.find(']');
    if (close == std::string_view::npos || !IsValidIp(host.substr(1, close - 1))) {
      return "\"" + std::string(authority) + "\" is not a valid authority (host[:port])";
    }
    port = host.substr(close + 1);
    if (!port.empty() && port[0] != ':') {
      return "\"" + std::string(authority) + "\" is not a valid authority (host[:port])";
    }
    host = {};
  } else {
    auto colon = host.rfind(':');
    if (colon != std::string_view::npos) {
      port = host.substr(colon);
      host = host.substr(0, colon);
    }
    if (host.empty()) {
      return "\"" + std::string(authority) + "\" is not a valid authority (host[:port])";
    }
    for (unsigned char c : host) {
      bool ok =
          std::isalnum(c) != 0 ||
          std::string_view("-._~!$&'()*+,;=%").find(static_cast<char>(c)) != std::string_view::npos;
      if (!ok) {
        return "\"" + std::string(authority) + "\" is not a valid authority (host[:port])";
      }
    }
  }
  if (!port.empty()) {
    std::string_view digits = port.substr(1);
    if (digits.empty() || digits.size() > 5 ||
        digits.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoi(std::string(digits)) > 65535) {
      return "\"" + std::string(authority) + "\" has an invalid port";
    }
  }
  return {};
}

// Istio's ValidateDuration: at least 1ms (the Reader already refuses sub-millisecond
// precision and negative values).
void RequireAtLeastMs(Reader& r, std::string_view field, const std::optional<Duration>& d) {
  if (d && *d < std::chrono::milliseconds(1)) {
    r.msgs().Error(r.Path(field), "duration must be at least 1ms");
  }
}

std::optional<Duration> PositiveDuration(Reader& r, std::string_view field) {
  auto d = r.DurationField(field);
  RequireAtLeastMs(r, field, d);
  return d;
}

// Where a string match is, which decides Istio's rules for it.
enum class MatchRules {
  kUri,     // an empty prefix is fine (it matches every path)
  kStrict,  // scheme, method, authority, headers, query parameters: no empty prefix
  kOrigin,  // CORS allowOrigins: a match type with a non-empty value
};

void CheckRegex(const std::string& re_text, const std::string& path, Messages& msgs) {
  if (re_text.empty()) {
    msgs.Error(path, "a regex match must not be empty");
    return;
  }
  RE2 re(re_text, RE2::Quiet);
  if (!re.ok()) {
    msgs.Error(path, "invalid RE2 regular expression \"" + re_text + "\": " + re.error());
  }
}

// A StringMatch; {} (no type) is kUnset. `star_is_presence`: headers' regex "*" is Istio's
// way to ask for presence only, not a regex.
std::optional<StringMatch> DecodeStringMatch(const nlohmann::json& j, const std::string& path,
                                             Messages& msgs, MatchRules rules,
                                             bool star_is_presence = false) {
  Reader r(j, path, msgs);
  if (!r.ok()) {
    return std::nullopt;
  }
  StringMatch m;
  int count = 0;
  for (auto [field, type] : {std::pair{"exact", StringMatch::Type::kExact},
                             std::pair{"prefix", StringMatch::Type::kPrefix},
                             std::pair{"regex", StringMatch::Type::kRegex}}) {
    if (r.Get(field) != nullptr) {
      ++count;
      m.type = type;
      m.value = r.String(field);
    }
  }
  if (count > 1) {
    msgs.Error(path, "only one of exact, prefix or regex may be set");
    return m;
  }
  if (m.type == StringMatch::Type::kRegex && star_is_presence && m.value == "*") {
    m.type = StringMatch::Type::kUnset;  // present_match
    m.value.clear();
    return m;
  }
  if (rules == MatchRules::kOrigin && m.value.empty()) {
    msgs.Error(path, count == 0 ? "one of exact, prefix or regex is required"
                                : "an allowed origin must not be empty");
    return m;
  }
  if (m.type == StringMatch::Type::kPrefix && m.value.empty() && rules != MatchRules::kUri) {
    msgs.Error(r.Path("prefix"), "a prefix match must not be empty");
  }
  if (m.type == StringMatch::Type::kRegex) {
    CheckRegex(m.value, r.Path("regex"), msgs);
  }
  if (rules == MatchRules::kOrigin && HasCrLfNul(m.value)) {
    msgs.Error(path, "must not contain CR, LF or NUL");
  }
  return m;
}

bool IsJwtClaimRoute(std::string_view name) { return StartsWith(name, "@request.auth.claims."); }

// headers / withoutHeaders / queryParams of a match.
void DecodeStringMatchMap(Reader& r, std::string_view field,
                          std::vector<std::pair<std::string, StringMatch>>* out, bool headers,
                          bool* jwt_claims) {
  const auto* v = r.Get(field);
  if (v == nullptr) {
    return;
  }
  std::string path = r.Path(field);
  if (!v->is_object()) {
    r.msgs().Error(path, "expected a map, got " + JsonTypeName(*v));
    return;
  }
  for (auto it = v->begin(); it != v->end(); ++it) {
    std::string item_path = path + "." + it.key();
    if (headers) {
      if (IsJwtClaimRoute(it.key())) {
        *jwt_claims = true;
      } else if (!IsValidHeaderName(it.key(), /*allow_pseudo=*/true)) {
        r.msgs().Error(item_path, "invalid header name \"" + it.key() + "\"");
        continue;
      }
    } else if (it.key().empty()) {
      r.msgs().Error(item_path, "a query parameter name must not be empty");
      continue;
    }
    if (it.value().is_null()) {
      r.msgs().Error(item_path, "a match cannot be null (use {} to match presence)");
      continue;
    }
    // An empty match ({}) checks presence only.
    auto m = DecodeStringMatch(it.value(), item_path, r.msgs(), MatchRules::kStrict, headers);
    if (m) {
      out->emplace_back(headers ? ToLower(it.key()) : it.key(), *m);
    }
  }
}

std::optional<Percent> DecodePercent(Reader& r, std::string_view field, bool fault) {
  const auto* v = r.Get(field);
  if (v == nullptr) {
    return std::nullopt;
  }
  Reader pr(*v, r.Path(field), r.msgs());
  auto value = pr.Double("value");
  Percent p;
  p.value = value.value_or(0.0);
  if (p.value < 0 || p.value > 100) {
    r.msgs().Error(pr.Path("value"), "percentage must be between 0 and 100");
  } else if (fault && p.value > 0 && p.value < 0.0001) {
    r.msgs().Error(pr.Path("value"), "percentage must be 0 or at least 0.0001");
  }
  return p;
}

// A destination host, subset and port, as Istio's validateDestination.
Destination DecodeDestination(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  Destination d;
  Reader r(j, path, msgs);
  if (!r.ok()) {
    msgs.Error(path, "required");
    return d;
  }
  d.host = r.String("host");
  d.subset = r.String("subset");
  if (d.host.empty()) {
    msgs.Error(r.Path("host"), "required");
  } else if (d.host == "*") {
    msgs.Error(r.Path("host"), "\"*\" is not a valid destination host");
  } else if (auto err = ValidateWildcardDomain(d.host); !err.empty()) {
    msgs.Error(r.Path("host"), err);
  }
  if (!d.subset.empty() && !IsDns1123LabelAnyCase(d.subset)) {
    msgs.Error(r.Path("subset"), "\"" + d.subset + "\" is not a valid subset name");
  }
  if (const auto* p = r.Get("port")) {
    Reader pr(*p, r.Path("port"), msgs);
    auto n = pr.Int("number");
    if (!n || *n < 1 || *n > 65535) {
      msgs.Error(pr.Path("number"), "must be a port number between 1 and 65535");
    } else {
      d.port = static_cast<uint32_t>(*n);
    }
  }
  return d;
}

// A '%' that is not part of "%%" (in a value ValidateHeaderValue accepted: a %COMMAND%).
bool HasEnvoyCommand(std::string_view v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%') {
      if (i + 1 < v.size() && v[i + 1] == '%') {
        ++i;
      } else {
        return true;
      }
    }
  }
  return false;
}

// Header operations. `request`: a set or add of ":authority" is allowed (an authority
// rewrite); no other pseudo-header, and no empty name.
HeaderOperations DecodeHeaderOperations(const nlohmann::json& j, const std::string& path,
                                        Messages& msgs, bool request) {
  HeaderOperations ops;
  Reader r(j, path, msgs);
  auto kv = [&](std::string_view field, std::vector<std::pair<std::string, std::string>>* out) {
    for (const auto& [k, v] : r.StringMap(field)) {
      std::string at = r.Path(field) + "." + k;
      bool authority = request && ToLower(k) == ":authority";
      if (!authority && !IsValidHeaderName(k)) {
        msgs.Error(at, k.empty() ? "a header name must not be empty"
                                 : "invalid header name \"" + k + "\"");
        continue;
      }
      if (auto err = ValidateHeaderValue(v); !err.empty()) {
        msgs.Error(at, err);
        continue;
      }
      if (HasEnvoyCommand(v)) {
        msgs.Warn(at,
                  "Envoy's %COMMAND% substitutions are not supported by skiff yet; the "
                  "header gets the text as written (with %% as %)");
      }
      if (authority && v.empty()) {
        msgs.Error(at, "an authority must not be empty");
        continue;
      }
      if (authority) {
        if (auto err = ValidateAuthority(v); !err.empty()) {
          msgs.Error(at, err);
          continue;
        }
      }
      out->emplace_back(ToLower(k), v);
    }
  };
  kv("set", &ops.set);
  kv("add", &ops.add);
  auto remove = r.StringList("remove");
  for (size_t i = 0; i < remove.size(); ++i) {
    if (!IsValidHeaderName(remove[i])) {
      msgs.Error(IndexPath(r.Path("remove"), i), remove[i].empty()
                                                     ? "a header name must not be empty"
                                                     : "invalid header name \"" + remove[i] + "\"");
      continue;
    }
    ops.remove.push_back(ToLower(remove[i]));
  }
  return ops;
}

bool Empty(const HeaderOperations& h) { return h.set.empty() && h.add.empty() && h.remove.empty(); }

bool SetsAuthority(const HeaderOperations& h) {
  for (const auto* list : {&h.set, &h.add}) {
    for (const auto& [k, v] : *list) {
      if (k == ":authority") {
        return true;
      }
    }
  }
  return false;
}

// Absent when no operation is set, so that objects without headers carry no Headers.
Boxed<Headers> DecodeHeaders(Reader& parent) {
  const auto* v = parent.Get("headers");
  if (v == nullptr) {
    return std::nullopt;
  }
  Headers h;
  Reader r(*v, parent.Path("headers"), parent.msgs());
  if (const auto* req = r.Get("request")) {
    h.request = DecodeHeaderOperations(*req, r.Path("request"), r.msgs(), /*request=*/true);
  }
  if (const auto* resp = r.Get("response")) {
    h.response = DecodeHeaderOperations(*resp, r.Path("response"), r.msgs(), /*request=*/false);
  }
  if (Empty(h.request) && Empty(h.response)) {
    return std::nullopt;
  }
  return h;
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

// VirtualService gateways (spec.gateways and match[].gateways), as Istio's
// validateGatewayNames: "mesh", "name", "ns/name", or a legacy FQDN "name.ns.svc..." (a
// warning).
void CheckGatewayNames(const std::vector<std::string>& names, const std::string& path,
                       Messages& msgs) {
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& g = names[i];
    std::string at = IndexPath(path, i);
    if (g == "mesh") {
      continue;
    }
    auto slash = g.find('/');
    if (slash == std::string::npos) {
      if (g.find('.') != std::string::npos) {
        auto dot = g.find('.');
        auto rest = g.substr(dot + 1);
        msgs.Warn(at, "legacy gateway name format \"" + g + "\"; prefer namespace/name: \"" +
                          rest.substr(0, rest.find('.')) + "/" + g.substr(0, dot) + "\"");
        if (auto err = ValidateFqdn(g); !err.empty()) {
          msgs.Error(at, err);
        }
      } else if (!IsDns1123LabelAnyCase(g)) {
        msgs.Error(at, "invalid gateway name \"" + g + "\" (use name, namespace/name or mesh)");
      }
      continue;
    }
    std::string ns = g.substr(0, slash);
    std::string name = g.substr(slash + 1);
    if (ns.empty() || name.empty()) {
      msgs.Error(at, "namespace and gateway name in \"" + g + "\" cannot be empty");
    } else if (ns != "." && !IsDns1123Label(ns)) {
      msgs.Error(at, "invalid namespace \"" + ns + "\" in gateway reference \"" + g + "\"");
    } else if (!IsDns1123LabelAnyCase(name)) {
      msgs.Error(at, "invalid gateway name \"" + name + "\" in gateway reference \"" + g + "\"");
    }
  }
}

// What a match holds that the VirtualService checks as a whole.
struct MatchFacts {
  bool jwt_claims = false;
};

HTTPMatchRequest DecodeMatch(const nlohmann::json& j, const std::string& path, Messages& msgs,
                             MatchFacts* facts) {
  HTTPMatchRequest m;
  Reader r(j, path, msgs);
  m.name = r.String("name");
  auto one = [&](std::string_view field, auto* out, MatchRules rules) {  // optional or Boxed
    if (const auto* v = r.Get(field)) {
      if (auto sm = DecodeStringMatch(*v, r.Path(field), msgs, rules)) {
        if (sm->type != StringMatch::Type::kUnset) {  // {} matches anything
          *out = std::move(*sm);
        }
      }
    }
  };
  one("uri", &m.uri, MatchRules::kUri);
  one("scheme", &m.scheme, MatchRules::kStrict);
  one("method", &m.method, MatchRules::kStrict);
  one("authority", &m.authority, MatchRules::kStrict);
  DecodeStringMatchMap(r, "headers", &m.headers, true, &facts->jwt_claims);
  DecodeStringMatchMap(r, "withoutHeaders", &m.without_headers, true, &facts->jwt_claims);
  DecodeStringMatchMap(r, "queryParams", &m.query_params, false, &facts->jwt_claims);
  for (const auto* list : {&m.headers, &m.without_headers}) {
    for (const auto& [name, sm] : *list) {
      if (name.size() > 1 && name[0] == ':' && name != ":authority") {
        msgs.Warn(r.Path("headers") + "." + name, "skiff serves HTTP/1.1, which has no " + name +
                                                      " header; this condition never matches");
      }
    }
  }
  m.ignore_uri_case = r.Bool("ignoreUriCase");
  if (auto port = r.Int("port")) {
    if (*port < 1 || *port > 65535) {
      msgs.Error(r.Path("port"), "must be a port number between 1 and 65535");
    } else {
      m.port = static_cast<uint32_t>(*port);
    }
  }
  m.source_labels = r.StringMap("sourceLabels");
  CheckLabels(m.source_labels, r.Path("sourceLabels"), msgs);
  m.source_namespace = r.String("sourceNamespace");
  if (!m.source_namespace.empty() && !IsDns1123Label(m.source_namespace)) {
    msgs.Error(r.Path("sourceNamespace"),
               "\"" + m.source_namespace + "\" is not a valid namespace");
  }
  m.gateways = r.StringList("gateways");
  CheckGatewayNames(m.gateways, r.Path("gateways"), msgs);
  if (r.Get("statPrefix") != nullptr) {
    r.String("statPrefix");
  }
  return m;
}

HTTPRetry DecodeRetry(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  HTTPRetry retry;
  Reader r(j, path, msgs);
  auto attempts = r.Int("attempts");
  retry.attempts = attempts.value_or(0);
  if (retry.attempts < 0) {
    msgs.Error(r.Path("attempts"),
               "attempts must not be negative (got " + std::to_string(retry.attempts) + ")");
  } else if (retry.attempts > kMaxWeight) {
    msgs.Error(r.Path("attempts"), "attempts must be at most 2147483647");
  }
  retry.per_try_timeout = PositiveDuration(r, "perTryTimeout");
  retry.retry_on = r.String("retryOn");
  for (const auto& raw : Split(retry.retry_on, ',')) {
    std::string cond(Trim(raw));
    if (cond.empty() || kRetryConditions.count(cond) > 0) {
      continue;
    }
    bool numeric = cond.size() <= 3 && cond.find_first_not_of("0123456789") == std::string::npos;
    if (numeric && IsKnownHttpStatus(std::stoi(cond))) {
      continue;
    }
    msgs.Error(r.Path("retryOn"), "unknown retry condition \"" + cond +
                                      "\" (use Envoy conditions such as 5xx, gateway-error, "
                                      "connect-failure, or an HTTP status code)");
  }
  bool remote_localities = r.Get("retryRemoteLocalities") != nullptr;
  if (remote_localities) {
    r.Bool("retryRemoteLocalities");
  }
  if (auto backoff = PositiveDuration(r, "backoff")) {
    msgs.Warn(r.Path("backoff"), "not supported by skiff yet; retries back off from 25ms");
  }
  if (attempts && *attempts == 0 &&
      (retry.per_try_timeout || !retry.retry_on.empty() || remote_localities)) {
    msgs.Error(r.path(),
               "attempts: 0 disables retries; perTryTimeout, retryOn and retryRemoteLocalities "
               "must not be set with it");
  }
  return retry;
}

HTTPFaultInjection DecodeFault(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  HTTPFaultInjection f;
  Reader r(j, path, msgs);
  if (const auto* d = r.Get("delay")) {
    Reader dr(*d, r.Path("delay"), msgs);
    HTTPFaultDelay delay;
    delay.fixed_delay = PositiveDuration(dr, "fixedDelay");
    if (dr.Get("exponentialDelay") != nullptr) {
      PositiveDuration(dr, "exponentialDelay");
      msgs.Error(dr.Path("exponentialDelay"), "not supported; use fixedDelay");
    } else if (!delay.fixed_delay && dr.Get("fixedDelay") == nullptr) {
      msgs.Error(dr.Path("fixedDelay"), "required");
    }
    delay.percentage = DecodePercent(dr, "percentage", /*fault=*/true);
    if (auto percent = dr.Int("percent")) {  // deprecated integer form
      if (*percent < 0 || *percent > 100) {
        msgs.Error(dr.Path("percent"), "must be between 0 and 100");
      }
      if (!delay.percentage) {
        delay.percentage = Percent{static_cast<double>(*percent)};
      }
    }
    f.delay = delay;
  }
  if (const auto* a = r.Get("abort")) {
    Reader ar(*a, r.Path("abort"), msgs);
    HTTPFaultAbort abort;
    auto status = ar.Int("httpStatus");
    abort.grpc_status = ar.String("grpcStatus");
    bool grpc = ar.Get("grpcStatus") != nullptr;
    bool http2 = ar.Get("http2Error") != nullptr;
    if ((status ? 1 : 0) + (grpc ? 1 : 0) + (http2 ? 1 : 0) > 1) {
      msgs.Error(ar.path(), "only one of httpStatus, grpcStatus or http2Error may be set");
    } else if (http2) {
      ar.String("http2Error");
      msgs.Error(ar.Path("http2Error"), "HTTP/2 error aborts are not supported");
    } else if (grpc) {
      if (kGrpcCodes.count(abort.grpc_status) == 0) {
        msgs.Error(ar.Path("grpcStatus"), "\"" + abort.grpc_status +
                                              "\" is not a gRPC status code (UNAVAILABLE, "
                                              "DEADLINE_EXCEEDED, ...)");
      }
    } else if (!status) {
      msgs.Error(ar.Path("httpStatus"), "required");
    } else if (*status < 200 || *status > 600) {
      msgs.Error(ar.Path("httpStatus"), "must be an HTTP status between 200 and 600 (got " +
                                            std::to_string(*status) + ")");
    } else if (*status == 600) {
      msgs.Warn(ar.Path("httpStatus"),
                "600 is accepted (as Istio does) but is no HTTP status; this abort is not "
                "injected");
    }
    abort.http_status = status.value_or(0);
    abort.percentage = DecodePercent(ar, "percentage", /*fault=*/true);
    f.abort = abort;
  }
  if (!f.delay && !f.abort) {
    msgs.Error(path, "one of delay or abort is required");
  }
  return f;
}

CorsPolicy DecodeCors(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  CorsPolicy c;
  Reader r(j, path, msgs);
  ForEachItem(r, "allowOrigins", [&](const nlohmann::json& item, const std::string& p) {
    if (auto m = DecodeStringMatch(item, p, msgs, MatchRules::kOrigin)) {
      c.allow_origins.push_back(*m);
    }
  });
  auto legacy = r.StringList("allowOrigin");  // deprecated form: exact matches
  for (size_t i = 0; i < legacy.size(); ++i) {
    if (legacy[i].empty() || HasCrLfNul(legacy[i])) {
      msgs.Error(IndexPath(r.Path("allowOrigin"), i),
                 "an allowed origin must not be empty or contain CR, LF or NUL");
      continue;
    }
    c.allow_origins.push_back({StringMatch::Type::kExact, legacy[i]});
  }
  c.allow_methods = r.StringList("allowMethods");
  for (size_t i = 0; i < c.allow_methods.size(); ++i) {
    if (kHttpMethods.count(c.allow_methods[i]) == 0) {
      msgs.Error(IndexPath(r.Path("allowMethods"), i),
                 "\"" + c.allow_methods[i] +
                     "\" is not a supported HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, "
                     "OPTIONS, TRACE, PATCH)");
    }
  }
  auto header_list = [&](std::string_view field, std::vector<std::string>* out) {
    *out = r.StringList(field);
    for (size_t i = 0; i < out->size(); ++i) {
      if (!IsValidHeaderName((*out)[i])) {
        msgs.Error(IndexPath(r.Path(field), i), (*out)[i].empty()
                                                    ? "a header name must not be empty"
                                                    : "invalid header name \"" + (*out)[i] + "\"");
      }
    }
  };
  header_list("allowHeaders", &c.allow_headers);
  header_list("exposeHeaders", &c.expose_headers);
  c.max_age = PositiveDuration(r, "maxAge");
  if (c.max_age && c.max_age->count() % 1000000000 != 0) {
    msgs.Error(r.Path("maxAge"), "maxAge is accurate only to seconds: use whole seconds");
  }
  c.allow_credentials = r.Bool("allowCredentials");
  if (r.Get("unmatchedPreflights") != nullptr) {
    std::string v = r.String("unmatchedPreflights");
    if (v != "UNSPECIFIED" && v != "FORWARD" && v != "IGNORE") {
      msgs.Error(r.Path("unmatchedPreflights"),
                 "unknown value \"" + v + "\" (UNSPECIFIED, FORWARD or IGNORE)");
    }
  }
  return c;
}

HTTPRedirect DecodeRedirect(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  Reader rr(j, path, msgs);
  HTTPRedirect red;
  red.uri = rr.String("uri");
  red.authority = rr.String("authority");
  red.scheme = rr.String("scheme");
  red.prefix_rewrite = rr.String("prefixRewrite");
  bool has_port = false;
  if (auto port = rr.Int("port")) {
    has_port = true;
    if (*port < 1 || *port > 65535) {
      msgs.Error(rr.Path("port"), "must be a port number between 1 and 65535");
    } else {
      red.port = static_cast<uint32_t>(*port);
    }
  }
  if (rr.Get("derivePort") != nullptr) {
    std::string derive = rr.String("derivePort");
    if (derive == "FROM_REQUEST_PORT") {
      red.derive_port = true;
    } else if (derive != "FROM_PROTOCOL_DEFAULT") {
      msgs.Error(rr.Path("derivePort"),
                 "unknown value \"" + derive + "\" (FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT)");
    }
    if (has_port) {
      msgs.Error(rr.path(), "port and derivePort cannot both be set");
    }
  }
  red.redirect_code = rr.Int("redirectCode").value_or(0);
  if (red.redirect_code != 0 && red.redirect_code != 301 && red.redirect_code != 302 &&
      red.redirect_code != 303 && red.redirect_code != 307 && red.redirect_code != 308) {
    msgs.Error(rr.Path("redirectCode"), "must be one of 301, 302, 303, 307, 308");
  }
  if (red.uri.empty() && red.authority.empty() && red.scheme.empty() && !has_port &&
      red.prefix_rewrite.empty() && rr.Get("derivePort") == nullptr) {
    msgs.Error(path, "a redirect must set uri, prefixRewrite, authority, scheme or port");
  }
  if (!red.uri.empty() && !red.prefix_rewrite.empty()) {
    msgs.Error(path, "uri and prefixRewrite cannot both be set");
  }
  // Istio accepts a uri that is not a path ("t"); it must still be safe on the wire.
  for (auto [field, value] :
       {std::pair{"uri", &red.uri}, std::pair{"prefixRewrite", &red.prefix_rewrite}}) {
    for (unsigned char c : *value) {
      if (c < 0x20 || c == 0x7f || c == ' ') {
        msgs.Error(rr.Path(field),
                   "must not contain spaces or control characters (CR, LF, NUL, "
                   "...)");
        break;
      }
    }
  }
  if (!red.uri.empty() && red.uri[0] != '/') {
    msgs.Warn(
        rr.Path("uri"),
        "\"" + red.uri + "\" does not start with '/'; the Location path is \"/" + red.uri + "\"");
  }
  if (!red.authority.empty()) {
    if (auto err = ValidateAuthority(red.authority); !err.empty()) {
      msgs.Error(rr.Path("authority"), err);
    }
  }
  if (!red.scheme.empty()) {
    bool ok = std::isalpha(static_cast<unsigned char>(red.scheme[0])) != 0;
    for (unsigned char c : red.scheme) {
      ok = ok && (std::isalnum(c) != 0 || c == '+' || c == '-' || c == '.');
    }
    if (!ok) {
      msgs.Error(rr.Path("scheme"), "\"" + red.scheme + "\" is not a URI scheme (http, https)");
    }
  }
  return red;
}

HTTPDirectResponse DecodeDirectResponse(const nlohmann::json& j, const std::string& path,
                                        Messages& msgs) {
  Reader dr(j, path, msgs);
  HTTPDirectResponse resp;
  auto status = dr.Int("status");
  resp.status = status.value_or(0);
  if (!status) {
    msgs.Error(dr.Path("status"), "required");
  } else if (resp.status < 200 || resp.status > 599) {
    msgs.Error(dr.Path("status"), "must be an HTTP status between 200 and 599");
  }
  if (const auto* b = dr.Get("body")) {
    Reader br(*b, dr.Path("body"), msgs);
    bool is_string = br.Get("string") != nullptr;
    bool is_bytes = br.Get("bytes") != nullptr;
    if (is_string && is_bytes) {
      msgs.Error(br.path(), "only one of string or bytes may be set");
    }
    std::string at = br.Path(is_bytes ? "bytes" : "string");
    if (is_bytes) {
      std::string text = br.String("bytes");
      std::string decoded;
      if (!Base64Decode(text, &decoded)) {
        msgs.Error(at, "not valid base64");
      } else if (!IsValidUtf8(decoded)) {
        msgs.Error(at, "skiff serves text bodies only: the decoded bytes are not UTF-8");
      } else {
        resp.body = std::move(decoded);
      }
    } else {
      resp.body = br.String("string");
    }
    if (resp.body.size() > kMiB) {
      msgs.Error(at, "a direct response body must be at most 1 MiB (it is " +
                         std::to_string(resp.body.size()) + " bytes)");
    } else if (resp.body.size() > 100 * kKiB) {
      msgs.Warn(at, "a direct response body over 100 KiB costs every proxy memory");
    }
  }
  return resp;
}

HTTPRewrite DecodeRewrite(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  Reader rw(j, path, msgs);
  HTTPRewrite rewrite;
  rewrite.uri = rw.String("uri");
  rewrite.authority = rw.String("authority");
  if (const auto* rx = rw.Get("uriRegexRewrite")) {
    Reader xr(*rx, rw.Path("uriRegexRewrite"), msgs);
    std::string match = xr.String("match");
    std::string sub = xr.String("rewrite");
    if (match.empty()) {
      msgs.Error(xr.Path("match"), "required");
    } else {
      CheckRegex(match, xr.Path("match"), msgs);
    }
    if (sub.empty()) {
      msgs.Error(xr.Path("rewrite"), "required");
    } else if (HasCrLfNul(sub)) {
      msgs.Error(xr.Path("rewrite"), "must not contain CR, LF or NUL");
    }
    rewrite.uri_regex = std::make_pair(match, sub);
    if (!rewrite.uri.empty()) {
      msgs.Error(rw.path(), "uri and uriRegexRewrite cannot both be set");
    }
  }
  if (rewrite.uri.empty() && !rewrite.uri_regex && rewrite.authority.empty()) {
    msgs.Error(rw.path(), "a rewrite must set uri, uriRegexRewrite or authority");
  }
  if (!rewrite.uri.empty()) {
    if (auto err = ValidatePath(rewrite.uri); !err.empty()) {
      msgs.Error(rw.Path("uri"), err);
    }
  }
  if (!rewrite.authority.empty()) {
    if (auto err = ValidateAuthority(rewrite.authority); !err.empty()) {
      msgs.Error(rw.Path("authority"), err);
    }
  }
  return rewrite;
}

// What decides the rules for one HTTP route.
struct RouteContext {
  bool in_delegate = false;  // the VirtualService is a delegate (has no hosts)
  MatchFacts facts;
};

HTTPRoute DecodeHttpRoute(const nlohmann::json& j, const std::string& path, Messages& msgs,
                          RouteContext* ctx) {
  HTTPRoute route;
  Reader r(j, path, msgs);
  if (!r.ok()) {
    msgs.Error(path, "an http route must be a map, not null");
    return route;
  }
  route.name = r.String("name");
  ForEachItem(r, "match", [&](const nlohmann::json& item, const std::string& p) {
    route.match.push_back(DecodeMatch(item, p, msgs, &ctx->facts));
  });
  ForEachItem(r, "route", [&](const nlohmann::json& item, const std::string& p) {
    Reader dr(item, p, msgs);
    RouteDestination d;
    const auto* dest = dr.Get("destination");
    if (dest == nullptr) {
      msgs.Error(dr.Path("destination"), "required");
    } else {
      d.destination = DecodeDestination(*dest, dr.Path("destination"), msgs);
    }
    if (auto w = dr.Int("weight")) {
      d.weight = *w;
      d.weight_set = true;
      if (*w < 0) {
        msgs.Error(dr.Path("weight"),
                   "weight must not be negative (got " + std::to_string(*w) + ")");
      } else if (*w > kMaxWeight) {
        msgs.Error(dr.Path("weight"),
                   "weight must be at most 2147483647 (got " + std::to_string(*w) + ")");
      }
    }
    d.headers = DecodeHeaders(dr);
    route.route.push_back(std::move(d));
  });
  if (route.route.size() > 1) {
    int64_t total = 0;  // in 64 bits: int32 weights cannot overflow it
    for (const auto& d : route.route) {
      total += d.weight > 0 ? d.weight : 0;
    }
    if (total == 0) {
      msgs.Error(r.Path("route"),
                 "with more than one destination, weights are required (they sum to 0)");
    }
  }
  if (const auto* v = r.Get("redirect")) {
    route.redirect = DecodeRedirect(*v, r.Path("redirect"), msgs);
  }
  if (const auto* v = r.Get("directResponse")) {
    route.direct_response = DecodeDirectResponse(*v, r.Path("directResponse"), msgs);
  }
  if (const auto* v = r.Get("delegate")) {
    Reader dr(*v, r.Path("delegate"), msgs);
    Delegate d;
    d.name = dr.String("name");
    d.namespace_ = dr.String("namespace");
    if (d.name.empty()) {
      msgs.Error(dr.Path("name"), "required");
    } else if (!IsDns1123Subdomain(d.name)) {
      msgs.Error(dr.Path("name"), "\"" + d.name + "\" is not a valid name");
    }
    if (!d.namespace_.empty() && !IsDns1123Label(d.namespace_)) {
      msgs.Error(dr.Path("namespace"), "\"" + d.namespace_ + "\" is not a valid namespace");
    }
    if (ctx->in_delegate) {
      msgs.Error(r.Path("delegate"),
                 "a delegate VirtualService (one without hosts) cannot delegate again: only "
                 "one level of delegation is supported");
    }
    route.delegate = std::move(d);
  }
  bool rewrite_set = false;
  if (const auto* v = r.Get("rewrite")) {
    route.rewrite = DecodeRewrite(*v, r.Path("rewrite"), msgs);
    rewrite_set = true;
  }
  if (auto t = r.DurationField("timeout")) {
    route.timeout = t;
  }
  if (const auto* v = r.Get("retries")) {
    route.retries = DecodeRetry(*v, r.Path("retries"), msgs);
  }
  if (const auto* v = r.Get("fault")) {
    route.fault = DecodeFault(*v, r.Path("fault"), msgs);
  }
  auto mirror_percentage = DecodePercent(r, "mirrorPercentage", /*fault=*/false);
  auto mirror_percent = r.Int("mirrorPercent");  // deprecated integer form
  if (mirror_percent && (*mirror_percent < 0 || *mirror_percent > 100)) {
    msgs.Error(r.Path("mirrorPercent"), "must be between 0 and 100");
  }
  if (const auto* v = r.Get("mirror")) {
    HTTPMirrorPolicy m;
    m.destination = DecodeDestination(*v, r.Path("mirror"), msgs);
    m.percentage = mirror_percentage;
    if (mirror_percent && !m.percentage) {
      m.percentage = Percent{static_cast<double>(*mirror_percent)};
    }
    route.mirrors.push_back(m);
  } else if (mirror_percentage || mirror_percent) {
    msgs.Warn(r.Path(mirror_percentage ? "mirrorPercentage" : "mirrorPercent"),
              "has no effect without mirror");
  }
  ForEachItem(r, "mirrors", [&](const nlohmann::json& item, const std::string& p) {
    Reader mr(item, p, msgs);
    HTTPMirrorPolicy m;
    const auto* dest = mr.Get("destination");
    if (dest == nullptr) {
      msgs.Error(mr.Path("destination"), "required");
    } else {
      m.destination = DecodeDestination(*dest, mr.Path("destination"), msgs);
    }
    m.percentage = DecodePercent(mr, "percentage", /*fault=*/false);
    route.mirrors.push_back(m);
  });
  if (r.Get("mirror") != nullptr && r.Get("mirrors") != nullptr) {
    msgs.Error(path, "mirror and mirrors cannot both be set");
  }
  if (const auto* v = r.Get("corsPolicy")) {
    route.cors_policy = DecodeCors(*v, r.Path("corsPolicy"), msgs);
  }
  route.headers = DecodeHeaders(r);
  r.Ignore("mirror_percent");

  // An authority rewrite in two places.
  if (rewrite_set && !route.rewrite->authority.empty() && route.headers &&
      SetsAuthority(route.headers->request)) {
    msgs.Error(path, "rewrite.authority and a :authority header operation cannot both be set");
  }
  if (route.redirect && !route.redirect->prefix_rewrite.empty()) {
    for (size_t i = 0; i < route.match.size(); ++i) {
      const auto& uri = route.match[i].uri;
      if (uri && uri->type != StringMatch::Type::kPrefix) {
        msgs.Error(IndexPath(r.Path("match"), i) + ".uri",
                   "redirect.prefixRewrite needs prefix uri matches (this one is " +
                       std::string(uri->type == StringMatch::Type::kExact ? "exact" : "a regex") +
                       ")");
      }
    }
  }

  if (route.delegate) {
    if (!route.route.empty() || route.redirect || route.direct_response) {
      msgs.Error(path, "delegate cannot be combined with route, redirect or directResponse");
    }
    return route;
  }
  int actions =
      (route.route.empty() ? 0 : 1) + (route.redirect ? 1 : 0) + (route.direct_response ? 1 : 0);
  if (actions == 0) {
    msgs.Error(path, ctx->in_delegate
                         ? "one of route, redirect or directResponse is required"
                         : "one of route, redirect, directResponse or delegate is required");
  } else if (actions > 1) {
    if (!route.route.empty() && route.redirect) {
      msgs.Error(path, "route and redirect cannot both be set");
    } else {
      msgs.Error(path, "only one of route, redirect or directResponse may be set");
    }
  }
  if (route.redirect && route.fault) {
    msgs.Error(path, "fault and redirect cannot both be set");
  }
  if ((route.redirect || route.direct_response) && rewrite_set) {
    msgs.Error(path, "rewrite needs a route, not a redirect or directResponse");
  }
  if (actions == 1 && (route.redirect || route.direct_response) &&
      (route.retries || !route.mirrors.empty() || route.timeout)) {
    msgs.Warn(path,
              "retries, timeout and mirrors apply to routes to destinations; with a redirect "
              "or directResponse they are ignored");
  }
  return route;
}

// Istio's host.Name.Matches: do two hosts (wildcards allowed) overlap?
bool HostsOverlap(std::string_view a, std::string_view b) {
  bool aw = StartsWith(a, "*");
  bool bw = StartsWith(b, "*");
  if (aw && bw) {
    return a.size() < b.size() ? EndsWith(b.substr(1), a.substr(1))
                               : EndsWith(a.substr(1), b.substr(1));
  }
  if (aw) {
    return EndsWith(b, a.substr(1));
  }
  if (bw) {
    return EndsWith(a, b.substr(1));
  }
  return a == b;
}

// Is `inner` a subset of `outer` (host.Name.SubsetOf)?
bool HostSubsetOf(std::string_view inner, std::string_view outer) {
  if (StartsWith(outer, "*")) {
    if (StartsWith(inner, "*")) {
      return EndsWith(inner.substr(1), outer.substr(1));
    }
    return EndsWith(inner, outer.substr(1));
  }
  return inner == outer;
}

// Istio's SNI-style host "outbound_.15010_._.istiod.istio-system.svc.cluster.local".
bool IsSniClusterHost(std::string_view host) {
  auto parts = Split(host, '.', false);
  if (parts.size() < 4 || parts[0] != "outbound_" || parts[1].size() < 2 ||
      parts[1].back() != '_' ||
      parts[1].substr(0, parts[1].size() - 1).find_first_not_of("0123456789") !=
          std::string::npos) {
    return false;
  }
  std::string rest(host.substr(parts[0].size() + parts[1].size() + parts[2].size() + 3));
  return ValidateWildcardDomain(rest).empty();
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

// Warnings for rules and matches an earlier one already takes, as Istio's analysis.
void AnalyzeUnreachable(const std::vector<HTTPRoute>& http, const std::string& path,
                        Messages& msgs) {
  // A match that takes whatever a later match with a uri it covers would take: only a
  // uri condition (exact, or prefix).
  struct Earlier {
    size_t rule;
    const HTTPMatchRequest* match;
  };
  std::vector<Earlier> earlier;
  auto uri_only = [](const HTTPMatchRequest& m) {
    return m.uri && m.uri->type != StringMatch::Type::kRegex && !m.ignore_uri_case && !m.scheme &&
           !m.method && !m.authority && m.headers.empty() && m.without_headers.empty() &&
           m.query_params.empty() && m.port == 0 && m.source_labels.empty() &&
           m.source_namespace.empty() && m.gateways.empty();
  };
  auto covers = [](const HTTPMatchRequest& a, const HTTPMatchRequest& b) {
    if (!b.uri || b.uri->type == StringMatch::Type::kRegex || b.ignore_uri_case) {
      return false;
    }
    // Same kind only (as Istio's analysis): an earlier prefix shadows a later, longer prefix.
    if (a.uri->type != b.uri->type) {
      return false;
    }
    return a.uri->type == StringMatch::Type::kExact ? b.uri->value == a.uri->value
                                                    : StartsWith(b.uri->value, a.uri->value);
  };
  std::optional<size_t> catch_all;
  for (size_t i = 0; i < http.size(); ++i) {
    std::string rule = IndexPath(path, i);
    if (catch_all) {
      msgs.Warn(rule, "never used: " + IndexPath(path, *catch_all) +
                          " has no match and takes every request");
      continue;
    }
    if (http[i].match.empty()) {
      catch_all = i;
      continue;
    }
    size_t shadowed = 0;
    for (size_t j = 0; j < http[i].match.size(); ++j) {
      const auto& m = http[i].match[j];
      for (const auto& e : earlier) {
        HTTPMatchRequest a = *e.match;
        HTTPMatchRequest b = m;
        a.name.clear();
        b.name.clear();
        if (a == b || (uri_only(*e.match) && covers(*e.match, m))) {
          msgs.Warn(IndexPath(rule + ".match", j),
                    "never used: " + IndexPath(path, e.rule) +
                        " has an earlier match that takes the same requests");
          ++shadowed;
          break;
        }
      }
      earlier.push_back({i, &m});
    }
    if (shadowed == http[i].match.size()) {
      msgs.Warn(rule, "never used: earlier rules take all its matches");
    }
  }
}

// TCP and TLS routes: validated as Istio does, not served yet.
void CheckL4Destinations(Reader& r, const std::string& path, Messages& msgs,
                         std::vector<RouteDestination>* out = nullptr) {
  size_t count = 0;
  int64_t total = 0;
  ForEachItem(r, "route", [&](const nlohmann::json& item, const std::string& p) {
    ++count;
    Reader dr(item, p, msgs);
    RouteDestination rd;
    const auto* dest = dr.Get("destination");
    if (dest == nullptr) {
      msgs.Error(dr.Path("destination"), "required");
    } else {
      rd.destination = DecodeDestination(*dest, dr.Path("destination"), msgs);
    }
    if (auto w = dr.Int("weight")) {
      rd.weight_set = true;
      rd.weight = *w;
      if (*w < 0) {
        msgs.Error(dr.Path("weight"), "weight must not be negative");
      } else if (*w > kMaxWeight) {
        msgs.Error(dr.Path("weight"), "weight must be at most 2147483647");
      } else {
        total += *w;
      }
    }
    if (out != nullptr) {
      out->push_back(std::move(rd));
    }
  });
  if (count == 0) {
    msgs.Error(r.Path("route"), "at least one route is required");
  } else if (count > 1 && total == 0) {
    msgs.Error(r.Path("route"),
               "with more than one destination, weights are required (they sum to 0)");
  }
  (void)path;
}

void CheckL4Match(Reader& m, Messages& msgs, TLSMatchAttributes* out = nullptr) {
  auto port = m.Int("port");
  if (port && (*port < 1 || *port > 65535)) {
    msgs.Error(m.Path("port"), "must be a port number between 1 and 65535");
  } else if (port && out != nullptr) {
    out->port = static_cast<uint32_t>(*port);
  }
  if (out != nullptr) {
    out->gateways = m.StringList("gateways");
  }
  for (const auto& subnet : m.StringList("destinationSubnets")) {
    auto slash = subnet.find('/');
    if (!IsValidIp(subnet.substr(0, slash))) {
      msgs.Error(m.Path("destinationSubnets"), "\"" + subnet + "\" is not an IP or CIDR");
    }
  }
  CheckLabels(m.StringMap("sourceLabels"), m.Path("sourceLabels"), msgs);
  CheckGatewayNames(m.StringList("gateways"), m.Path("gateways"), msgs);
  m.Ignore("sourceNamespace");
  m.Ignore("sourceSubnet");
}

void CheckTcpRoute(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  Reader r(j, path, msgs);
  ForEachItem(r, "match", [&](const nlohmann::json& item, const std::string& p) {
    Reader m(item, p, msgs);
    CheckL4Match(m, msgs);
  });
  CheckL4Destinations(r, path, msgs);
}

TLSRoute CheckTlsRoute(const nlohmann::json& j, const std::string& path, Messages& msgs,
                       const std::vector<std::string>& vs_hosts) {
  TLSRoute route;
  Reader r(j, path, msgs);
  size_t matches = 0;
  ForEachItem(r, "match", [&](const nlohmann::json& item, const std::string& p) {
    ++matches;
    Reader m(item, p, msgs);
    auto sni = m.StringList("sniHosts");
    TLSMatchAttributes attrs;
    attrs.sni_hosts = sni;
    if (sni.empty()) {
      msgs.Error(m.Path("sniHosts"), "at least one SNI host is required");
    }
    for (size_t i = 0; i < sni.size(); ++i) {
      std::string at = IndexPath(m.Path("sniHosts"), i);
      if (IsSniClusterHost(sni[i])) {
        continue;
      }
      if (auto err = ValidateWildcardDomain(sni[i]); !err.empty()) {
        if (IsValidIp(sni[i])) {
          msgs.Warn(at,
                    "an IP address as SNI host goes against the SNI spec; most clients "
                    "do not send it");
        } else {
          msgs.Error(at, err);
        }
        continue;
      }
      bool subset = std::any_of(vs_hosts.begin(), vs_hosts.end(),
                                [&](const std::string& h) { return HostSubsetOf(sni[i], h); });
      if (!subset) {
        msgs.Error(
            at, "SNI host \"" + sni[i] + "\" is not a subset of any of the VirtualService's hosts");
      }
    }
    CheckL4Match(m, msgs, &attrs);
    route.match.push_back(std::move(attrs));
  });
  if (matches == 0) {
    msgs.Error(r.Path("match"), "a TLS route needs at least one match");
  }
  CheckL4Destinations(r, path, msgs, &route.route);
  if (route.route.size() > 1) {
    msgs.Warn(r.Path("route"),
              "skiff sends each SNI host to one destination, the one with the largest weight; "
              "connections are not split by weight");
  }
  return route;
}

// ---- DestinationRule traffic policies ----

void CheckClientTls(Reader& parent, Messages& msgs, std::optional<ClientTLSSettings>* out) {
  const auto* v = parent.Get("tls");
  if (v == nullptr) {
    return;
  }
  Reader r(*v, parent.Path("tls"), msgs);
  std::string mode = r.String("mode");
  if (!mode.empty() && mode != "DISABLE" && mode != "SIMPLE" && mode != "MUTUAL" &&
      mode != "ISTIO_MUTUAL") {
    msgs.Error(r.Path("mode"),
               "unknown TLS mode \"" + mode + "\" (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)");
  }
  std::string client_cert = r.String("clientCertificate");
  std::string key = r.String("privateKey");
  std::string ca = r.String("caCertificates");
  std::string credential = r.String("credentialName");
  std::string crl = r.String("caCrl");
  auto sans = r.StringList("subjectAltNames");
  bool has_sans = r.Get("subjectAltNames") != nullptr;
  bool skip_verify = r.Bool("insecureSkipVerify");
  std::string sni = r.String("sni");
  r.Ignore("insecureSkipVerify");
  if (skip_verify) {
    if (mode == "SIMPLE" && (!ca.empty() || !credential.empty() || has_sans)) {
      msgs.Error(r.Path("insecureSkipVerify"),
                 "caCertificates, credentialName and subjectAltNames cannot be set when "
                 "insecureSkipVerify is true");
    }
    if (mode == "MUTUAL" && (!ca.empty() || has_sans)) {
      msgs.Error(r.Path("insecureSkipVerify"),
                 "caCertificates and subjectAltNames cannot be set when insecureSkipVerify is "
                 "true");
    }
  }
  if ((mode == "SIMPLE" || mode == "MUTUAL") && !credential.empty()) {
    if (!client_cert.empty() || !ca.empty() || !key.empty() || !crl.empty()) {
      msgs.Error(r.path(),
                 "clientCertificate, privateKey, caCertificates and caCrl cannot be "
                 "set with credentialName");
    }
  } else if (mode == "MUTUAL") {
    if (client_cert.empty()) {
      msgs.Error(r.Path("clientCertificate"), "required for MUTUAL TLS");
    }
    if (key.empty()) {
      msgs.Error(r.Path("privateKey"), "required for MUTUAL TLS");
    }
  }
  if (mode == "ISTIO_MUTUAL") {
    msgs.Warn(r.Path("mode"),
              "ISTIO_MUTUAL needs the mesh's own certificates, which skiff does not issue; "
              "connections stay plain text");
  }
  if (!crl.empty()) {
    msgs.Warn(r.Path("caCrl"), "certificate revocation lists are not checked by skiff yet");
  }
  if (mode == "SIMPLE" || mode == "MUTUAL") {
    ClientTLSSettings t;
    t.mode = mode;
    t.credential_name = credential;
    t.client_certificate = client_cert;
    t.private_key = key;
    t.ca_certificates = ca;
    t.sni = sni;
    t.subject_alt_names = sans;
    t.insecure_skip_verify = skip_verify;
    *out = std::move(t);
  } else if (mode == "DISABLE") {
    *out = ClientTLSSettings{};  // set, so that it overrides a less specific policy
    (*out)->mode = mode;
  }
}

void CheckLoadBalancer(Reader& lr, LoadBalancerSettings* lb, Messages& msgs) {
  if (lr.Get("simple") != nullptr) {
    std::string simple = lr.String("simple");
    if (simple == "ROUND_ROBIN" || simple == "UNSPECIFIED") {
      lb->simple = LoadBalancerSettings::Simple::kRoundRobin;
    } else if (simple == "LEAST_REQUEST" || simple == "LEAST_CONN") {
      lb->simple = LoadBalancerSettings::Simple::kLeastRequest;
    } else if (simple == "RANDOM") {
      lb->simple = LoadBalancerSettings::Simple::kRandom;
    } else if (simple == "PASSTHROUGH") {
      lb->simple = LoadBalancerSettings::Simple::kPassthrough;
      msgs.Warn(lr.Path("simple"), "PASSTHROUGH is not supported; round robin is used");
    } else {
      msgs.Error(lr.Path("simple"), "unknown load balancer \"" + simple +
                                        "\" (ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH)");
    }
  }
  if (const auto* ch = lr.Get("consistentHash")) {
    Reader cr(*ch, lr.Path("consistentHash"), msgs);
    LoadBalancerSettings::ConsistentHash h;
    h.http_header_name = cr.String("httpHeaderName");
    h.use_source_ip = cr.Bool("useSourceIp");
    h.http_query_parameter_name = cr.String("httpQueryParameterName");
    if (!h.http_header_name.empty() && !IsValidHeaderName(h.http_header_name)) {
      msgs.Error(cr.Path("httpHeaderName"), "invalid header name \"" + h.http_header_name + "\"");
    }
    if (const auto* cookie = cr.Get("httpCookie")) {
      Reader kr(*cookie, cr.Path("httpCookie"), msgs);
      h.cookie_name = kr.String("name");
      h.cookie_path = kr.String("path");
      h.cookie_ttl = kr.DurationField("ttl");
      if (h.cookie_name.empty()) {
        msgs.Error(kr.Path("name"), "required");
      } else if (!IsValidHeaderName(h.cookie_name)) {  // a cookie name is a token
        msgs.Error(kr.Path("name"), "\"" + h.cookie_name + "\" is not a valid cookie name");
      }
      if (!h.cookie_path.empty() && HasCrLfNul(h.cookie_path)) {
        msgs.Error(kr.Path("path"), "must not contain CR, LF or NUL");
      }
      if (kr.Get("ttl") == nullptr) {
        msgs.Error(kr.Path("ttl"), "required");
      }
      std::set<std::string> seen;
      bool any = false;
      ForEachItem(kr, "attributes", [&](const nlohmann::json& item, const std::string& p) {
        any = true;
        Reader ar(item, p, msgs);
        std::string name = ar.String("name");
        std::string value = ar.String("value");
        if (name.empty()) {
          msgs.Error(ar.Path("name"), "required");
        } else if (!seen.insert(name).second) {
          msgs.Error(ar.Path("name"), "duplicate cookie attribute \"" + name + "\"");
        }
        if (HasCrLfNul(name) || HasCrLfNul(value) || value.find(';') != std::string::npos) {
          msgs.Error(p, "a cookie attribute must not contain ';', CR, LF or NUL");
        }
      });
      if (any) {
        msgs.Warn(kr.Path("attributes"), "not supported by skiff yet; ignored");
      }
    }
    auto ring_size = cr.Int("minimumRingSize");
    if (ring_size) {
      msgs.Warn(cr.Path("minimumRingSize"), "deprecated; use ringHash.minimumRingSize");
    }
    if (const auto* rh = cr.Get("ringHash")) {
      Reader rr(*rh, cr.Path("ringHash"), msgs);
      if (auto n = rr.Int("minimumRingSize"); n && *n < 0) {
        msgs.Error(rr.Path("minimumRingSize"), "must not be negative");
      }
    }
    if (const auto* mg = cr.Get("maglev")) {
      Reader mr(*mg, cr.Path("maglev"), msgs);
      if (auto n = mr.Int("tableSize")) {
        bool prime = *n >= 2;
        for (int64_t d = 2; prime && d * d <= *n; ++d) {
          prime = *n % d != 0;
        }
        if (!prime) {
          msgs.Error(mr.Path("tableSize"), "the Maglev table size must be a prime number");
        }
      }
      if (cr.Get("ringHash") != nullptr) {
        msgs.Error(cr.path(), "ringHash and maglev cannot both be set");
      }
    }
    int keys = (h.http_header_name.empty() ? 0 : 1) + (h.use_source_ip ? 1 : 0) +
               (h.http_query_parameter_name.empty() ? 0 : 1) +
               (cr.Get("httpCookie") != nullptr ? 1 : 0);
    if (keys != 1) {
      msgs.Error(cr.path(),
                 "exactly one of httpHeaderName, httpCookie, useSourceIp or "
                 "httpQueryParameterName is required");
    }
    lb->consistent_hash = h;
    if (lb->simple != LoadBalancerSettings::Simple::kUnset) {
      msgs.Error(lr.path(), "simple and consistentHash cannot both be set");
    }
  }
  bool locality = lr.Get("localityLbSetting") != nullptr;
  bool zone_aware = lr.Get("zoneAwareLbSetting") != nullptr;
  if (locality && zone_aware) {
    msgs.Error(lr.path(), "localityLbSetting and zoneAwareLbSetting cannot both be set");
  } else if (locality || zone_aware) {
    msgs.Warn(lr.Path(locality ? "localityLbSetting" : "zoneAwareLbSetting"),
              "locality-aware load balancing is not supported by skiff yet; ignored");
  }
  if (const auto* w = lr.Get("warmup")) {
    Reader wr(*w, lr.Path("warmup"), msgs);
    if (wr.Get("duration") == nullptr) {
      msgs.Error(wr.Path("duration"), "required");
    } else {
      PositiveDuration(wr, "duration");
    }
    if (auto p = wr.Double("minimumPercent"); p && (*p < 0 || *p > 100)) {
      msgs.Error(wr.Path("minimumPercent"), "must be between 0 and 100");
    }
    if (auto a = wr.Double("aggression"); a && *a < 1) {
      msgs.Error(wr.Path("aggression"), "must be at least 1");
    }
    msgs.Warn(lr.Path("warmup"), "slow start is not supported by skiff yet; ignored");
  }
  if (lr.Get("warmupDurationSecs") != nullptr) {
    PositiveDuration(lr, "warmupDurationSecs");
    msgs.Warn(lr.Path("warmupDurationSecs"), "slow start is not supported by skiff yet; ignored");
  }
}

ConnectionPoolSettings DecodeConnectionPool(Reader& cr, Messages& msgs) {
  ConnectionPoolSettings cp;
  auto nonneg = [&](Reader& rr, std::string_view field, int64_t* out) {
    if (auto n = rr.Int(field)) {
      if (*n < 0) {
        msgs.Error(rr.Path(field), "must not be negative");
      } else if (*n > kMaxWeight) {
        msgs.Error(rr.Path(field), "must be at most 2147483647");
      } else if (out != nullptr) {
        *out = *n;
      }
    }
  };
  const auto* tcp = cr.Get("tcp");
  const auto* http = cr.Get("http");
  if (tcp == nullptr && http == nullptr) {
    msgs.Error(cr.path(), "connectionPool must set tcp or http");
  }
  if (tcp != nullptr) {
    Reader tr(*tcp, cr.Path("tcp"), msgs);
    nonneg(tr, "maxConnections", &cp.max_connections);
    cp.connect_timeout = PositiveDuration(tr, "connectTimeout");
    if (const auto* ka = tr.Get("tcpKeepalive")) {
      Reader kr(*ka, tr.Path("tcpKeepalive"), msgs);
      nonneg(kr, "probes", nullptr);
      PositiveDuration(kr, "time");
      PositiveDuration(kr, "interval");
    }
    PositiveDuration(tr, "maxConnectionDuration");
    tr.DurationField("idleTimeout");  // 0 disables it
  }
  if (http != nullptr) {
    Reader hr(*http, cr.Path("http"), msgs);
    nonneg(hr, "http1MaxPendingRequests", &cp.http1_max_pending_requests);
    nonneg(hr, "http2MaxRequests", &cp.http2_max_requests);
    nonneg(hr, "maxRequestsPerConnection", &cp.max_requests_per_connection);
    nonneg(hr, "maxRetries", &cp.max_retries);
    nonneg(hr, "maxConcurrentStreams", &cp.max_concurrent_streams);
    cp.idle_timeout = PositiveDuration(hr, "idleTimeout");
    std::string upgrade = hr.String("h2UpgradePolicy");
    if (!upgrade.empty() && upgrade != "DEFAULT" && upgrade != "DO_NOT_UPGRADE" &&
        upgrade != "UPGRADE") {
      msgs.Error(hr.Path("h2UpgradePolicy"),
                 "unknown value \"" + upgrade + "\" (DEFAULT, DO_NOT_UPGRADE, UPGRADE)");
    }
    cp.h2_upgrade = upgrade == "UPGRADE";
    cp.use_client_protocol = hr.Bool("useClientProtocol");
    if (upgrade == "UPGRADE" && cp.use_client_protocol) {
      msgs.Error(hr.Path("useClientProtocol"), "must not be true when h2UpgradePolicy is UPGRADE");
    }
    if (const auto* ka = hr.Get("http2KeepAlive")) {
      Reader kr(*ka, hr.Path("http2KeepAlive"), msgs);
      for (const char* field : {"interval", "timeout"}) {
        if (kr.Get(field) == nullptr) {
          msgs.Error(kr.Path(field), "required");
        } else {
          PositiveDuration(kr, field);
        }
      }
      kr.DurationField("connectionIdleInterval");
      msgs.Warn(hr.Path("http2KeepAlive"), "skiff speaks HTTP/1.1 to upstreams; ignored");
    }
  }
  return cp;
}

OutlierDetection DecodeOutlierDetection(Reader& orr, Messages& msgs) {
  OutlierDetection od;
  auto bounded = [&](std::string_view field, int64_t* out, int64_t max) {
    if (auto n = orr.Int(field)) {
      if (*n < 0 || *n > max) {
        msgs.Error(orr.Path(field), "must be between 0 and " + std::to_string(max));
      } else {
        *out = *n;
      }
    }
  };
  bounded("consecutive5xxErrors", &od.consecutive_5xx_errors, kMaxWeight);
  bounded("consecutiveGatewayErrors", &od.consecutive_gateway_errors, kMaxWeight);
  int64_t legacy = 0;
  bounded("consecutiveErrors", &legacy, kMaxWeight);  // deprecated: gateway errors in Istio
  if (orr.Get("consecutiveErrors") != nullptr) {
    msgs.Warn(orr.Path("consecutiveErrors"),
              "deprecated; use consecutiveGatewayErrors or consecutive5xxErrors");
  }
  if (legacy > 0 && od.consecutive_gateway_errors == 0) {
    od.consecutive_gateway_errors = legacy;
  }
  od.interval = PositiveDuration(orr, "interval");
  od.base_ejection_time = PositiveDuration(orr, "baseEjectionTime");
  bounded("maxEjectionPercent", &od.max_ejection_percent, 100);
  bounded("minHealthPercent", &od.min_health_percent, 100);
  bool split = orr.Bool("splitExternalLocalOriginErrors");
  int64_t local_origin = 0;
  bounded("consecutiveLocalOriginFailures", &local_origin, kMaxWeight);
  if (orr.Get("consecutiveLocalOriginFailures") != nullptr && !split) {
    msgs.Error(orr.Path("consecutiveLocalOriginFailures"),
               "needs splitExternalLocalOriginErrors: true");
  }
  return od;
}

// A traffic policy (top level, subset, or port level). `port_level`: no portLevelSettings
// inside, and a port.
Boxed<TrafficPolicy> DecodePolicyFields(Reader& r, bool port_level) {
  Messages& msgs = r.msgs();
  TrafficPolicy tp;
  bool any = false;
  if (const auto* lbj = r.Get("loadBalancer")) {
    any = true;
    Reader lr(*lbj, r.Path("loadBalancer"), msgs);
    LoadBalancerSettings lb;
    CheckLoadBalancer(lr, &lb, msgs);
    tp.load_balancer = std::move(lb);
  }
  if (const auto* cpj = r.Get("connectionPool")) {
    any = true;
    Reader cr(*cpj, r.Path("connectionPool"), msgs);
    tp.connection_pool = DecodeConnectionPool(cr, msgs);
  }
  if (const auto* odj = r.Get("outlierDetection")) {
    any = true;
    Reader orr(*odj, r.Path("outlierDetection"), msgs);
    tp.outlier_detection = DecodeOutlierDetection(orr, msgs);
  }
  if (r.Get("tls") != nullptr) {
    any = true;
    CheckClientTls(r, msgs, &tp.tls);
  }
  if (!port_level) {
    if (r.Get("portLevelSettings") != nullptr) {
      any = true;
      ForEachItem(r, "portLevelSettings", [&](const nlohmann::json& item, const std::string& p) {
        Reader pr(item, p, msgs);
        const auto* port = pr.Get("port");
        if (port == nullptr) {
          msgs.Error(pr.Path("port"), "required: the port this policy is for");
        } else {
          Reader nr(*port, pr.Path("port"), msgs);
          auto n = nr.Int("number");
          if (!n || *n < 1 || *n > 65535) {
            msgs.Error(nr.Path("number"), "must be a port number between 1 and 65535");
          }
        }
        DecodePolicyFields(pr, /*port_level=*/true);
      });
      msgs.Warn(r.Path("portLevelSettings"), "not supported by skiff yet; ignored");
    }
    bool tunnel = r.Get("tunnel") != nullptr;
    bool proxy_protocol = r.Get("proxyProtocol") != nullptr;
    if (tunnel && proxy_protocol) {
      msgs.Error(r.path(), "tunnel and proxyProtocol cannot both be set");
    }
    if (tunnel) {
      Reader tr(*r.Get("tunnel"), r.Path("tunnel"), msgs);
      std::string protocol = tr.String("protocol");
      if (!protocol.empty() && protocol != "CONNECT" && protocol != "POST") {
        msgs.Error(tr.Path("protocol"), "must be CONNECT or POST");
      }
      if (tr.String("targetHost").empty()) {
        msgs.Error(tr.Path("targetHost"), "required");
      }
      auto port = tr.Int("targetPort");
      if (!port || *port < 1 || *port > 65535) {
        msgs.Error(tr.Path("targetPort"), "must be a port number between 1 and 65535");
      }
      msgs.Warn(r.Path("tunnel"), "not supported by skiff yet; ignored");
    }
    if (proxy_protocol) {
      Reader pr(*r.Get("proxyProtocol"), r.Path("proxyProtocol"), msgs);
      std::string version = pr.String("version");
      if (!version.empty() && version != "V1" && version != "V2") {
        msgs.Error(pr.Path("version"), "must be V1 or V2");
      }
      msgs.Warn(r.Path("proxyProtocol"), "not supported by skiff yet; ignored");
    }
    any = any || tunnel || proxy_protocol;
  }
  if (!any && !port_level) {
    msgs.Error(r.path(), "a traffic policy must set at least one field");
  }
  return tp;
}

Boxed<TrafficPolicy> DecodeTrafficPolicy(Reader& parent) {
  const auto* v = parent.Get("trafficPolicy");
  if (v == nullptr) {
    return std::nullopt;
  }
  Reader r(*v, parent.Path("trafficPolicy"), parent.msgs());
  if (!r.ok()) {
    return std::nullopt;
  }
  return DecodePolicyFields(r, /*port_level=*/false);
}

// ---- Gateway servers ----

void CheckServerTls(Reader& sr, const std::string& protocol, Messages& msgs, bool* https_redirect,
                    Boxed<ServerTLSSettings>* out) {
  const auto* v = sr.Get("tls");
  if (v == nullptr) {
    if (IsTlsProtocol(protocol)) {
      msgs.Error(sr.Path("tls"), "an " + protocol + " server must have TLS settings");
    }
    return;
  }
  Reader r(*v, sr.Path("tls"), msgs);
  *https_redirect = r.Bool("httpsRedirect");
  std::string mode = r.String("mode");
  if (!mode.empty() && mode != "PASSTHROUGH" && mode != "SIMPLE" && mode != "MUTUAL" &&
      mode != "AUTO_PASSTHROUGH" && mode != "ISTIO_MUTUAL" && mode != "OPTIONAL_MUTUAL") {
    msgs.Error(r.Path("mode"), "unknown TLS mode \"" + mode +
                                   "\" (PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, "
                                   "ISTIO_MUTUAL, OPTIONAL_MUTUAL)");
    mode = "?";  // no rules of a mode apply
  }
  if (mode.empty()) {
    mode = "PASSTHROUGH";
  }
  std::string cert = r.String("serverCertificate");
  std::string key = r.String("privateKey");
  std::string ca = r.String("caCertificates");
  std::string crl = r.String("caCrl");
  std::string credential = r.String("credentialName");
  auto credentials = r.StringList("credentialNames");
  size_t tls_certs = 0;
  std::string first_cert, first_key, first_ca;  // of tlsCertificates
  ForEachItem(r, "tlsCertificates", [&](const nlohmann::json& item, const std::string& p) {
    ++tls_certs;
    Reader cr(item, p, msgs);
    std::string c = cr.String("serverCertificate");
    std::string k = cr.String("privateKey");
    std::string cca = cr.String("caCertificates");
    if (tls_certs == 1) {
      first_cert = c;
      first_key = k;
      first_ca = cca;
    }
    if (c.empty()) {
      msgs.Error(cr.Path("serverCertificate"), "required");
    }
    if (k.empty()) {
      msgs.Error(cr.Path("privateKey"), "required");
    }
  });
  for (const char* f : {"minProtocolVersion", "maxProtocolVersion"}) {
    std::string ver = r.String(f);
    if (!ver.empty() && ver != "TLS_AUTO" && ver != "TLSV1_0" && ver != "TLSV1_1" &&
        ver != "TLSV1_2" && ver != "TLSV1_3") {
      msgs.Error(r.Path(f), "unknown TLS version \"" + ver +
                                "\" (TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3)");
    }
  }
  ServerTLSSettings t;
  t.mode = mode;
  t.min_protocol_version = r.String("minProtocolVersion");
  t.max_protocol_version = r.String("maxProtocolVersion");
  t.cipher_suites = r.StringList("cipherSuites");
  t.subject_alt_names = r.StringList("subjectAltNames");
  t.verify_certificate_spki = r.StringList("verifyCertificateSpki");
  t.verify_certificate_hash = r.StringList("verifyCertificateHash");
  t.credential_name = credential.empty() && !credentials.empty() ? credentials[0] : credential;
  t.server_certificate = tls_certs > 0 ? first_cert : cert;
  t.private_key = tls_certs > 0 ? first_key : key;
  t.ca_certificates = tls_certs > 0 && ca.empty() ? first_ca : ca;
  if (credentials.size() > 1) {
    msgs.Warn(r.Path("credentialNames"),
              "skiff serves one certificate per server: only the first one is used");
  }
  for (size_t i = 0; i < t.verify_certificate_hash.size(); ++i) {
    std::string hex;
    for (char c : t.verify_certificate_hash[i]) {
      if (c != ':') {
        hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
      msgs.Warn(IndexPath(r.Path("verifyCertificateHash"), i),
                "is not the hex SHA-256 of a certificate (64 hex digits, colons allowed): no "
                "client certificate matches it");
    }
    t.verify_certificate_hash[i] = hex;
  }
  for (size_t i = 0; i < t.verify_certificate_spki.size(); ++i) {
    std::string raw;
    if (!Base64Decode(t.verify_certificate_spki[i], &raw) || raw.size() != 32) {
      msgs.Warn(IndexPath(r.Path("verifyCertificateSpki"), i),
                "is not the base64 SHA-256 of a public key (32 bytes): no client certificate "
                "matches it");
    }
  }
  // Where the server's certificate comes from: at most one place.
  int sources = (credential.empty() ? 0 : 1) + (credentials.empty() ? 0 : 1) +
                (tls_certs == 0 ? 0 : 1) + (cert.empty() && key.empty() ? 0 : 1);
  if (sources > 1) {
    msgs.Error(r.path(),
               "only one of credentialName, credentialNames, tlsCertificates or "
               "serverCertificate/privateKey may be set");
  }
  if (mode == "ISTIO_MUTUAL") {
    if (!cert.empty() || !key.empty() || !ca.empty() || !credential.empty()) {
      msgs.Error(r.path(),
                 "ISTIO_MUTUAL uses the mesh's certificates: serverCertificate, "
                 "privateKey, caCertificates and credentialName must not be set");
    }
  } else if (mode == "PASSTHROUGH" || mode == "AUTO_PASSTHROUGH") {
    if (!cert.empty() || !key.empty() || !ca.empty() || !crl.empty() || !credential.empty()) {
      msgs.Warn(r.path(), mode + " does not use certificates; they are ignored");
    }
  } else if (mode != "?" && credential.empty() && credentials.empty()) {
    // SIMPLE, MUTUAL, OPTIONAL_MUTUAL
    if (tls_certs == 0) {
      if (cert.empty()) {
        msgs.Error(r.Path("serverCertificate"), mode + " TLS requires a server certificate");
      }
      if (key.empty()) {
        msgs.Error(r.Path("privateKey"), mode + " TLS requires a private key");
      }
    }
    if (mode != "SIMPLE" && ca.empty()) {
      msgs.Error(r.Path("caCertificates"), mode + " TLS requires a client CA bundle");
    }
  }
  if (tls_certs > 1) {
    msgs.Warn(r.Path("tlsCertificates"),
              "skiff serves one certificate per server: only the first one is used");
  }
  if (mode == "ISTIO_MUTUAL" || mode == "AUTO_PASSTHROUGH") {
    msgs.Warn(r.Path("mode"), mode +
                                  " needs the mesh's own certificates and SNI-named clusters, "
                                  "which skiff does not provide; this server is not served");
  }
  if (!crl.empty()) {
    msgs.Warn(r.Path("caCrl"), "certificate revocation lists are not checked by skiff yet");
  }
  if (IsTlsProtocol(protocol)) {
    *out = std::move(t);
  }
  // The protocol decides whether TLS settings belong here.
  if (IsHttpProtocol(protocol)) {
    bool only_redirect = true;
    for (auto it = v->begin(); v->is_object() && it != v->end(); ++it) {
      only_redirect = only_redirect && it.key() == "httpsRedirect";
    }
    if (!only_redirect) {
      msgs.Error(sr.Path("tls"), "a plain-text " + protocol +
                                     " server cannot have TLS settings (only "
                                     "httpsRedirect)");
    }
  } else if (!IsTlsProtocol(protocol) && !protocol.empty()) {
    msgs.Error(sr.Path("tls"), "a " + protocol + " server cannot have TLS settings");
  }
  if (*https_redirect && !IsHttpProtocol(protocol)) {
    msgs.Warn(r.Path("httpsRedirect"), "should only be used with HTTP servers");
  }
}

}  // namespace

Gateway DecodeGateway(Reader& spec) {
  Gateway gw;
  Messages& msgs = spec.msgs();
  gw.selector = spec.StringMap("selector");
  CheckLabels(gw.selector, spec.Path("selector"), msgs);
  std::set<std::string> port_names;
  ForEachItem(spec, "servers", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    if (!r.ok()) {
      msgs.Error(path, "a server must be a map, not null");
      return;
    }
    Server s;
    s.name = r.String("name");
    s.bind = r.String("bind");
    r.String("defaultEndpoint");
    bool unix_bind = StartsWith(s.bind, "unix://");
    if (unix_bind && s.bind.size() == 7) {
      msgs.Error(r.Path("bind"), "\"" + s.bind + "\" names no socket");
    } else if (!s.bind.empty() && !unix_bind && !IsValidIp(s.bind)) {
      msgs.Error(r.Path("bind"), "\"" + s.bind + "\" is not a valid IP address (or unix://)");
    }
    std::string protocol;
    if (const auto* p = r.Get("port")) {
      Reader pr(*p, r.Path("port"), msgs);
      ServerPort port;
      auto number = pr.Int("number");
      if (unix_bind) {
        if (number.value_or(0) != 0) {
          msgs.Error(pr.Path("number"), "port number must be 0 for a unix domain socket bind");
        }
      } else if (!number || *number < 1 || *number > 65535) {
        msgs.Error(pr.Path("number"),
                   number ? "must be a port number between 1 and 65535 (got " +
                                std::to_string(*number) + ")"
                          : std::string("must be a port number between 1 and 65535"));
      } else {
        port.number = static_cast<uint32_t>(*number);
      }
      port.protocol = pr.String("protocol");
      std::string upper = port.protocol;
      for (auto& c : upper) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      }
      if (kServerProtocols.count(upper) == 0) {
        msgs.Error(pr.Path("protocol"),
                   port.protocol.empty() ? std::string("invalid protocol \"\": required "
                                                       "(HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, ...)")
                                         : "invalid protocol \"" + port.protocol +
                                               "\" (HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, ...)");
      } else {
        protocol = upper;
      }
      port.protocol = upper;
      port.name = pr.String("name");
      if (port.name.empty()) {
        msgs.Error(pr.Path("name"), "port name must be set");
      } else if (!port_names.insert(port.name).second) {
        msgs.Error(pr.Path("name"),
                   "port names in servers must be unique: \"" + port.name + "\" is used twice");
      }
      if (auto target = pr.Int("targetPort"); target && *target > 0) {
        msgs.Warn(pr.Path("targetPort"), "has no effect on Gateways");
      }
      s.port = port;
    } else {
      msgs.Error(r.Path("port"), "required");
    }
    s.hosts = r.StringList("hosts");
    if (s.hosts.empty()) {
      msgs.Error(r.Path("hosts"), "at least one host is required");
    }
    for (size_t i = 0; i < s.hosts.size(); ++i) {
      if (auto err = ValidateGatewayHost(s.hosts[i]); !err.empty()) {
        msgs.Error(IndexPath(r.Path("hosts"), i), err);
        continue;
      }
      // SNI cannot match a partial wildcard ("*bar.com").
      std::string_view h = s.hosts[i];
      h = h.substr(h.find('/') == std::string_view::npos ? 0 : h.find('/') + 1);
      if (IsTlsProtocol(protocol) && StartsWith(h, "*") && h != "*" && !StartsWith(h, "*.")) {
        msgs.Error(IndexPath(r.Path("hosts"), i),
                   "partial wildcard \"" + std::string(h) + "\" not allowed on a TLS server");
      }
    }
    s.has_tls = r.Get("tls") != nullptr;
    if (s.port) {
      CheckServerTls(r, protocol, msgs, &s.https_redirect, &s.tls);
    } else {
      r.Ignore("tls");
    }
    gw.servers.push_back(std::move(s));
  });
  if (gw.servers.empty()) {
    msgs.Error(spec.Path("servers"), "at least one server is required");
  }
  return gw;
}

VirtualService DecodeVirtualService(Reader& spec) {
  VirtualService vs;
  Messages& msgs = spec.msgs();
  vs.hosts = spec.StringList("hosts");
  vs.gateways = spec.StringList("gateways");
  vs.export_to = spec.StringList("exportTo");
  CheckExportTo(vs.export_to, spec.Path("exportTo"), msgs);
  const bool delegate = vs.hosts.empty();
  CheckGatewayNames(vs.gateways, spec.Path("gateways"), msgs);
  bool mesh = vs.gateways.empty();
  bool to_gateway = false;
  for (const auto& g : vs.gateways) {
    (g == "mesh" ? mesh : to_gateway) = true;
  }
  const auto* tcp = spec.Get("tcp");
  const auto* tls = spec.Get("tls");
  if (tcp != nullptr && tcp->is_array()) {
    vs.tcp_routes = tcp->size();
  }
  if (tls != nullptr && tls->is_array()) {
    vs.tls_routes = tls->size();
  }
  if (delegate) {
    if (!vs.gateways.empty()) {
      msgs.Error(spec.Path("gateways"),
                 "a delegate VirtualService (one without hosts) cannot have gateways: the root "
                 "VirtualService that delegates to it decides where it applies");
    }
    if (vs.tcp_routes > 0) {
      msgs.Error(spec.Path("tcp"),
                 "a delegate VirtualService (one without hosts) cannot have "
                 "tcp routes");
    }
    if (vs.tls_routes > 0) {
      msgs.Error(spec.Path("tls"),
                 "a delegate VirtualService (one without hosts) cannot have "
                 "tls routes");
    }
  }
  // SNI-style hosts are for gateway TLS routes.
  bool sni_hosts = to_gateway && vs.tls_routes > 0;
  bool hosts_valid = true;
  for (size_t i = 0; i < vs.hosts.size(); ++i) {
    const auto& h = vs.hosts[i];
    if (sni_hosts && IsSniClusterHost(h)) {
      continue;
    }
    if (auto err = ValidateWildcardDomain(h); !err.empty()) {
      if (!IsValidIp(h)) {
        msgs.Error(IndexPath(spec.Path("hosts"), i), err);
        hosts_valid = false;
      }
    } else if (h == "*" && mesh) {
      msgs.Error(IndexPath(spec.Path("hosts"), i),
                 "wildcard host \"*\" is not allowed for VirtualServices bound to the mesh");
      hosts_valid = false;
    }
  }
  if (hosts_valid) {
    for (size_t i = 0; i < vs.hosts.size(); ++i) {
      for (size_t k = i + 1; k < vs.hosts.size(); ++k) {
        if (HostsOverlap(vs.hosts[i], vs.hosts[k])) {
          msgs.Error(IndexPath(spec.Path("hosts"), k), "duplicate hosts \"" + vs.hosts[i] +
                                                           "\" and \"" + vs.hosts[k] +
                                                           "\" (one includes the other)");
        }
      }
    }
  }
  RouteContext ctx;
  ctx.in_delegate = delegate;
  ForEachItem(spec, "http", [&](const nlohmann::json& j, const std::string& path) {
    vs.http.push_back(DecodeHttpRoute(j, path, msgs, &ctx));
  });
  if (ctx.facts.jwt_claims && !to_gateway) {
    msgs.Error(spec.Path("http"),
               "JWT claim based routing (@request.auth.claims.*) is only "
               "supported for gateways, and this VirtualService has none");
  } else if (ctx.facts.jwt_claims) {
    msgs.Warn(spec.Path("http"),
              "JWT claim based routing is not supported by skiff yet; "
              "these conditions never match");
  }
  if (vs.http.empty() && vs.tcp_routes == 0 && vs.tls_routes == 0) {
    msgs.Error(spec.path().empty() ? "spec" : spec.path(),
               "at least one of http, tcp or tls routes is required");
  }
  ForEachItem(spec, "tcp", [&](const nlohmann::json& j, const std::string& path) {
    CheckTcpRoute(j, path, msgs);
  });
  ForEachItem(spec, "tls", [&](const nlohmann::json& j, const std::string& path) {
    vs.tls.push_back(CheckTlsRoute(j, path, msgs, vs.hosts));
  });
  if (vs.tcp_routes > 0) {
    msgs.Warn(spec.Path("tcp"), "TCP routes are not supported by skiff yet; ignored");
  }
  if (vs.tls_routes > 0 && !to_gateway) {
    msgs.Warn(spec.Path("tls"),
              "TLS routes are served at gateways (PASSTHROUGH servers); for the mesh they "
              "are not served by skiff yet");
  }
  AnalyzeUnreachable(vs.http, spec.Path("http"), msgs);
  return vs;
}

DestinationRule DecodeDestinationRule(Reader& spec) {
  DestinationRule dr;
  Messages& msgs = spec.msgs();
  dr.host = spec.String("host");
  if (dr.host.empty()) {
    msgs.Error(spec.Path("host"), "required");
  } else if (auto err = ValidateWildcardDomain(dr.host); !err.empty()) {
    msgs.Error(spec.Path("host"), err);
  }
  dr.export_to = spec.StringList("exportTo");
  CheckExportTo(dr.export_to, spec.Path("exportTo"), msgs);
  dr.traffic_policy = DecodeTrafficPolicy(spec);
  std::set<std::string> seen;
  ForEachItem(spec, "subsets", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    if (!r.ok()) {
      msgs.Error(path, "a subset must be a map, not null");
      return;
    }
    Subset s;
    s.name = r.String("name");
    if (s.name.empty()) {
      msgs.Error(r.Path("name"), "required");
    } else if (!IsDns1123LabelAnyCase(s.name)) {
      msgs.Error(r.Path("name"), "\"" + s.name + "\" is not a valid subset name (a DNS label)");
    } else if (!seen.insert(s.name).second) {
      msgs.Error(r.Path("name"), "duplicate subset name \"" + s.name + "\"");
    }
    s.labels = r.StringMap("labels");
    CheckLabels(s.labels, r.Path("labels"), msgs);
    s.traffic_policy = DecodeTrafficPolicy(r);
    dr.subsets.push_back(std::move(s));
  });
  if (const auto* ws = spec.Get("workloadSelector")) {
    Reader wr(*ws, spec.Path("workloadSelector"), msgs);
    auto labels = wr.StringMap("matchLabels");
    CheckLabels(labels, wr.Path("matchLabels"), msgs);
    msgs.Warn(spec.Path("workloadSelector"),
              labels.empty() ? "has no labels: it selects every workload"
                             : "not supported by skiff yet: the rule applies to every workload");
  }
  return dr;
}

}  // namespace skiff::api

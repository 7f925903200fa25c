// VirtualService http routes: matches, destinations, retries, faults, CORS, redirects,
// direct responses, rewrites and header operations, with Istio's rules.
#include <re2/re2.h>

#include <cmath>
#include <set>

#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

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

const std::set<std::string, std::less<>> kGrpcCodes = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const std::set<std::string, std::less<>> kHttpMethods = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};

}  // namespace

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

namespace {

// Where a string match is, which decides Istio's rules for it.
enum class MatchRules {
  kUri,     // an empty prefix is fine (it matches every path)
  kStrict,  // scheme, method, authority, headers, query parameters: no empty prefix
  kOrigin,  // CORS allowOrigins: a match type with a non-empty value
};

}  // namespace

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

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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
  if (auto t = PositiveDuration(r, "timeout")) {
    route.timeout = t;
  }
  if (const auto* v = r.Get("retries")) {
    route.retries = DecodeRetry(*v, r.Path("retries"), msgs);
  }
  if (const auto* v = r.Get("fault")) {
    route.fault = DecodeFault(*v, r.Path("fault"), msgs);
  }
  auto mirror_percentage = DecodePercent(r, "mirrorPercentage", /*fault=*/false);
  // The deprecated integer form, by its JSON name or (as Istio's decoder also takes) its
  // proto field name.
  const char* mirror_percent_field = r.Get("mirrorPercent") == nullptr && r.Get("mirror_percent")
                                         ? "mirror_percent"
                                         : "mirrorPercent";
  auto mirror_percent = r.Int(mirror_percent_field);
  if (mirror_percent && (*mirror_percent < 0 || *mirror_percent > 100)) {
    msgs.Error(r.Path(mirror_percent_field), "must be between 0 and 100");
  } else if (mirror_percent) {
    msgs.Warn(r.Path(mirror_percent_field), std::string("using deprecated setting \"") +
                                                mirror_percent_field +
                                                "\", use \"mirrorPercentage\" instead");
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
    msgs.Warn(r.Path(mirror_percentage ? "mirrorPercentage" : mirror_percent_field),
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
  r.Ignore("mirror_percent");  // read above, or left for mirrorPercent

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

}  // namespace skiff::api

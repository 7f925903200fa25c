// Decoding and validation of Gateway, VirtualService and DestinationRule, in the spirit of
// Istio's own validation: every problem names the field path it is about.
#include <re2/re2.h>

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

const std::set<std::string, std::less<>> kServerProtocols = {
    "HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "REDIS", "MYSQL"};

std::optional<StringMatch> DecodeStringMatch(const nlohmann::json& j, const std::string& path,
                                             Messages& msgs, bool allow_empty) {
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
  } else if (count == 0 && !allow_empty) {
    msgs.Error(path, "one of exact, prefix or regex is required");
  }
  if (m.type == StringMatch::Type::kRegex) {
    RE2 re(m.value, RE2::Quiet);
    if (!re.ok()) {
      msgs.Error(path + ".regex",
                 "invalid RE2 regular expression \"" + m.value + "\": " + re.error());
    }
  }
  return m;
}

void DecodeStringMatchMap(Reader& r, std::string_view field,
                          std::vector<std::pair<std::string, StringMatch>>* out, bool headers) {
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
    if (headers && !IsValidHeaderName(it.key())) {
      r.msgs().Error(item_path, "invalid header name \"" + it.key() + "\"");
      continue;
    }
    // An empty match ({}) checks presence only.
    auto m = DecodeStringMatch(it.value(), item_path, r.msgs(), /*allow_empty=*/true);
    if (m) {
      out->emplace_back(headers ? ToLower(it.key()) : it.key(), *m);
    }
  }
}

std::optional<Percent> DecodePercent(Reader& r, std::string_view field) {
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
  }
  return p;
}

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
  } else if (auto err = ValidateHost(d.host); !err.empty()) {
    msgs.Error(r.Path("host"), err);
  } else if (d.host.find('*') != std::string::npos) {
    msgs.Error(r.Path("host"), "a destination host cannot be a wildcard");
  }
  if (!d.subset.empty() && !IsDns1123Label(d.subset)) {
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

HeaderOperations DecodeHeaderOperations(const nlohmann::json& j, const std::string& path,
                                        Messages& msgs) {
  HeaderOperations ops;
  Reader r(j, path, msgs);
  auto kv = [&](std::string_view field, std::vector<std::pair<std::string, std::string>>* out) {
    for (const auto& [k, v] : r.StringMap(field)) {
      if (!IsValidHeaderName(k)) {
        msgs.Error(r.Path(field) + "." + k, "invalid header name \"" + k + "\"");
        continue;
      }
      if (v.find_first_of("\r\n") != std::string::npos || v.find('\0') != std::string::npos) {
        msgs.Error(r.Path(field) + "." + k, "header value must not contain CR, LF or NUL");
        continue;
      }
      out->emplace_back(ToLower(k), v);
    }
  };
  kv("set", &ops.set);
  kv("add", &ops.add);
  auto remove = r.StringList("remove");
  for (size_t i = 0; i < remove.size(); ++i) {
    if (!IsValidHeaderName(remove[i])) {
      msgs.Error(IndexPath(r.Path("remove"), i), "invalid header name \"" + remove[i] + "\"");
      continue;
    }
    ops.remove.push_back(ToLower(remove[i]));
  }
  return ops;
}

bool Empty(const HeaderOperations& h) { return h.set.empty() && h.add.empty() && h.remove.empty(); }

// Absent when no operation is set, so that objects without headers carry no Headers.
Boxed<Headers> DecodeHeaders(Reader& parent) {
  const auto* v = parent.Get("headers");
  if (v == nullptr) {
    return std::nullopt;
  }
  Headers h;
  Reader r(*v, parent.Path("headers"), parent.msgs());
  if (const auto* req = r.Get("request")) {
    h.request = DecodeHeaderOperations(*req, r.Path("request"), r.msgs());
  }
  if (const auto* resp = r.Get("response")) {
    h.response = DecodeHeaderOperations(*resp, r.Path("response"), r.msgs());
  }
  if (Empty(h.request) && Empty(h.response)) {
    return std::nullopt;
  }
  return h;
}

HTTPMatchRequest DecodeMatch(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  HTTPMatchRequest m;
  Reader r(j, path, msgs);
  m.name = r.String("name");
  auto one = [&](std::string_view field, auto* out) {  // std::optional or Boxed
    if (const auto* v = r.Get(field)) {
      if (auto sm = DecodeStringMatch(*v, r.Path(field), msgs, /*allow_empty=*/false)) {
        *out = std::move(*sm);
      }
    }
  };
  one("uri", &m.uri);
  one("scheme", &m.scheme);
  one("method", &m.method);
  one("authority", &m.authority);
  DecodeStringMatchMap(r, "headers", &m.headers, true);
  DecodeStringMatchMap(r, "withoutHeaders", &m.without_headers, true);
  DecodeStringMatchMap(r, "queryParams", &m.query_params, false);
  m.ignore_uri_case = r.Bool("ignoreUriCase");
  if (auto port = r.Int("port")) {
    if (*port < 1 || *port > 65535) {
      msgs.Error(r.Path("port"), "must be a port number between 1 and 65535");
    } else {
      m.port = static_cast<uint32_t>(*port);
    }
  }
  m.source_labels = r.StringMap("sourceLabels");
  if (!m.source_labels.empty()) {
    msgs.Warn(r.Path("sourceLabels"), "not supported by skiff yet; this condition is ignored");
  }
  m.gateways = r.StringList("gateways");
  r.Ignore("sourceNamespace");
  r.Ignore("statPrefix");
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
  }
  retry.per_try_timeout = r.DurationField("perTryTimeout");
  if (retry.per_try_timeout && retry.per_try_timeout->count() == 0) {
    msgs.Error(r.Path("perTryTimeout"), "must be at least 1ms");
  }
  retry.retry_on = r.String("retryOn");
  for (const auto& raw : Split(retry.retry_on, ',')) {
    std::string cond(Trim(raw));
    if (cond.empty() || kRetryConditions.count(cond) > 0) {
      continue;
    }
    bool numeric = !cond.empty() && cond.find_first_not_of("0123456789") == std::string::npos;
    if (numeric && cond.size() == 3 && cond >= "100" && cond <= "599") {
      continue;
    }
    msgs.Error(r.Path("retryOn"), "unknown retry condition \"" + cond +
                                      "\" (use Envoy conditions such as 5xx, gateway-error, "
                                      "connect-failure, or an HTTP status code)");
  }
  r.Ignore("retryRemoteLocalities");
  r.Ignore("backoff");
  return retry;
}

HTTPFaultInjection DecodeFault(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  HTTPFaultInjection f;
  Reader r(j, path, msgs);
  if (const auto* d = r.Get("delay")) {
    Reader dr(*d, r.Path("delay"), msgs);
    HTTPFaultDelay delay;
    delay.fixed_delay = dr.DurationField("fixedDelay");
    if (dr.Get("exponentialDelay") != nullptr) {
      msgs.Error(dr.Path("exponentialDelay"), "not supported; use fixedDelay");
    } else if (!delay.fixed_delay) {
      if (dr.Get("fixedDelay") == nullptr) {
        msgs.Error(dr.Path("fixedDelay"), "required");
      }
    }
    delay.percentage = DecodePercent(dr, "percentage");
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
    if (ar.Get("grpcStatus") != nullptr || ar.Get("http2Error") != nullptr) {
      msgs.Error(ar.path(), "only httpStatus aborts are supported");
    } else if (!status) {
      msgs.Error(ar.Path("httpStatus"), "required");
    } else if (*status < 200 || *status > 599) {
      msgs.Error(ar.Path("httpStatus"), "must be an HTTP status between 200 and 599 (got " +
                                            std::to_string(*status) + ")");
    }
    abort.http_status = status.value_or(0);
    abort.percentage = DecodePercent(ar, "percentage");
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
    if (auto m = DecodeStringMatch(item, p, msgs, false)) {
      c.allow_origins.push_back(*m);
    }
  });
  for (const auto& o : r.StringList("allowOrigin")) {  // deprecated form: exact matches
    c.allow_origins.push_back({StringMatch::Type::kExact, o});
  }
  c.allow_methods = r.StringList("allowMethods");
  c.allow_headers = r.StringList("allowHeaders");
  c.expose_headers = r.StringList("exposeHeaders");
  c.max_age = r.DurationField("maxAge");
  c.allow_credentials = r.Bool("allowCredentials");
  r.Ignore("unmatchedPreflights");
  return c;
}

HTTPRoute DecodeHttpRoute(const nlohmann::json& j, const std::string& path, Messages& msgs) {
  HTTPRoute route;
  Reader r(j, path, msgs);
  route.name = r.String("name");
  ForEachItem(r, "match", [&](const nlohmann::json& item, const std::string& p) {
    route.match.push_back(DecodeMatch(item, p, msgs));
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
      }
    }
    d.headers = DecodeHeaders(dr);
    route.route.push_back(std::move(d));
  });
  if (route.route.size() > 1) {
    int64_t total = 0;
    for (const auto& d : route.route) {
      total += d.weight > 0 ? d.weight : 0;
    }
    if (total == 0) {
      msgs.Error(r.Path("route"),
                 "with more than one destination, weights are required (they sum to 0)");
    }
  }
  if (const auto* v = r.Get("redirect")) {
    Reader rr(*v, r.Path("redirect"), msgs);
    HTTPRedirect red;
    red.uri = rr.String("uri");
    red.authority = rr.String("authority");
    red.scheme = rr.String("scheme");
    if (auto port = rr.Int("port")) {
      if (*port < 1 || *port > 65535) {
        msgs.Error(rr.Path("port"), "must be a port number between 1 and 65535");
      } else {
        red.port = static_cast<uint32_t>(*port);
      }
    }
    rr.Ignore("derivePort");
    red.redirect_code = rr.Int("redirectCode").value_or(0);
    if (red.redirect_code != 0 && red.redirect_code != 301 && red.redirect_code != 302 &&
        red.redirect_code != 303 && red.redirect_code != 307 && red.redirect_code != 308) {
      msgs.Error(rr.Path("redirectCode"), "must be one of 301, 302, 303, 307, 308");
    }
    route.redirect = std::move(red);
  }
  if (const auto* v = r.Get("directResponse")) {
    Reader dr(*v, r.Path("directResponse"), msgs);
    HTTPDirectResponse resp;
    resp.status = dr.Int("status").value_or(0);
    if (resp.status < 200 || resp.status > 599) {
      msgs.Error(dr.Path("status"), "must be an HTTP status between 200 and 599");
    }
    if (const auto* b = dr.Get("body")) {
      Reader br(*b, dr.Path("body"), msgs);
      resp.body = br.String("string");
      if (br.Get("bytes") != nullptr) {
        msgs.Error(br.Path("bytes"), "not supported; use body.string");
      }
    }
    route.direct_response = std::move(resp);
  }
  if (const auto* v = r.Get("rewrite")) {
    Reader rw(*v, r.Path("rewrite"), msgs);
    HTTPRewrite rewrite;
    rewrite.uri = rw.String("uri");
    rewrite.authority = rw.String("authority");
    if (const auto* rx = rw.Get("uriRegexRewrite")) {
      Reader xr(*rx, rw.Path("uriRegexRewrite"), msgs);
      std::string match = xr.String("match");
      std::string sub = xr.String("rewrite");
      RE2 re(match, RE2::Quiet);
      if (!re.ok()) {
        msgs.Error(xr.Path("match"),
                   "invalid RE2 regular expression \"" + match + "\": " + re.error());
      }
      rewrite.uri_regex = std::make_pair(match, sub);
      if (!rewrite.uri.empty()) {
        msgs.Error(rw.path(), "uri and uriRegexRewrite cannot both be set");
      }
    }
    route.rewrite = std::move(rewrite);
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
  if (const auto* v = r.Get("mirror")) {
    HTTPMirrorPolicy m;
    m.destination = DecodeDestination(*v, r.Path("mirror"), msgs);
    m.percentage = DecodePercent(r, "mirrorPercentage");
    if (auto percent = r.Int("mirrorPercent")) {  // deprecated integer form
      if (!m.percentage) {
        m.percentage = Percent{static_cast<double>(*percent)};
      }
      if (*percent < 0 || *percent > 100) {
        msgs.Error(r.Path("mirrorPercent"), "must be between 0 and 100");
      }
    }
    route.mirrors.push_back(m);
  } else if (r.Get("mirrorPercentage") != nullptr) {
    msgs.Warn(r.Path("mirrorPercentage"), "has no effect without mirror");
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
    m.percentage = DecodePercent(mr, "percentage");
    route.mirrors.push_back(m);
  });
  if (r.Get("mirror") != nullptr && r.Get("mirrors") != nullptr) {
    msgs.Error(path, "mirror and mirrors cannot both be set");
  }
  if (const auto* v = r.Get("corsPolicy")) {
    route.cors_policy = DecodeCors(*v, r.Path("corsPolicy"), msgs);
  }
  route.headers = DecodeHeaders(r);
  if (r.Get("delegate") != nullptr) {
    msgs.Error(r.Path("delegate"), "delegate VirtualServices are not supported by skiff");
  }
  r.Ignore("mirror_percent");

  int actions =
      (route.route.empty() ? 0 : 1) + (route.redirect ? 1 : 0) + (route.direct_response ? 1 : 0);
  if (actions == 0) {
    msgs.Error(path, "one of route, redirect or directResponse is required");
  } else if (actions > 1) {
    if (!route.route.empty() && route.redirect) {
      msgs.Error(path, "route and redirect cannot both be set");
    } else {
      msgs.Error(path, "only one of route, redirect or directResponse may be set");
    }
  }
  if ((route.redirect || route.direct_response) &&
      (route.rewrite || route.retries || !route.mirrors.empty() || route.timeout)) {
    msgs.Error(
        path,
        "rewrite, retries, timeout and mirror need a route, not a redirect or directResponse");
  }
  return route;
}

Boxed<TrafficPolicy> DecodeTrafficPolicy(Reader& parent) {
  const auto* v = parent.Get("trafficPolicy");
  if (v == nullptr) {
    return std::nullopt;
  }
  Messages& msgs = parent.msgs();
  Reader r(*v, parent.Path("trafficPolicy"), msgs);
  TrafficPolicy tp;
  if (const auto* lbj = r.Get("loadBalancer")) {
    Reader lr(*lbj, r.Path("loadBalancer"), msgs);
    LoadBalancerSettings lb;
    if (lr.Get("simple") != nullptr) {
      std::string simple = lr.String("simple");
      if (simple == "ROUND_ROBIN" || simple == "UNSPECIFIED") {
        lb.simple = LoadBalancerSettings::Simple::kRoundRobin;
      } else if (simple == "LEAST_REQUEST" || simple == "LEAST_CONN") {
        lb.simple = LoadBalancerSettings::Simple::kLeastRequest;
      } else if (simple == "RANDOM") {
        lb.simple = LoadBalancerSettings::Simple::kRandom;
      } else if (simple == "PASSTHROUGH") {
        lb.simple = LoadBalancerSettings::Simple::kPassthrough;
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
      if (const auto* cookie = cr.Get("httpCookie")) {
        Reader kr(*cookie, cr.Path("httpCookie"), msgs);
        h.cookie_name = kr.String("name");
        h.cookie_path = kr.String("path");
        h.cookie_ttl = kr.DurationField("ttl");
        if (h.cookie_name.empty()) {
          msgs.Error(kr.Path("name"), "required");
        }
      }
      cr.Ignore("minimumRingSize");
      cr.Ignore("ringHash");
      cr.Ignore("maglev");
      int keys = (h.http_header_name.empty() ? 0 : 1) + (h.use_source_ip ? 1 : 0) +
                 (h.http_query_parameter_name.empty() ? 0 : 1) +
                 (cr.Get("httpCookie") != nullptr ? 1 : 0);
      if (keys != 1) {
        msgs.Error(cr.path(),
                   "exactly one of httpHeaderName, httpCookie, useSourceIp or "
                   "httpQueryParameterName is required");
      }
      lb.consistent_hash = h;
      if (lb.simple != LoadBalancerSettings::Simple::kUnset) {
        msgs.Error(lr.path(), "simple and consistentHash cannot both be set");
      }
    }
    lr.Ignore("localityLbSetting");
    lr.Ignore("warmupDurationSecs");
    tp.load_balancer = std::move(lb);
  }
  if (const auto* cpj = r.Get("connectionPool")) {
    Reader cr(*cpj, r.Path("connectionPool"), msgs);
    ConnectionPoolSettings cp;
    auto nonneg = [&](Reader& rr, std::string_view field, int64_t* out) {
      if (auto n = rr.Int(field)) {
        if (*n < 0) {
          msgs.Error(rr.Path(field), "must not be negative");
        } else {
          *out = *n;
        }
      }
    };
    if (const auto* tcp = cr.Get("tcp")) {
      Reader tr(*tcp, cr.Path("tcp"), msgs);
      nonneg(tr, "maxConnections", &cp.max_connections);
      cp.connect_timeout = tr.DurationField("connectTimeout");
      tr.Ignore("tcpKeepalive");
      tr.Ignore("maxConnectionDuration");
      tr.Ignore("idleTimeout");
    }
    if (const auto* http = cr.Get("http")) {
      Reader hr(*http, cr.Path("http"), msgs);
      nonneg(hr, "http1MaxPendingRequests", &cp.http1_max_pending_requests);
      nonneg(hr, "http2MaxRequests", &cp.http2_max_requests);
      nonneg(hr, "maxRequestsPerConnection", &cp.max_requests_per_connection);
      nonneg(hr, "maxRetries", &cp.max_retries);
      cp.idle_timeout = hr.DurationField("idleTimeout");
      hr.Ignore("h2UpgradePolicy");
      hr.Ignore("useClientProtocol");
      hr.Ignore("maxConcurrentStreams");
    }
    tp.connection_pool = cp;
  }
  if (const auto* odj = r.Get("outlierDetection")) {
    Reader orr(*odj, r.Path("outlierDetection"), msgs);
    OutlierDetection od;
    auto nonneg = [&](std::string_view field, int64_t* out, int64_t max) {
      if (auto n = orr.Int(field)) {
        if (*n < 0 || *n > max) {
          msgs.Error(orr.Path(field), "must be between 0 and " + std::to_string(max));
        } else {
          *out = *n;
        }
      }
    };
    nonneg("consecutive5xxErrors", &od.consecutive_5xx_errors, 1 << 30);
    nonneg("consecutiveGatewayErrors", &od.consecutive_gateway_errors, 1 << 30);
    int64_t legacy = 0;
    nonneg("consecutiveErrors", &legacy, 1 << 30);  // deprecated: means gateway errors in Istio
    if (legacy > 0 && od.consecutive_gateway_errors == 0) {
      od.consecutive_gateway_errors = legacy;
    }
    od.interval = orr.DurationField("interval");
    od.base_ejection_time = orr.DurationField("baseEjectionTime");
    nonneg("maxEjectionPercent", &od.max_ejection_percent, 100);
    nonneg("minHealthPercent", &od.min_health_percent, 100);
    orr.Ignore("splitExternalLocalOriginErrors");
    orr.Ignore("consecutiveLocalOriginFailures");
    tp.outlier_detection = od;
  }
  if (r.Get("tls") != nullptr) {
    msgs.Warn(r.Path("tls"), "TLS origination is not supported by skiff yet; ignored");
  }
  if (r.Get("portLevelSettings") != nullptr) {
    msgs.Warn(r.Path("portLevelSettings"), "not supported by skiff yet; ignored");
  }
  r.Ignore("tunnel");
  r.Ignore("proxyProtocol");
  return tp;
}

}  // namespace

Gateway DecodeGateway(Reader& spec) {
  Gateway gw;
  Messages& msgs = spec.msgs();
  gw.selector = spec.StringMap("selector");
  if (spec.Get("servers") == nullptr) {
    msgs.Error(spec.Path("servers"), "at least one server is required");
  }
  ForEachItem(spec, "servers", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    Server s;
    s.name = r.String("name");
    s.bind = r.String("bind");
    r.Ignore("defaultEndpoint");
    if (const auto* p = r.Get("port")) {
      Reader pr(*p, r.Path("port"), msgs);
      ServerPort port;
      auto number = pr.Int("number");
      if (!number) {
        msgs.Error(pr.Path("number"), "required");
      } else if (*number < 1 || *number > 65535) {
        msgs.Error(pr.Path("number"), "must be a port number between 1 and 65535 (got " +
                                          std::to_string(*number) + ")");
      } else {
        port.number = static_cast<uint32_t>(*number);
      }
      port.protocol = pr.String("protocol");
      std::string upper = port.protocol;
      for (auto& c : upper) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      }
      if (port.protocol.empty()) {
        msgs.Error(pr.Path("protocol"), "required");
      } else if (kServerProtocols.count(upper) == 0) {
        msgs.Error(pr.Path("protocol"), "unknown protocol \"" + port.protocol +
                                            "\" (HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, ...)");
      }
      port.protocol = upper;
      port.name = pr.String("name");
      if (port.name.empty()) {
        msgs.Error(pr.Path("name"), "port name must be set");
      }
      pr.Ignore("targetPort");
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
      }
    }
    s.has_tls = r.Get("tls") != nullptr;
    gw.servers.push_back(std::move(s));
  });
  return gw;
}

VirtualService DecodeVirtualService(Reader& spec) {
  VirtualService vs;
  Messages& msgs = spec.msgs();
  vs.hosts = spec.StringList("hosts");
  vs.gateways = spec.StringList("gateways");
  vs.export_to = spec.StringList("exportTo");
  if (vs.hosts.empty()) {
    msgs.Error(spec.Path("hosts"), "at least one host is required");
  }
  bool mesh = vs.gateways.empty();
  for (size_t i = 0; i < vs.gateways.size(); ++i) {
    const auto& g = vs.gateways[i];
    if (g == "mesh") {
      mesh = true;
      continue;
    }
    auto slash = g.find('/');
    std::string ns = slash == std::string::npos ? "" : g.substr(0, slash);
    std::string name = slash == std::string::npos ? g : g.substr(slash + 1);
    if ((!ns.empty() && !IsDns1123Label(ns)) || !IsDns1123Subdomain(name)) {
      msgs.Error(IndexPath(spec.Path("gateways"), i),
                 "invalid gateway reference \"" + g + "\" (use name, namespace/name or mesh)");
    }
  }
  for (size_t i = 0; i < vs.hosts.size(); ++i) {
    const auto& h = vs.hosts[i];
    if (auto err = ValidateHost(h); !err.empty()) {
      msgs.Error(IndexPath(spec.Path("hosts"), i), err);
    } else if (h == "*" && mesh) {
      msgs.Error(IndexPath(spec.Path("hosts"), i),
                 "wildcard host \"*\" is not allowed for VirtualServices bound to the mesh");
    }
  }
  ForEachItem(spec, "http", [&](const nlohmann::json& j, const std::string& path) {
    vs.http.push_back(DecodeHttpRoute(j, path, msgs));
  });
  if (spec.Get("tcp") != nullptr) {
    msgs.Warn(spec.Path("tcp"), "TCP routes are not supported by skiff yet; ignored");
  }
  if (spec.Get("tls") != nullptr) {
    msgs.Warn(spec.Path("tls"), "TLS routes are not supported by skiff yet; ignored");
  }
  return vs;
}

DestinationRule DecodeDestinationRule(Reader& spec) {
  DestinationRule dr;
  Messages& msgs = spec.msgs();
  dr.host = spec.String("host");
  if (dr.host.empty()) {
    msgs.Error(spec.Path("host"), "required");
  } else if (auto err = ValidateHost(dr.host); !err.empty()) {
    msgs.Error(spec.Path("host"), err);
  }
  dr.export_to = spec.StringList("exportTo");
  dr.traffic_policy = DecodeTrafficPolicy(spec);
  std::set<std::string> seen;
  ForEachItem(spec, "subsets", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    Subset s;
    s.name = r.String("name");
    if (s.name.empty()) {
      msgs.Error(r.Path("name"), "required");
    } else if (!IsDns1123Label(s.name)) {
      msgs.Error(r.Path("name"), "\"" + s.name + "\" is not a valid subset name (a DNS label)");
    } else if (!seen.insert(s.name).second) {
      msgs.Error(r.Path("name"), "duplicate subset name \"" + s.name + "\"");
    }
    s.labels = r.StringMap("labels");
    s.traffic_policy = DecodeTrafficPolicy(r);
    dr.subsets.push_back(std::move(s));
  });
  spec.Ignore("workloadSelector");
  return dr;
}

}  // namespace skiff::api

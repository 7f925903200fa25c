// DestinationRule: host, subsets and traffic policies (load balancer, connection pool,
// outlier detection, client TLS), with Istio's rules.
#include <set>

#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

namespace skiff::api {

namespace {

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
  if (const auto* bu = lr.Get("backendUtilization")) {
    // Istio's utilization-based balancing on ORCA load reports (Envoy's client-side
    // weighted round robin). A oneof with simple and consistentHash.
    Reader br(*bu, lr.Path("backendUtilization"), msgs);
    for (const char* f :
         {"weightUpdatePeriod", "weightExpirationPeriod", "weightStabilizationPeriod"}) {
      br.DurationField(f);
    }
    br.Int("errorUtilizationPenaltyPercent");
    br.StringList("metricNamesForComputingUtilization");
    if (lr.Get("simple") != nullptr || lr.Get("consistentHash") != nullptr) {
      msgs.Error(lr.path(), "only one of simple, consistentHash or backendUtilization can be set");
    }
    msgs.Warn(lr.Path("backendUtilization"),
              "utilization-based load balancing is not supported by skiff yet; round robin is "
              "used");
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
  bounded("consecutiveErrors", &legacy, kMaxWeight);
  if (orr.Get("consecutiveErrors") != nullptr) {
    // Istio no longer reads it: it has no effect.
    msgs.Warn(orr.Path("consecutiveErrors"),
              "deprecated; use consecutiveGatewayErrors or consecutive5xxErrors (ignored, as "
              "by Istio)");
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
        PortTrafficPolicy pp;
        if (port == nullptr) {
          msgs.Error(pr.Path("port"), "required: the port this policy is for");
        } else {
          Reader nr(*port, pr.Path("port"), msgs);
          auto n = nr.Int("number");
          if (!n || *n < 1 || *n > 65535) {
            msgs.Error(nr.Path("number"), "must be a port number between 1 and 65535");
          } else {
            pp.port = static_cast<uint32_t>(*n);
          }
        }
        Boxed<TrafficPolicy> fields = DecodePolicyFields(pr, /*port_level=*/true);
        if (fields) {
          pp.load_balancer = std::move(fields->load_balancer);
          pp.connection_pool = std::move(fields->connection_pool);
          pp.outlier_detection = std::move(fields->outlier_detection);
          pp.tls = std::move(fields->tls);
        }
        tp.port_level_settings.push_back(std::move(pp));
      });
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

}  // namespace

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

// Exchange, part 1: its states, the worker's pool of finished exchanges, and the request
// phases (target, route, local replies, cluster, upstream head, fault). The tries are in
// exchange_tries.cc, the response in exchange_response.cc.
#include "proxy/server/exchange.h"

#include <cstdio>

#include "proxy/http/authority.h"
#include "proxy/http/grpc.h"
#include "proxy/http/headers.h"
#include "proxy/http/http1_codec.h"
#include "proxy/policy/cors.h"
#include "proxy/policy/hash_key.h"
#include "proxy/policy/header_ops.h"
#include "proxy/policy/redirect.h"
#include "proxy/policy/rewrite.h"
#include "proxy/server/local_replies.h"
#include "proxy/upstream/cluster_state.h"

namespace skiff::proxy {

namespace {

bool IEquals(std::string_view a, std::string_view b) { return http::EqualsIgnoreCase(a, b); }

// A UUIDv4 in `out` (36 characters).
void RequestId(WorkerContext& ctx, char* out) {
  uint64_t a = ctx.NextRandom();
  uint64_t b = ctx.NextRandom();
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
  static const char* kHex = "0123456789abcdef";
  int pos = 0;
  auto put = [&](uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) {
      out[pos++] = kHex[(v >> (i * 4)) & 0xf];
    }
  };
  put(a >> 32, 8);
  out[pos++] = '-';
  put((a >> 16) & 0xffff, 4);
  out[pos++] = '-';
  put(a & 0xffff, 4);
  out[pos++] = '-';
  put(b >> 48, 4);
  out[pos++] = '-';
  put(b & 0xffffffffffffULL, 12);
}

policy::UriMatchKind KindOf(const router::StringMatcher& m) {
  if (m.empty()) {
    return policy::UriMatchKind::kNone;
  }
  if (m.is_exact()) {
    return policy::UriMatchKind::kExact;
  }
  if (m.is_prefix()) {
    return policy::UriMatchKind::kPrefix;
  }
  return policy::UriMatchKind::kRegex;
}

}  // namespace

// ---- Exchange: state -------------------------------------------------------------------

Exchange::Exchange(WorkerContext& context, const DownstreamInfo& downstream,
                   http::ResponseEncoder& encoder)
    : context_(context), downstream_(&downstream), encoder_(&encoder) {}

Exchange::~Exchange() {
  if (state_ != State::kComplete && state_ != State::kReset) {
    if (response_status_ == 0) {
      AddFlag("DC");
    }
    state_ = State::kReset;
    Finish();
  }
  try_.reset();
}

void Exchange::Park() {
  idle_timer_.Cancel();
  unsent_.Release();
  replay_.Release();
}

std::unique_ptr<Exchange> ExchangePool::Take() {
  if (spare_.empty()) {
    return nullptr;
  }
  std::unique_ptr<Exchange> e = std::move(spare_.back());
  spare_.pop_back();
  return e;
}

void ExchangePool::Give(std::unique_ptr<Exchange> exchange) {
  if (spare_.size() < max_ && exchange->Reusable()) {
    exchange->Park();
    spare_.push_back(std::move(exchange));
  }
}

void Exchange::Recycle(const DownstreamInfo& downstream, http::ResponseEncoder& encoder) {
  downstream_ = &downstream;
  encoder_ = &encoder;
  state_ = State::kRouting;
  config_.reset();
  head_method_ = false;
  idempotent_ = false;
  request_complete_ = false;
  request_has_body_ = false;
  client_upgrade_ = false;
  expect_continue_ = false;
  path_ = {};
  query_ = {};
  authority_ = {};
  absolute_form_ = false;
  hash_key_.clear();
  set_cookie_.clear();
  request_id_generated_ = false;
  cors_origin_.clear();
  listener_ = nullptr;
  route_ = nullptr;
  target_ = nullptr;
  cluster_ = nullptr;
  upstream_http2_ = false;
  upstream_head_.method.clear();
  upstream_head_.path.clear();
  upstream_head_.authority.clear();
  upstream_head_.fields.clear();
  upstream_head_.has_body = false;
  upstream_head_.content_length.reset();
  upstream_head_.upgrade = false;
  mirrors_.clear();
  fault_abort_status_ = 0;
  fault_grpc_status_ = -1;
  grpc_ = false;
  grpc_status_ = -1;
  grpc_timeout_.reset();
  counted_rq_active_ = false;
  unsent_.Clear();
  replay_.Clear();
  request_trailers_.clear();
  replay_enabled_ = false;
  replay_overflow_ = false;
  read_pauses_ = 0;
  retry_.reset();
  previous_endpoint_ = nullptr;
  served_endpoint_ = nullptr;
  active_requests_ = nullptr;
  attempts_ = 0;
  transparent_resends_ = 0;
  response_started_ = false;
  response_status_ = 0;
  flags_.clear();
  upstream_time_ms_ = -1;
  rq_head_bytes_ = 0;
  rq_body_bytes_ = 0;
  resp_head_bytes_ = 0;
  resp_body_bytes_ = 0;
  keep_strings_ = false;
  recorded_ = false;
  tracing_ = false;
}

void Exchange::Transition(State next) {
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;  // an ended exchange stays ended
  }
  state_ = next;
  if (next == State::kComplete || next == State::kReset) {
    Finish();
  }
}

void Exchange::Finish() {
  route_timer_.Cancel();
  try_timer_.Cancel();
  wait_timer_.Cancel();  // the stream idle timer stays: it ignores a finished exchange
  if (try_ != nullptr) {
    if (state_ == State::kComplete && response_started_) {
      try_->Detach();  // the connection returns to its pool by itself
    }
    RetireTry();
  }
  if (active_requests_ != nullptr) {
    --*active_requests_;
    active_requests_ = nullptr;
  }
  ReleaseClusterHold();
  mirrors_.clear();
  if (!recorded_) {
    recorded_ = true;
    RecordTelemetry();
  }
}

void Exchange::ReleaseClusterHold() {
  if (retry_) {
    retry_->Release();
  }
  if (counted_rq_active_ && cluster_ != nullptr) {
    counted_rq_active_ = false;
    cluster_->state->rq_active.fetch_sub(1, std::memory_order_relaxed);
  }
}

void Exchange::ResetAndClose() {
  if (try_ != nullptr) {
    try_->Reset();
    RetireTry();
  }
  Transition(State::kReset);
  encoder_->ResetStream();
}

void Exchange::PauseReading(uint8_t reason, bool pause) {
  const bool was = read_pauses_ != 0;
  read_pauses_ = pause ? static_cast<uint8_t>(read_pauses_ | reason)
                       : static_cast<uint8_t>(read_pauses_ & ~reason);
  if (was != (read_pauses_ != 0)) {
    encoder_->ReadDisable(read_pauses_ != 0);
  }
}

void Exchange::RetireTry() {
  // A try that ends above its watermark never says it drained: its pause goes with it
  // (once the exchange is over, the client's stream is not touched any more).
  if (state_ == State::kComplete || state_ == State::kReset) {
    read_pauses_ &= static_cast<uint8_t>(~kPauseUpstream);
  } else {
    PauseReading(kPauseUpstream, false);
  }
  if (active_requests_ != nullptr) {
    --*active_requests_;
    active_requests_ = nullptr;
  }
  try_timer_.Cancel();
  // The try may be on the stack (this runs from its callbacks): free it after this turn.
  UpstreamRequest* t = try_.release();
  t->Reset();
  context_.dispatcher().Defer([t] { delete t; });
}

// ---- Exchange: request phases ----------------------------------------------------------

void Exchange::DecodeHead(const http::RequestHead& req, size_t head_bytes, bool end_stream) {
  config_ = context_.config();
  head_method_ = req.method == "HEAD";
  idempotent_ = policy::IsIdempotent(req.method);
  request_complete_ = end_stream;
  request_has_body_ = !end_stream;
  expect_continue_ = req.expect_continue;
  rq_start_ = std::chrono::steady_clock::now();
  rq_head_bytes_ = head_bytes;
  if (const http::Header* ct = req.Find("content-type");
      ct != nullptr && ct->value.size() >= 16 &&
      http::EqualsIgnoreCase(ct->value.substr(0, 16), "application/grpc") &&
      (ct->value.size() == 16 || ct->value[16] == '+' || ct->value[16] == ';')) {
    grpc_ = true;
    if (const http::Header* t = req.Find("grpc-timeout"); t != nullptr) {
      grpc_timeout_ = http::ParseGrpcTimeout(t->value);
      if (grpc_timeout_ && grpc_timeout_->count() == 0) {
        grpc_timeout_.reset();  // 0 is no deadline (Envoy: "0 means infinity")
      }
    }
  }
  Touch();
  if (!idle_timer_.armed()) {
    // Still armed from this connection's previous request, it just checks last_activity_.
    idle_timer_.SetCallback([this] { OnStreamIdleTimeout(); });
    context_.dispatcher().Schedule(&idle_timer_, context_.options().stream_idle_timeout);
  }
  if (auto* tel = context_.telemetry(); tel != nullptr) {
    auto* owner = tel->owner;
    keep_strings_ = owner->access_log() || owner->tracing();
    if (keep_strings_) {
      rq_start_wall_ = std::chrono::system_clock::now();
      auto copy = [&req](std::string* out, std::string_view name) {
        const http::Header* h = req.Find(name);
        out->assign(h == nullptr ? std::string_view() : h->value);
      };
      tel_method_.assign(req.method);
      tel_path_.assign(req.target);
      tel_authority_.assign(req.host);
      copy(&tel_user_agent_, "user-agent");
      copy(&tel_xff_, "x-forwarded-for");
      copy(&tel_request_id_, "x-request-id");
      if (tel_request_id_.empty()) {
        // Generated before routing, as Envoy: a request answered locally (404 NR, a direct
        // response) has one in its log line and span too; the upstream gets the same.
        char id[36];
        RequestId(context_, id);
        tel_request_id_.assign(id, sizeof id);
        request_id_generated_ = true;
      }
    }
    if (owner->tracing()) {
      tracing_ = true;
      trace_ = telemetry::StartSpan(
          [&req](std::string_view name) -> std::optional<std::string_view> {
            const http::Header* h = req.Find(name);
            if (h == nullptr) {
              return std::nullopt;
            }
            return h->value;
          },
          owner->options().trace_sampling, [this] { return context_.NextRandom(); });
    }
  }
  if (PhaseTarget(req) && PhaseRoute(req) && PhaseLocalReply(req) && PhasePickCluster(req)) {
    PhaseUpstreamHead(req);
    // The views into the request head end with this call.
    path_ = query_ = authority_ = {};
    PhaseFault();
    return;
  }
  path_ = query_ = authority_ = {};
}

bool Exchange::PhaseTarget(const http::RequestHead& req) {
  if (config_ != nullptr) {
    for (const auto& l : config_->listeners()) {
      if (l.bind_port == downstream_->listener_bind_port &&
          l.address == downstream_->listener_address) {
        listener_ = &l;
        break;
      }
    }
  }
  if (req.method.size() == 7 && req.method == "CONNECT") {
    SendLocalReply(405, "", "-");  // no route enables CONNECT
    return false;
  }
  // An absolute-form target (clients using the proxy as their HTTP proxy) carries the
  // authority, which replaces Host (RFC 9112 3.2.2); upstream gets the origin form.
  std::string_view target = req.target;
  authority_ = req.host;
  if (target.find('#') != std::string_view::npos) {
    // A request target has no fragment (RFC 9112 3.2): Envoy refuses one rather than
    // route "/admin#x" past an exact or regex match on "/admin".
    SendLocalReply(400, "request target with a fragment", "-");
    return false;
  }
  if (target.size() >= 7 && IEquals(target.substr(0, 7), "http://")) {
    std::string_view rest = target.substr(7);
    size_t end = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, end);
    if (authority.empty() || authority.find('@') != std::string_view::npos ||
        !http::ParseAuthority(authority)) {
      SendLocalReply(400, "invalid absolute-form request target", "-");
      return false;
    }
    authority_ = authority;
    absolute_form_ = true;
    if (end == std::string_view::npos) {
      target = "/";
    } else if (rest[end] == '?') {
      query_ = rest.substr(end);
      target = "/";
    } else {
      target = rest.substr(end);
    }
  } else if (target == "*") {
    if (req.method != "OPTIONS") {
      // The asterisk form is a server-wide OPTIONS only (RFC 9112 3.2.4).
      SendLocalReply(400, "the asterisk-form request target is for OPTIONS only", "-");
      return false;
    }
    path_ = "*";
    return true;
  } else if (target.empty() || target.front() != '/') {
    SendLocalReply(400, "unsupported request target form", "-");
    return false;
  }
  std::string_view path = target;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query_ = target.substr(q);
  }
  // Path normalization (Istio's BASE by default) before routing; the normalized path is
  // also what goes upstream.
  http::PathNormalization mode = context_.options().path_normalization;
  if (listener_ != nullptr && listener_->path_normalization) {
    mode = *listener_->path_normalization;
  }
  path_ = http::NormalizePath(path, mode, &normalized_path_) ? std::string_view(normalized_path_)
                                                             : path;
  return true;
}

bool Exchange::PhaseRoute(const http::RequestHead& req) {
  if (listener_ != nullptr) {
    // A header sent several times is matched as its values joined with ',' (Envoy). The
    // joined text lives until the next lookup: a matcher reads each value at once.
    std::string joined;
    std::function<std::optional<std::string_view>(std::string_view)> header_fn =
        [&req, &joined](std::string_view name) -> std::optional<std::string_view> {
      const http::Header* first = nullptr;
      bool several = false;
      for (const auto& h : req.headers) {
        if (IEquals(h.name, name)) {
          if (first != nullptr) {
            several = true;
            break;
          }
          first = &h;
        }
      }
      if (first == nullptr) {
        return std::nullopt;
      }
      if (!several) {
        return first->value;
      }
      joined.clear();
      for (const auto& h : req.headers) {
        if (IEquals(h.name, name)) {
          if (!joined.empty() || &h != first) {
            joined += ',';
          }
          joined.append(h.value);
        }
      }
      return std::string_view(joined);
    };
    router::RequestView view;
    view.method = req.method;
    view.path = path_;
    view.query = query_.empty() ? std::string_view() : query_.substr(1);
    view.scheme = downstream_->secure ? "https" : "http";
    view.authority = authority_;
    view.port = listener_->port;
    view.header = &header_fn;
    const router::RouteTable* table =
        downstream_->route_table != nullptr ? downstream_->route_table : listener_->route_table;
    const router::VirtualHost* vh = table != nullptr ? table->FindVirtualHost(authority_) : nullptr;
    if (vh == nullptr && downstream_->host_routed && listener_->fallback_route_table != nullptr) {
      // A captured request for a host nothing serves: Istio's allow_any / block_all.
      vh = listener_->fallback_route_table->FindVirtualHost(authority_);
    }
    if (vh != nullptr) {
      for (const auto& r : vh->routes) {
        if (r.Matches(view)) {
          route_ = &r;
          break;
        }
      }
    }
  }
  if (route_ == nullptr) {
    context_.stats().no_route.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(404, "", "NR");
    return false;
  }
  return true;
}

bool Exchange::PhaseLocalReply(const http::RequestHead& req) {
  const v1::Route& rp = *route_->proto;
  // CORS (Istio's corsPolicy): a preflight from an allowed origin is answered here; other
  // requests from it get the CORS response fields.
  if (!route_->cors_origins.empty()) {
    if (const http::Header* origin = req.Find("origin")) {
      for (const auto& m : route_->cors_origins) {
        if (m.Matches(origin->value)) {
          cors_origin_.assign(origin->value);
          break;
        }
      }
    }
    if (!cors_origin_.empty() &&
        policy::IsPreflight(req.method, req.Find("access-control-request-method") != nullptr)) {
      std::string fields = policy::PreflightFields(rp.cors(), cors_origin_);
      cors_origin_.clear();
      SendLocalReply(200, "", "-", fields);
      return false;
    }
  }
  if (rp.has_direct_response()) {
    SendLocalReply(static_cast<int>(rp.direct_response().status()), rp.direct_response().body(),
                   "-");
    return false;
  }
  if (rp.has_redirect()) {
    std::string fields = "location: ";
    fields += policy::RedirectLocation(
        rp.redirect(), downstream_->secure ? "https" : "http", authority_, path_,
        query_.empty() ? std::string_view() : query_.substr(1),
        route_->uri.is_prefix() ? std::string_view(route_->uri.value()) : std::string_view("/"));
    fields += "\r\n";
    SendLocalReply(policy::RedirectStatus(rp.redirect()), "", "-", fields);
    return false;
  }
  return true;
}

bool Exchange::PhasePickCluster(const http::RequestHead& req) {
  const auto& action = route_->proto->route();
  target_ = &action.clusters(0);
  if (action.clusters_size() > 1 && route_->total_weight > 0) {
    uint64_t pick = context_.NextRandom() % route_->total_weight;
    for (const auto& wc : action.clusters()) {
      if (pick < wc.weight()) {
        target_ = &wc;
        break;
      }
      pick -= wc.weight();
    }
  }
  cluster_ = config_->FindCluster(target_->cluster());
  if (cluster_ == nullptr) {
    context_.stats().no_healthy_upstream.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(503, "no healthy upstream", "UH");
    return false;
  }
  upstream_http2_ = cluster_->Http2For(encoder_->protocol() == "HTTP/2");
  // The consistent-hash key, kept for every try.
  if (cluster_->policy == v1::LoadBalancer::CONSISTENT_HASH) {
    const auto& ch = cluster_->proto->load_balancer().consistent_hash();
    if (ch.has_http_header_name()) {
      if (const auto* h = req.Find(ch.http_header_name())) {
        hash_key_.assign(h->value);
      }
    } else if (ch.has_use_source_ip()) {
      hash_key_ = downstream_->peer;
    } else if (ch.has_http_cookie()) {
      const auto& hc = ch.http_cookie();
      std::optional<std::string_view> value;
      for (const auto& h : req.headers) {
        if (h.name.size() == 6 && IEquals(h.name, "cookie") &&
            (value = policy::CookieValue(h.value, hc.name()))) {
          break;
        }
      }
      if (value) {
        hash_key_.assign(*value);
      } else if (hc.has_ttl()) {
        // Envoy: with a ttl, a client without the cookie is given one; its value is the key,
        // so the client's next requests reach the same endpoint.
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx",
                      static_cast<unsigned long long>(context_.NextRandom()));
        hash_key_.assign(hex, 16);
        set_cookie_ = policy::HashCookieField(hc.name(), hash_key_, hc.path(),
                                              static_cast<uint64_t>(hc.ttl().seconds()));
      }
    } else if (ch.has_http_query_parameter_name()) {
      auto value = policy::QueryParameter(query_.empty() ? query_ : query_.substr(1),
                                          ch.http_query_parameter_name());
      if (value) {
        hash_key_.assign(*value);
      }
    }
  }
  return true;
}

void Exchange::PhaseUpstreamHead(const http::RequestHead& req) {
  const v1::Route& route = *route_->proto;
  const auto& action = route.route();
  http::RequestHeaders& out = upstream_head_;
  out.method.assign(req.method);
  // The path: rewritten, else the normalized one; the query as received.
  if (action.has_rewrite() && (!action.rewrite().uri().empty() || route_->rewrite_regex)) {
    out.path = policy::RewritePath(path_, query_, action.rewrite(), KindOf(route_->uri),
                                   route_->uri.value(), route_->rewrite_regex.get());
  } else {
    out.path.assign(path_);
    out.path.append(query_);
  }
  if (action.has_rewrite() && !action.rewrite().authority().empty()) {
    out.authority = action.rewrite().authority();
  } else {
    out.authority.assign(authority_);
  }
  const v1::HeaderOperations* route_ops = policy::RequestOps(route.headers(), route.has_headers());
  const v1::HeaderOperations* target_ops =
      policy::RequestOps(target_->headers(), target_->has_headers());
  if (const std::string* a = policy::SetAuthority(route_ops, target_ops); a != nullptr) {
    out.authority = *a;
  }
  const std::string_view connection = req.connection;
  const http::Header* upgrade = nullptr;
  if (!connection.empty() && http::HasConnectionToken(connection, "upgrade")) {
    upgrade = req.Find("upgrade");
  }
  client_upgrade_ =
      upgrade != nullptr && IEquals(upgrade->value, "websocket") && !request_has_body_;
  out.upgrade = client_upgrade_;
  std::string& f = out.fields;
  f.clear();
  std::string_view xff;
  bool has_request_id = false;
  const bool header_ops = route_ops != nullptr || target_ops != nullptr;
  for (const auto& h : req.headers) {
    auto kind = http::ClassifyField(h.name);
    switch (kind) {
      case http::FieldKind::kHopByHop:
        if (h.name.size() == 2 && cluster_ != nullptr &&
            http::HasConnectionToken(h.value, "trailers")) {
          http::AppendField(&f, "te", "trailers");  // kept as Envoy does: gRPC needs it
        }
        continue;
      case http::FieldKind::kHost:  // the authority, above
      case http::FieldKind::kForwardedProto:
        continue;
      case http::FieldKind::kForwardedFor:
        xff = h.value;
        continue;
      case http::FieldKind::kRequestId:
      case http::FieldKind::kOther:
      case http::FieldKind::kServer:
        break;
    }
    if (!connection.empty() && http::HasConnectionToken(connection, h.name)) {
      continue;  // named hop-by-hop by the client
    }
    if (header_ops && policy::Overridden(h.name, route_ops, target_ops)) {
      continue;
    }
    if (h.name.size() == 23 && http::TokenEqualsLower(h.name, "x-forwarded-client-cert")) {
      continue;  // only the proxy says who the client is (Envoy's SANITIZE)
    }
    if (h.name.size() == 21 && !cluster_->inbound &&
        http::TokenEqualsLower(h.name, "x-envoy-attempt-count")) {
      continue;  // this proxy's own count replaces it
    }
    if (tracing_ && telemetry::IsTraceHeader(h.name)) {
      continue;  // replaced by this hop's context below
    }
    if (kind == http::FieldKind::kRequestId) {
      has_request_id = true;
    }
    http::AppendField(&f, h.name, h.value);
  }
  if (client_upgrade_) {
    http::AppendField(&f, "upgrade", upgrade->value);
  }
  policy::AppendOps(&f, route_ops);
  policy::AppendOps(&f, target_ops);
  if (xff.empty()) {
    http::AppendField(&f, "x-forwarded-for", downstream_->peer);
  } else {
    std::string v(xff);
    v += ", ";
    v += downstream_->peer;
    http::AppendField(&f, "x-forwarded-for", v);
  }
  http::AppendField(&f, "x-forwarded-proto", downstream_->secure ? "https" : "http");
  if (downstream_->peer_certificate) {
    // Envoy's x-forwarded-client-cert for a verified client certificate (mutual TLS).
    const auto& pc = *downstream_->peer_certificate;
    std::string xfcc = "Hash=" + pc.sha256_hex + ";Subject=\"" + pc.subject + "\"";
    for (const auto& uri : pc.uri_sans) {
      xfcc += ";URI=" + uri;
    }
    for (const auto& dns : pc.dns_sans) {
      xfcc += ";DNS=" + dns;
    }
    http::AppendField(&f, "x-forwarded-client-cert", xfcc);
  }
  if (!has_request_id) {
    if (request_id_generated_) {
      http::AppendField(&f, "x-request-id", tel_request_id_);
    } else {
      char id[36];
      RequestId(context_, id);
      http::AppendField(&f, "x-request-id", std::string_view(id, sizeof id));
      if (keep_strings_) {
        tel_request_id_.assign(id, sizeof id);
      }
    }
  }
  if (tracing_) {
    telemetry::AppendPropagationHeaders(trace_, &f);
  }
  // Istio's default proxyHeaders.attemptCount (Envoy's include_request_attempt_count): the
  // try's number, rewritten in place for each retry (SendRequest).
  // (A sidecar's inbound side passes on the count of the client's proxy instead.)
  attempt_count_len_ = 0;
  if (!cluster_->inbound) {
    http::AppendField(&f, "x-envoy-attempt-count", "1");
    attempt_count_at_ = f.size() - 3;  // the "1" before the CRLF
    attempt_count_len_ = 1;
  }
  out.has_body = request_has_body_;
  out.content_length = req.content_length;
  if (req.chunked) {
    out.content_length.reset();
  }

  // Mirrors are chosen now and sent once the request is complete.
  for (const auto& m : action.mirrors()) {
    if (!policy::Roll(m.percentage(), context_.NextRandom())) {
      continue;
    }
    if (const auto* mc = config_->FindCluster(m.cluster()); mc != nullptr) {
      mirrors_.push_back(mc);
    }
  }
  retry_.emplace(route_->retry, idempotent_, &cluster_->state->rq_retry_active,
                 cluster_->max_retries);
  replay_enabled_ = request_has_body_ && (retry_->enabled() || !mirrors_.empty());
  if (expect_continue_ && request_has_body_) {
    encoder_->Encode100Continue();
  }
}

void Exchange::PhaseFault() {
  const v1::Route& route = *route_->proto;
  if (route.has_fault()) {
    const auto& f = route.fault();
    if (f.has_abort() && policy::Roll(f.abort().percentage(), context_.NextRandom())) {
      fault_abort_status_ = static_cast<int>(f.abort().http_status());
      if (f.abort().has_grpc_status()) {
        fault_grpc_status_ = static_cast<int>(f.abort().grpc_status());
      }
    }
    if (f.has_delay() && f.delay().has_fixed_delay() &&
        policy::Roll(f.delay().percentage(), context_.NextRandom())) {
      auto delay = policy::ToMillis(f.delay().fixed_delay());
      if (delay.count() > 0) {
        context_.stats().fault_delays_injected.fetch_add(1, std::memory_order_relaxed);
        AddFlag("DI");
        Transition(State::kFaultDelay);
        wait_timer_.SetCallback([this] { AfterFaultDelay(); });
        context_.dispatcher().Schedule(&wait_timer_, delay);
        return;
      }
    }
  }
  AfterFaultDelay();
}

void Exchange::AfterFaultDelay() {
  if (fault_grpc_status_ >= 0) {
    context_.stats().fault_aborts_injected.fetch_add(1, std::memory_order_relaxed);
    SendGrpcError(fault_grpc_status_, "fault filter abort", "FI");
    return;
  }
  if (fault_abort_status_ != 0) {
    context_.stats().fault_aborts_injected.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(fault_abort_status_, "fault filter abort", "FI");
    return;
  }
  auto* state = cluster_->state.get();
  state->upstream_rq_total.fetch_add(1, std::memory_order_relaxed);
  // Circuit breaker on requests in flight to the cluster.
  if (cluster_->max_requests != 0 &&
      state->rq_active.load(std::memory_order_relaxed) >= cluster_->max_requests) {
    state->upstream_rq_pending_overflow.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(503, kOverflowBody, "UO");
    return;
  }
  state->rq_active.fetch_add(1, std::memory_order_relaxed);
  counted_rq_active_ = true;
  std::optional<std::chrono::milliseconds> timeout = route_->timeout;
  if (grpc_timeout_ && (!timeout || *grpc_timeout_ < *timeout)) {
    timeout = grpc_timeout_;  // the client's deadline, below the route's timeout
  }
  if (timeout) {
    route_timer_.SetCallback([this] { OnRouteTimeout(); });
    context_.dispatcher().Schedule(&route_timer_, *timeout);
  }
  StartTry();
}

}  // namespace skiff::proxy

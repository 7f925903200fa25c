#include "proxy/server/exchange.h"

#include <charconv>

#include "proxy/http/authority.h"
#include "proxy/http/headers.h"
#include "proxy/http/http1_codec.h"
#include "proxy/policy/cors.h"
#include "proxy/policy/header_ops.h"
#include "proxy/policy/redirect.h"
#include "proxy/policy/rewrite.h"
#include "proxy/upstream/cluster_state.h"

namespace skiff::proxy {

namespace {

// gRPC's grpc-timeout: 1 to 8 digits and a unit (H M S m u n). nullopt when malformed.
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

// Envoy's mapping of an HTTP status to a gRPC status for local replies.
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

// grpc-message: percent-encoded outside printable ASCII, and '%' itself.
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

// The grpc-status in trailer fields ("name: value\r\n" lines), or -1.
int GrpcStatusOf(std::string_view fields) {
  while (!fields.empty()) {
    size_t eol = fields.find("\r\n");
    std::string_view line = fields.substr(0, eol);
    fields = eol == std::string_view::npos ? std::string_view() : fields.substr(eol + 2);
    if (line.size() > 12 && http::EqualsIgnoreCase(line.substr(0, 12), "grpc-status:")) {
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

// Envoy's local-reply bodies.
constexpr std::string_view kTerminationBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection "
    "termination";
constexpr std::string_view kOverflowBody =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
constexpr std::string_view kConnectFailureBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
constexpr std::string_view kConnectTimeoutBody =
    "upstream connect error or disconnect/reset before headers. reset reason: connection timeout";
constexpr std::string_view kTimeoutBody = "upstream request timeout";

// A stale pooled connection (closed before any byte of the request reached it) is
// replaced without counting as a retry, at most this many times per request.
constexpr uint32_t kMaxTransparentResends = 3;

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

const std::string& UnknownDestination() {
  static const std::string* text = new std::string(telemetry::DestinationLabels(nullptr, nullptr));
  return *text;
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

// ---- UpstreamRequest ---------------------------------------------------------------------

UpstreamRequest::UpstreamRequest(Exchange& exchange, const upstream::Endpoint& endpoint)
    : exchange_(exchange), endpoint_(endpoint) {}

UpstreamRequest::~UpstreamRequest() { Reset(); }

void UpstreamRequest::Start(upstream::ConnectionPool& pool, const upstream::Cluster& cluster,
                            bool http2) {
  pool_ = &pool;
  waiting_ = true;
  pool.NewStream(cluster, endpoint_, http2, *this);
}

void UpstreamRequest::Reset() {
  if (waiting_ && pool_ != nullptr) {
    waiting_ = false;
    pool_->Cancel(*this);
  }
  if (stream_ != nullptr) {
    http::ClientStream* s = stream_;
    stream_ = nullptr;
    s->Reset();
  }
}

void UpstreamRequest::OnPoolReady(http::ClientStream& stream) {
  waiting_ = false;
  stream_ = &stream;
  stream.SetDecoder(this);
  exchange_.OnTryReady(*this);
}

void UpstreamRequest::OnPoolFailure(http::ResetReason reason) {
  waiting_ = false;
  exchange_.OnTryFailed(*this, reason);
}

void UpstreamRequest::DecodeResponseHead(const http::ResponseHead& head, bool end_stream) {
  exchange_.OnUpstreamHead(*this, head, end_stream);
}

void UpstreamRequest::DecodeResponseBody(std::string_view data, bool end_stream) {
  exchange_.OnUpstreamBody(*this, data, end_stream);
}

void UpstreamRequest::DecodeResponseTrailers(std::string_view fields) {
  exchange_.OnUpstreamTrailers(*this, fields);
}

void UpstreamRequest::OnUpstreamReset(http::ResetReason reason) {
  if (stream_ != nullptr) {
    bytes_sent_ = stream_->bytes_sent();
    reused_ = stream_->reused();
  }
  stream_ = nullptr;  // the connection is gone
  exchange_.OnTryFailed(*this, reason);
}

void UpstreamRequest::OnUpstreamWatermark(bool above) { exchange_.OnUpstreamWatermark(above); }

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
  unsent_paused_ = false;
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

void Exchange::RetireTry() {
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
      grpc_timeout_ = ParseGrpcTimeout(t->value);
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
    std::function<std::optional<std::string_view>(std::string_view)> header_fn =
        [&req](std::string_view name) -> std::optional<std::string_view> {
      const http::Header* h = req.Find(name);
      if (h == nullptr) {
        return std::nullopt;
      }
      return h->value;
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
      if (const auto* h = req.Find("cookie")) {
        std::string_view c = h->value;
        std::string needle = ch.http_cookie().name() + "=";
        size_t pos = c.find(needle);
        if (pos != std::string_view::npos) {
          c.remove_prefix(pos + needle.size());
          hash_key_.assign(c.substr(0, c.find(';')));
        }
      }
    } else if (ch.has_http_query_parameter_name()) {
      std::string_view t = req.target;
      std::string needle = ch.http_query_parameter_name() + "=";
      size_t pos = t.find(needle);
      if (pos != std::string_view::npos) {
        t.remove_prefix(pos + needle.size());
        hash_key_.assign(t.substr(0, t.find('&')));
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
        if (h.name.size() == 2 && cluster_ != nullptr && upstream_http2_ &&
            http::HasConnectionToken(h.value, "trailers")) {
          http::AppendField(&f, "te", "trailers");  // to HTTP/2 upstreams: gRPC needs it
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
    char id[36];
    RequestId(context_, id);
    http::AppendField(&f, "x-request-id", std::string_view(id, sizeof id));
    if (keep_strings_) {
      tel_request_id_.assign(id, sizeof id);
    }
  }
  if (tracing_) {
    telemetry::AppendPropagationHeaders(trace_, &f);
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

// ---- Exchange: tries -------------------------------------------------------------------

void Exchange::StartTry() {
  ++attempts_;
  const upstream::Endpoint* endpoint = nullptr;
  if (cluster_->original_destination) {
    // The captured connection's own destination (a sidecar's inbound traffic).
    if (!downstream_->original_address.empty()) {
      auto& e = original_endpoint_;
      e.address = downstream_->original_address;
      e.port = downstream_->original_port;
      e.source_address = cluster_->source_address;
      e.key = e.address + ":" + std::to_string(e.port) +
              (e.source_address.empty() ? "" : "@" + e.source_address);
      e.telemetry_labels = cluster_->telemetry_labels;
      endpoint = &e;
    }
  } else {
    endpoint =
        context_.load_balancer().Pick(*cluster_, hash_key_, previous_endpoint_,
                                      cluster_->outlier_detection ? upstream::SteadyNowMs() : 0);
  }
  if (endpoint == nullptr) {
    context_.stats().no_healthy_upstream.fetch_add(1, std::memory_order_relaxed);
    SendLocalReply(503, "no healthy upstream", "UH");
    return;
  }
  previous_endpoint_ = endpoint;
  Transition(State::kUpstream);
  if (auto per_try = route_->retry.per_try_timeout()) {
    try_timer_.SetCallback([this] { OnPerTryTimeout(); });
    context_.dispatcher().Schedule(&try_timer_, *per_try);
  }
  if (cluster_->policy == v1::LoadBalancer::LEAST_REQUEST) {
    active_requests_ = &context_.load_balancer().ActiveRequests(endpoint->key);
    ++*active_requests_;
  }
  try_ = std::make_unique<UpstreamRequest>(*this, *endpoint);
  try_->Start(context_.pool(), *cluster_, upstream_http2_);
}

void Exchange::OnTryReady(UpstreamRequest& request) {
  if (&request != try_.get()) {
    return;
  }
  SendRequest(request);
}

void Exchange::SendRequest(UpstreamRequest& request) {
  http::ClientStream* stream = request.stream();
  try_sent_ = std::chrono::steady_clock::now();
  if (request_complete_ && !mirrors_.empty()) {
    LaunchMirrors();
  }
  bool retry = attempts_ > 1 || transparent_resends_ > 0;
  bool end = !request_has_body_;
  stream->EncodeHead(upstream_head_, end);
  if (end || request.stream() == nullptr) {
    return;
  }
  // A retry sends everything received so far; the first try what waited for it.
  net::Buffer& body = retry ? replay_ : unsent_;
  std::string_view data = body.view();
  bool last = request_complete_ && request_trailers_.empty();
  if (!data.empty() || last) {
    stream->EncodeBody(data, last);
  }
  if (request_complete_ && !request_trailers_.empty() && request.stream() != nullptr) {
    stream->EncodeTrailers(request_trailers_);
  }
  unsent_.Clear();
  if (unsent_paused_) {
    unsent_paused_ = false;
    encoder_->ReadDisable(false);
  }
}

void Exchange::DecodeBody(std::string_view data, bool end_stream) {
  Touch();
  rq_body_bytes_ += data.size();
  if (replay_enabled_ && !replay_overflow_) {
    if (replay_.size() + data.size() > context_.options().max_buffer_bytes) {
      replay_overflow_ = true;  // too big to replay: no more retries or mirrors for it
      replay_.Release();
    } else {
      replay_.Append(data);
    }
  }
  if (end_stream) {
    request_complete_ = true;
  }
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;  // answered already (an early response): the rest is dropped
  }
  if (try_ != nullptr && try_->stream() != nullptr) {
    try_->stream()->EncodeBody(data, end_stream);
  } else {
    unsent_.Append(data);
    if (!unsent_paused_ && unsent_.size() > context_.options().max_buffer_bytes) {
      unsent_paused_ = true;
      encoder_->ReadDisable(true);
    }
  }
  if (end_stream) {
    RequestComplete();
  }
}

void Exchange::DecodeTrailers(std::string_view fields) {
  Touch();
  request_trailers_.assign(fields);
  request_complete_ = true;
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;
  }
  if (try_ != nullptr && try_->stream() != nullptr) {
    try_->stream()->EncodeTrailers(fields);
  }
  RequestComplete();
}

void Exchange::RequestComplete() {
  // Mirrors go once the request is complete and the router has sent it (not after an
  // abort fault or a local reply).
  if (!mirrors_.empty() && attempts_ > 0) {
    LaunchMirrors();
  }
}

void Exchange::LaunchMirrors() {
  auto& stats = context_.stats();
  if (request_has_body_ && (!replay_enabled_ || replay_overflow_)) {
    stats.mirror_requests_skipped.fetch_add(mirrors_.size(), std::memory_order_relaxed);
    mirrors_.clear();
    return;
  }
  // Envoy's shadow authority: "-shadow" appended to the host name (before any port).
  http::RequestHeaders copy = upstream_head_;
  std::string_view host = router::HostWithoutPort(upstream_head_.authority);
  copy.authority.assign(host);
  copy.authority.append("-shadow");
  copy.authority.append(std::string_view(upstream_head_.authority).substr(host.size()));
  if (request_has_body_) {
    copy.content_length = replay_.size();
  }
  std::string request;
  http::AppendRequestHead(copy, &request);
  if (request_has_body_) {
    request.append(replay_.view());
  }
  for (const auto* cluster : mirrors_) {
    context_.shadows().Shadow(*cluster, request);
  }
  mirrors_.clear();
}

void Exchange::OnTryFailed(UpstreamRequest& request, http::ResetReason reason) {
  if (&request != try_.get()) {
    return;
  }
  switch (reason) {
    case http::ResetReason::kConnectFailure:
      TryFailed(policy::TryFailure::kConnectFailure, "UF", kConnectFailureBody, 503);
      return;
    case http::ResetReason::kConnectTimeout:
      TryFailed(policy::TryFailure::kConnectFailure, "UF", kConnectTimeoutBody, 503);
      return;
    case http::ResetReason::kOverflow:
      RetireTry();
      SendLocalReply(503, kOverflowBody, "UO");
      return;
    case http::ResetReason::kProtocolError:
      RecordOutcome(upstream::Outcome::kGatewayError, &request.endpoint());
      RetireTry();
      SendLocalReply(502, "upstream sent an invalid response", "UPE");
      return;
    case http::ResetReason::kConnectionTermination:
    case http::ResetReason::kLocalReset:
      break;
  }
  if (response_started_) {
    ResetAndClose();  // mid-body: the client sees a truncated response
    return;
  }
  bool replayable = !request_has_body_ || (replay_enabled_ && !replay_overflow_);
  if (request.bytes_sent() == 0 && request.reused() && replayable &&
      transparent_resends_ < kMaxTransparentResends) {
    // A pooled connection the upstream had closed before any byte of this request reached
    // it: the request was never seen, so it goes again on another connection (not a retry).
    ++transparent_resends_;
    --attempts_;
    RetireTry();
    StartTry();
    return;
  }
  // Some of the request may have been processed: it is sent again only if the retry
  // policy says so (never a POST, unless "reset" is listed explicitly).
  TryFailed(request.bytes_sent() == 0 ? policy::TryFailure::kResetBeforeRequest
                                      : policy::TryFailure::kReset,
            "UC", kTerminationBody, 503);
}

void Exchange::TryFailed(policy::TryFailure failure, const char* flag, std::string_view body,
                         int status) {
  const upstream::Endpoint* endpoint = try_ != nullptr ? &try_->endpoint() : nullptr;
  RetireTry();
  RecordOutcome(upstream::Outcome::kGatewayError, endpoint);
  if (failure == policy::TryFailure::kPerTryTimeout) {
    cluster_->state->upstream_rq_per_try_timeout.fetch_add(1, std::memory_order_relaxed);
  }
  bool replayable = !request_has_body_ || (replay_enabled_ && !replay_overflow_);
  auto decision = retry_->OnFailure(failure, replayable, context_.NextRandom());
  if (ScheduleRetry(decision)) {
    return;
  }
  if (failure == policy::TryFailure::kPerTryTimeout) {
    SendLocalReply(504, kTimeoutBody, "UT");
  } else {
    SendLocalReply(status, body, flag);
  }
}

bool Exchange::ScheduleRetry(policy::RetryDecision decision) {
  auto* state = cluster_->state.get();
  switch (decision) {
    case policy::RetryDecision::kRetry:
      break;
    case policy::RetryDecision::kLimitExceeded:
      state->upstream_rq_retry_limit_exceeded.fetch_add(1, std::memory_order_relaxed);
      AddFlag("URX");
      return false;
    case policy::RetryDecision::kOverflow:
      state->upstream_rq_retry_overflow.fetch_add(1, std::memory_order_relaxed);
      return false;
    case policy::RetryDecision::kNoRetry:
    case policy::RetryDecision::kBodyGone:
      return false;
  }
  state->upstream_rq_retry.fetch_add(1, std::memory_order_relaxed);
  Transition(State::kBackoff);
  wait_timer_.SetCallback([this] { StartTry(); });
  context_.dispatcher().Schedule(&wait_timer_, retry_->backoff());
  return true;
}

void Exchange::OnPerTryTimeout() {
  if (try_ != nullptr) {
    try_->Reset();
  }
  TryFailed(policy::TryFailure::kPerTryTimeout, "UT", kTimeoutBody, 504);
}

void Exchange::OnRouteTimeout() {
  cluster_->state->upstream_rq_timeout.fetch_add(1, std::memory_order_relaxed);
  if (response_started_) {
    ResetAndClose();
    return;
  }
  if (try_ != nullptr) {
    try_->Reset();
    RetireTry();
  }
  SendLocalReply(504, kTimeoutBody, "UT");
}

void Exchange::OnStreamIdleTimeout() {
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;  // between requests: the next one re-arms it if needed
  }
  auto idle = context_.dispatcher().now() - last_activity_;
  auto timeout = context_.options().stream_idle_timeout;
  if (idle < timeout) {
    // Bytes moved since the timer was armed: wait for the rest of the period.
    context_.dispatcher().Schedule(
        &idle_timer_, std::chrono::duration_cast<std::chrono::milliseconds>(timeout - idle) +
                          std::chrono::milliseconds(1));
    return;
  }
  context_.stats().downstream_rq_idle_timeout.fetch_add(1, std::memory_order_relaxed);
  if (response_started_ || state_ == State::kTunnel) {
    AddFlag("SI");
    ResetAndClose();
    return;
  }
  if (try_ != nullptr) {
    try_->Reset();
    RetireTry();
  }
  SendLocalReply(408, "stream timeout", "SI");
}

// ---- Exchange: response ----------------------------------------------------------------

void Exchange::OnUpstreamHead(UpstreamRequest& request, const http::ResponseHead& head,
                              bool end_stream) {
  if (&request != try_.get()) {
    return;
  }
  Touch();
  RecordOutcome(upstream::OutcomeOfStatus(head.status), &request.endpoint());
  if (head.status == 101 && !client_upgrade_) {
    // An upgrade the client did not ask for cannot be relayed.
    try_->Reset();
    RetireTry();
    SendLocalReply(502, "upstream sent an unexpected upgrade", "UPE");
    return;
  }
  std::optional<int> grpc_status;
  if (const auto* g = head.Find("grpc-status")) {
    int v = 0;
    auto [p, ec] = std::from_chars(g->value.data(), g->value.data() + g->value.size(), v);
    if (ec == std::errc()) {
      grpc_status = v;
      grpc_status_ = v;  // a trailers-only response
    }
  }
  bool replayable = !request_has_body_ || (replay_enabled_ && !replay_overflow_);
  auto decision = retry_->OnResponse(head.status, grpc_status, replayable, context_.NextRandom());
  if (decision == policy::RetryDecision::kRetry) {
    // Retry on the answer: its bytes go with its connection.
    try_->Reset();
    RetireTry();
    ScheduleRetry(decision);
    return;
  }
  if (decision == policy::RetryDecision::kNoRetry && attempts_ > 1) {
    cluster_->state->upstream_rq_retry_success.fetch_add(1, std::memory_order_relaxed);
  }
  ScheduleRetry(decision);  // counts URX / overflow; never retries here
  try_timer_.Cancel();
  served_endpoint_ = &request.endpoint();
  upstream_time_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - try_sent_)
                          .count();

  // The response head for the client.
  const v1::Route& route = *route_->proto;
  const v1::HeaderOperations* route_ops = policy::ResponseOps(route.headers(), route.has_headers());
  const v1::HeaderOperations* target_ops =
      policy::ResponseOps(target_->headers(), target_->has_headers());
  http::ResponseHeaders& h = response_head_;
  h.status = head.status;
  h.reason = head.reason;
  h.fields.clear();
  h.content_length.reset();
  h.upgrade = false;
  const std::string_view connection = head.connection;
  const bool header_ops = route_ops != nullptr || target_ops != nullptr;
  for (const auto& f : head.headers) {
    auto kind = http::ClassifyField(f.name);
    if (kind == http::FieldKind::kHopByHop || kind == http::FieldKind::kServer ||
        (!connection.empty() && http::HasConnectionToken(connection, f.name)) ||
        (header_ops && policy::Overridden(f.name, route_ops, target_ops))) {
      continue;
    }
    http::AppendField(&h.fields, f.name, f.value);
  }
  if (head.status == 101) {
    if (const auto* u = head.Find("upgrade")) {
      http::AppendField(&h.fields, "upgrade", u->value);
    }
    h.upgrade = true;
  }
  policy::AppendOps(&h.fields, route_ops);
  policy::AppendOps(&h.fields, target_ops);
  if (!cors_origin_.empty()) {
    policy::AppendCorsResponseFields(route.cors(), cors_origin_, &h.fields);
  }
  http::AppendField(&h.fields, "server", context_.options().server_name);
  if (!head.chunked && head.content_length) {
    h.content_length = head.content_length;
  }
  response_started_ = true;
  response_status_ = head.status;
  CountResponse(head.status);
  if (head.status == 101) {
    SendResponseHead(h, false);
    StartTunnel(request);
    return;
  }
  if (!end_stream) {
    Transition(State::kResponding);
  }
  SendResponseHead(h, end_stream);
  if (end_stream) {
    Transition(State::kComplete);
  }
}

void Exchange::StartTunnel(UpstreamRequest& request) {
  Transition(State::kTunnel);
  encoder_->StartTunnel();
  if (request.stream() != nullptr) {
    request.stream()->StartTunnel();
  }
  route_timer_.Cancel();  // a tunnel lasts as long as both sides keep it
}

void Exchange::OnUpstreamBody(UpstreamRequest& request, std::string_view data, bool end_stream) {
  if (&request != try_.get()) {
    return;
  }
  Touch();
  resp_body_bytes_ += data.size();
  if (state_ == State::kTunnel && end_stream) {
    // The upstream closed the tunnel: so does the client's side.
    encoder_->EncodeBody(data, false);
    try_->Detach();
    ResetAndClose();
    return;
  }
  encoder_->EncodeBody(data, end_stream);
  if (end_stream) {
    Transition(State::kComplete);
  }
}

void Exchange::OnUpstreamTrailers(UpstreamRequest& request, std::string_view fields) {
  if (&request != try_.get()) {
    return;
  }
  Touch();
  if (grpc_) {
    grpc_status_ = GrpcStatusOf(fields);
  }
  encoder_->EncodeTrailers(fields);
  Transition(State::kComplete);
}

void Exchange::OnUpstreamWatermark(bool above) {
  if (state_ != State::kComplete && state_ != State::kReset) {
    encoder_->ReadDisable(above);
  }
}

void Exchange::OnDownstreamWatermark(bool above) {
  if (try_ != nullptr && try_->stream() != nullptr) {
    try_->stream()->ReadDisable(above);
  }
}

void Exchange::OnDownstreamReset(http::ResetReason reason) {
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;
  }
  if (reason == http::ResetReason::kProtocolError && !encoder_->response_started()) {
    // The request body was malformed before any response: answer 400 (and close).
    if (try_ != nullptr) {
      try_->Reset();
      RetireTry();
    }
    SendLocalReply(400, "invalid request body", "-");
    return;
  }
  if (response_status_ == 0) {
    AddFlag("DC");  // the client went away before its response
  }
  if (try_ != nullptr) {
    try_->Reset();
    RetireTry();
  }
  Transition(State::kReset);
  if (reason == http::ResetReason::kProtocolError) {
    encoder_->ResetStream();  // a response started: close without a second one
  }
}

void Exchange::SendResponseHead(const http::ResponseHeaders& head, bool end_stream) {
  encoder_->EncodeHead(head, end_stream);
  resp_head_bytes_ += encoder_->head_bytes_written();
}

void Exchange::SendLocalReply(int status, std::string_view body, const char* flag,
                              std::string_view extra_fields) {
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;
  }
  if (encoder_->response_started()) {
    ResetAndClose();
    return;
  }
  if (grpc_ && status != 200) {
    // To a gRPC client, as Envoy: HTTP 200 with the status mapped to a grpc-status.
    SendGrpcError(GrpcStatusForHttp(status), body, flag);
    return;
  }
  AddFlag(flag);
  response_status_ = status;
  CountResponse(status);
  http::ResponseHeaders& h = response_head_;
  h.status = status;
  h.reason = {};
  h.upgrade = false;
  h.fields.clear();
  h.fields += "content-type: text/plain\r\nserver: ";
  h.fields += context_.options().server_name;
  h.fields += "\r\n";
  h.fields.append(extra_fields.data(), extra_fields.size());
  h.content_length = body.size();
  bool head_only = head_method_ || body.empty();
  // Transition first: the codec may start the next request as the response completes.
  state_ = State::kComplete;
  SendResponseHead(h, head_only);
  if (!head_only) {
    encoder_->EncodeBody(body, true);
    resp_body_bytes_ += body.size();
  }
  Finish();
}

void Exchange::SendGrpcError(int grpc_status, std::string_view message, const char* flag) {
  if (state_ == State::kComplete || state_ == State::kReset) {
    return;
  }
  if (encoder_->response_started()) {
    ResetAndClose();
    return;
  }
  AddFlag(flag);
  response_status_ = 200;
  grpc_status_ = grpc_status;
  CountResponse(200);
  http::ResponseHeaders& h = response_head_;
  h.status = 200;
  h.reason = {};
  h.upgrade = false;
  h.fields.clear();
  h.fields += "content-type: application/grpc\r\ngrpc-status: ";
  h.fields += std::to_string(grpc_status);
  h.fields += "\r\ngrpc-message: ";
  AppendGrpcMessage(&h.fields, message);
  h.fields += "\r\nserver: ";
  h.fields += context_.options().server_name;
  h.fields += "\r\n";
  h.content_length = 0;
  // A trailers-only response: the head ends the stream.
  state_ = State::kComplete;
  SendResponseHead(h, true);
  Finish();
}

void Exchange::CountResponse(int status) {
  auto& s = context_.stats();
  s.downstream_rq_total.fetch_add(1, std::memory_order_relaxed);
  switch (status / 100) {
    case 1:
      s.rq_1xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 2:
      s.rq_2xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 3:
      s.rq_3xx.fetch_add(1, std::memory_order_relaxed);
      break;
    case 4:
      s.rq_4xx.fetch_add(1, std::memory_order_relaxed);
      break;
    default:
      s.rq_5xx.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

void Exchange::RecordOutcome(upstream::Outcome outcome, const upstream::Endpoint* endpoint) {
  if (cluster_ == nullptr || endpoint == nullptr || !cluster_->outlier_detection ||
      endpoint->health == nullptr) {
    return;
  }
  upstream::RecordOutcome(cluster_->proto->outlier_detection(), cluster_->state.get(),
                          endpoint->health.get(), cluster_->endpoints.size(), outcome,
                          upstream::SteadyNowMs());
}

void Exchange::AddFlag(const char* flag) {
  if (flag == nullptr || flag[0] == '\0' || (flag[0] == '-' && flag[1] == '\0')) {
    return;
  }
  std::string_view f(flag);
  size_t pos = 0;
  while (pos <= flags_.size()) {
    size_t comma = flags_.find(',', pos);
    std::string_view item = std::string_view(flags_).substr(
        pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item == f) {
      return;
    }
    if (comma == std::string::npos) {
      break;
    }
    pos = comma + 1;
  }
  if (!flags_.empty()) {
    flags_ += ',';
  }
  flags_ += f;
}

void Exchange::RecordTelemetry() {
  auto* tel = context_.telemetry();
  if (tel == nullptr || rq_head_bytes_ == 0) {
    return;
  }
  auto now = std::chrono::steady_clock::now();
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now - rq_start_).count();
  const upstream::Endpoint* ep =
      served_endpoint_ != nullptr ? served_endpoint_ : previous_endpoint_;
  std::string_view destination = ep != nullptr ? std::string_view(ep->telemetry_labels)
                                 : cluster_ != nullptr
                                     ? std::string_view(cluster_->telemetry_labels)
                                     : std::string_view(UnknownDestination());
  std::string_view flags = flags_.empty() ? std::string_view("-") : std::string_view(flags_);
  auto* owner = tel->owner;
  if (owner->metrics()) {
    tel->metrics.Record(destination, response_status_, flags, static_cast<double>(micros) / 1000.0,
                        rq_head_bytes_ + rq_body_bytes_, resp_head_bytes_ + resp_body_bytes_,
                        downstream_->inbound || (cluster_ != nullptr && cluster_->inbound), grpc_,
                        grpc_status_);
  }
  if (owner->access_log()) {
    telemetry::AccessLogEntry e;
    e.start = rq_start_wall_;
    e.method = tel_method_;
    e.path = tel_path_;
    e.protocol = encoder_->protocol();
    e.response_code = response_status_;
    e.response_flags = flags;
    e.bytes_received = rq_body_bytes_;
    e.bytes_sent = resp_body_bytes_;
    e.duration_ms = micros / 1000;
    e.upstream_service_time_ms = upstream_time_ms_;
    e.x_forwarded_for = tel_xff_;
    e.user_agent = tel_user_agent_;
    e.request_id = tel_request_id_;
    e.authority = tel_authority_;
    if (ep != nullptr) {
      e.upstream_host = ep->key;
    }
    if (cluster_ != nullptr) {
      e.upstream_cluster = cluster_->name;
    }
    if (owner->json()) {
      telemetry::AppendJsonLine(e, &tel->log_batch);
    } else {
      telemetry::AppendTextLine(e, &tel->log_batch);
    }
    ++tel->log_items;
  }
  if (tracing_ && trace_.sampled && owner->tracing()) {
    telemetry::SpanInfo s;
    std::string name = cluster_ != nullptr ? cluster_->span_name : tel_authority_ + "/*";
    s.name = name;
    s.service_name = owner->span_service_name();
    s.start_us =
        std::chrono::duration_cast<std::chrono::microseconds>(rq_start_wall_.time_since_epoch())
            .count();
    s.duration_us = micros;
    s.method = tel_method_;
    std::string url = "http://" + tel_authority_ + tel_path_;
    s.url = url;
    s.status = response_status_;
    s.response_flags = flags;
    if (cluster_ != nullptr) {
      s.upstream_cluster = cluster_->name;
    }
    if (ep != nullptr) {
      s.upstream_address = ep->key;
    }
    s.request_id = tel_request_id_;
    s.user_agent = tel_user_agent_;
    s.node_id = owner->options().node_id;
    s.request_size = rq_body_bytes_;
    s.response_size = resp_body_bytes_;
    if (tel->span_items > 0) {
      tel->span_batch.push_back(',');
    }
    telemetry::AppendZipkinSpan(trace_, s, &tel->span_batch);
    ++tel->span_items;
  }
}

}  // namespace skiff::proxy

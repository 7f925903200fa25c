// Exchange, part 2: one UpstreamRequest per try, and the tries: start, send, fail, retry,
// time out, mirror.
#include "proxy/http/headers.h"
#include "proxy/server/exchange.h"
#include "proxy/server/local_replies.h"
#include "proxy/upstream/cluster_state.h"

namespace skiff::proxy {

namespace {

// A stale pooled connection (closed before any byte of the request reached it) is
// replaced without counting as a retry, at most this many times per request.
constexpr uint32_t kMaxTransparentResends = 3;

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
  if (attempts_ > 1 && attempt_count_len_ > 0) {
    const std::string n = std::to_string(attempts_);
    upstream_head_.fields.replace(attempt_count_at_, attempt_count_len_, n);
    attempt_count_len_ = n.size();
  }
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
  PauseReading(kPauseUnsent, false);  // an upstream above its watermark keeps its own pause
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
    if (unsent_.size() > context_.options().max_buffer_bytes) {
      PauseReading(kPauseUnsent, true);
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
    case http::ResetReason::kRemoteReset:
      if (response_started_) {
        AddFlag("UR");
        ResetAndClose();
        return;
      }
      // The upstream reset a stream it had: it may have processed the request.
      TryFailed(policy::TryFailure::kReset, "UR", kRemoteResetBody, 503);
      return;
    case http::ResetReason::kConnectionTermination:
    case http::ResetReason::kLocalReset:
      break;
  }
  if (response_started_) {
    AddFlag("UC");    // as Envoy: the upstream connection ended mid-response
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

}  // namespace skiff::proxy

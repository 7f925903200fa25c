// Exchange, part 3: the response (head, body, trailers, tunnels, watermarks), local replies
// and gRPC errors, and what is counted, logged and traced when the exchange ends.
#include <charconv>

#include "common/strings.h"
#include "proxy/http/grpc.h"
#include "proxy/http/headers.h"
#include "proxy/http/http1_codec.h"
#include "proxy/policy/cors.h"
#include "proxy/policy/header_ops.h"
#include "proxy/server/exchange.h"
#include "proxy/server/local_replies.h"
#include "proxy/upstream/cluster_state.h"

namespace skiff::proxy {

// ---- Exchange: response ----------------------------------------------------------------

void Exchange::OnUpstreamHead(UpstreamRequest& request, const http::ResponseHead& head,
                              bool end_stream) {
  if (&request != try_.get()) {
    return;
  }
  Touch();
  RecordOutcome(upstream::OutcomeOfStatus(head.status), &request.endpoint());
  const http::Header* upgrade = head.status == 101 ? head.Find("upgrade") : nullptr;
  if (head.status == 101 && (!client_upgrade_ || upgrade == nullptr ||
                             !http::EqualsIgnoreCase(Trim(upgrade->value), "websocket"))) {
    // An upgrade the client did not ask for cannot be relayed; nor a 101 that does not
    // switch to the protocol asked for (it must name it: RFC 9110 15.2.2, 7.8).
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
    if (f.name.size() == 29 && http::TokenEqualsLower(f.name, "x-envoy-upstream-service-time")) {
      continue;  // this hop's own replaces it
    }
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
  policy::AppendOps(&h.fields, route_ops, "server");
  policy::AppendOps(&h.fields, target_ops, "server");
  if (!cors_origin_.empty()) {
    policy::AppendCorsResponseFields(route.cors(), cors_origin_, &h.fields);
  }
  http::AppendField(&h.fields, "server", context_.options().server_name);
  if (!set_cookie_.empty()) {
    http::AppendField(&h.fields, "set-cookie", set_cookie_);
  }
  {
    // Envoy's x-envoy-upstream-service-time: the try's time to the response head, in ms.
    char ms[24];
    auto r = std::to_chars(ms, ms + sizeof ms, upstream_time_ms_);
    http::AppendField(&h.fields, "x-envoy-upstream-service-time",
                      std::string_view(ms, static_cast<size_t>(r.ptr - ms)));
  }
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
    grpc_status_ = http::GrpcStatusOf(fields);
  }
  encoder_->EncodeTrailers(fields);
  Transition(State::kComplete);
}

void Exchange::OnUpstreamWatermark(bool above) {
  if (state_ != State::kComplete && state_ != State::kReset) {
    PauseReading(kPauseUpstream, above);
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
    AddFlag(flag);  // (UT, SI, ...: why the response broke off)
    ResetAndClose();
    return;
  }
  if (grpc_ && status != 200) {
    // To a gRPC client, as Envoy: HTTP 200 with the status mapped to a grpc-status.
    SendGrpcError(http::GrpcStatusForHttp(status), body, flag);
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
    AddFlag(flag);  // (UT, SI, ...: why the response broke off)
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
  if (!message.empty()) {  // as Envoy: no grpc-message without a text
    h.fields += "\r\ngrpc-message: ";
    http::AppendGrpcMessage(&h.fields, message);
  }
  h.fields += "\r\nserver: ";
  h.fields += context_.options().server_name;
  h.fields += "\r\n";
  // A trailers-only response over HTTP/2 has no content-length (Envoy removes it); HTTP/1.1
  // needs one to end the message.
  if (encoder_->protocol() == "HTTP/2") {
    h.content_length.reset();
  } else {
    h.content_length = 0;
  }
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
                                     : std::string_view(telemetry::UnknownDestinationLabels());
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

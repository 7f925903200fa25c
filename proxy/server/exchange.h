#pragma once
// One request and its response (Envoy's ActiveStream with the router filter). The codec
// delivers the request; the exchange runs its phases in order
//
//   target -> route -> local replies (CORS preflight, direct response, redirect)
//     -> cluster pick -> upstream request head -> fault (delay, abort) -> circuit breaker
//     -> UpstreamRequest (one try; RetryState decides on another) -> response phases
//     -> telemetry
//
// and moves through the states below with one transition function. Time comes from the
// worker's dispatcher, so unit tests drive every timeout on a fake one.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/http/codec.h"
#include "proxy/net/buffer.h"
#include "proxy/net/tls.h"
#include "proxy/policy/retry_state.h"
#include "proxy/server/worker_context.h"
#include "proxy/telemetry/tracing.h"
#include "proxy/upstream/connection_pool.h"

namespace skiff::proxy {

// Where a request came from.
struct DownstreamInfo {
  std::string peer;              // the client's address
  std::string listener_address;  // as configured
  uint32_t listener_bind_port = 0;
  uint32_t listener_port = 0;  // as configured (route matching)
  // A captured connection: its original destination, the route table of that destination
  // (null: the listener's), and whether it was inbound (reported by the destination).
  std::string original_address;
  uint16_t original_port = 0;
  const router::RouteTable* route_table = nullptr;
  bool inbound = false;
  // Captured, to an address no service has, on a host-routed port: a Host no virtual host
  // has is served by the listener's fallback route table.
  bool host_routed = false;
  // Keeps the routes alive while the connection lasts (a config swap may happen).
  std::shared_ptr<const Config> config;
  // TLS: the request's scheme is https; the server name asked for; the client's verified
  // certificate (mutual TLS), forwarded as x-forwarded-client-cert.
  bool secure = false;
  std::string sni;
  std::optional<net::PeerCertificate> peer_certificate;
  // The socket is in the event loop already (handed over by the TLS inspector or the
  // capture sniffer): its registration is re-pointed at the connection, not added again.
  bool registered = false;
};

class Exchange;

// One try of a request on one upstream connection from the worker's pool.
class UpstreamRequest final : public upstream::PoolCallbacks, public http::ResponseDecoder {
 public:
  UpstreamRequest(Exchange& exchange, const upstream::Endpoint& endpoint);
  ~UpstreamRequest() override;  // abandons the stream (or the wait for one)
  UpstreamRequest(const UpstreamRequest&) = delete;
  UpstreamRequest& operator=(const UpstreamRequest&) = delete;

  // Asks the pool for a stream; the exchange hears back through OnTryReady/OnTryFailed.
  void Start(upstream::ConnectionPool& pool, const upstream::Cluster& cluster, bool http2);
  [[nodiscard]] http::ClientStream* stream() const { return stream_; }
  [[nodiscard]] const upstream::Endpoint& endpoint() const { return endpoint_; }
  // Forgets the stream without resetting it: the response completed, so the connection
  // goes back to its pool by itself.
  void Detach() { stream_ = nullptr; }
  // Abandons the stream now: its connection closes.
  void Reset();
  // What the stream had done when it failed: bytes of the request written to the socket,
  // and whether it was a pooled (reused) connection.
  [[nodiscard]] uint64_t bytes_sent() const { return bytes_sent_; }
  [[nodiscard]] bool reused() const { return reused_; }

  // PoolCallbacks
  void OnPoolReady(http::ClientStream& stream) override;
  void OnPoolFailure(http::ResetReason reason) override;
  // ResponseDecoder
  void DecodeResponseHead(const http::ResponseHead& head, bool end_stream) override;
  void DecodeResponseBody(std::string_view data, bool end_stream) override;
  void DecodeResponseTrailers(std::string_view fields) override;
  void OnUpstreamReset(http::ResetReason reason) override;
  void OnUpstreamWatermark(bool above) override;

 private:
  Exchange& exchange_;
  const upstream::Endpoint& endpoint_;
  upstream::ConnectionPool* pool_ = nullptr;
  http::ClientStream* stream_ = nullptr;
  bool waiting_ = false;  // in the pool's pending queue
  uint64_t bytes_sent_ = 0;
  bool reused_ = false;
};

class Exchange final : public http::RequestDecoder {
 public:
  enum class State : uint8_t {
    kRouting,     // the head arrived; the phases run
    kFaultDelay,  // an injected delay before the router
    kUpstream,    // a try is in flight (waiting for a connection, sending, or awaiting
                  // the response head)
    kBackoff,     // between two tries
    kResponding,  // the response head went to the client; its body streams
    kTunnel,      // after an upgrade (101): bytes pass both ways
    kComplete,    // the response is complete (proxied or a local reply)
    kReset,       // given up: client gone, protocol error, or a timeout mid-response
  };

  Exchange(WorkerContext& context, const DownstreamInfo& downstream,
           http::ResponseEncoder& encoder);
  ~Exchange() override;
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // Makes a finished exchange ready for the next request of its connection (or, from the
  // worker's ExchangePool, of another one), keeping the memory of its strings and buffers.
  void Recycle(const DownstreamInfo& downstream, http::ResponseEncoder& encoder);
  // Before it waits in a pool: frees its large buffers (request bytes kept for retries)
  // and stops the stream idle timer (which an ended exchange leaves running).
  void Park();
  // Ended, with no try and no timer but the idle one left: safe to Park() and keep for
  // another connection.
  [[nodiscard]] bool Reusable() const {
    return (state_ == State::kComplete || state_ == State::kReset) && try_ == nullptr &&
           !route_timer_.armed() && !try_timer_.armed() && !wait_timer_.armed();
  }

  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] const std::string& response_flags() const { return flags_; }
  [[nodiscard]] int response_status() const { return response_status_; }
  [[nodiscard]] uint32_t attempts() const { return attempts_; }

  // RequestDecoder
  void DecodeHead(const http::RequestHead& head, size_t head_bytes, bool end_stream) override;
  void DecodeBody(std::string_view data, bool end_stream) override;
  void DecodeTrailers(std::string_view fields) override;
  void OnDownstreamReset(http::ResetReason reason) override;
  void OnDownstreamWatermark(bool above) override;

  // From the current UpstreamRequest.
  void OnTryReady(UpstreamRequest& request);
  void OnTryFailed(UpstreamRequest& request, http::ResetReason reason);
  void OnUpstreamHead(UpstreamRequest& request, const http::ResponseHead& head, bool end_stream);
  void OnUpstreamBody(UpstreamRequest& request, std::string_view data, bool end_stream);
  void OnUpstreamTrailers(UpstreamRequest& request, std::string_view fields);
  void OnUpstreamWatermark(bool above);

 private:
  // The one place the state changes; entering kComplete or kReset ends the exchange.
  void Transition(State next);
  // The single abort: ends the try, resets the client's stream (for HTTP/1 the
  // connection closes, truncating a response that started).
  void ResetAndClose();
  void Finish();

  // Phases of the request head, in order; each returns false when it ended the exchange
  // (a local reply) or suspended it.
  bool PhaseTarget(const http::RequestHead& req);
  bool PhaseRoute(const http::RequestHead& req);
  bool PhaseLocalReply(const http::RequestHead& req);
  bool PhasePickCluster(const http::RequestHead& req);
  void PhaseUpstreamHead(const http::RequestHead& req);
  void PhaseFault();
  void AfterFaultDelay();

  void StartTry();
  void SendRequest(UpstreamRequest& request);
  void RetireTry();
  void PauseReading(uint8_t reason, bool pause);
  bool ScheduleRetry(policy::RetryDecision decision);
  void TryFailed(policy::TryFailure failure, const char* flag, std::string_view body, int status);
  void OnRouteTimeout();
  void OnPerTryTimeout();
  void OnStreamIdleTimeout();
  void Touch() { last_activity_ = context_.dispatcher().now(); }
  void RequestComplete();
  void LaunchMirrors();
  void StartTunnel(UpstreamRequest& request);
  void SendLocalReply(int status, std::string_view body, const char* flag,
                      std::string_view extra_fields = {});
  void SendResponseHead(const http::ResponseHeaders& head, bool end_stream);
  void RecordOutcome(upstream::Outcome outcome, const upstream::Endpoint* endpoint);
  void AddFlag(const char* flag);
  // A trailers-only gRPC error: HTTP 200, grpc-status and grpc-message.
  void SendGrpcError(int grpc_status, std::string_view message, const char* flag);
  void CountResponse(int status);
  void RecordTelemetry();
  void ReleaseClusterHold();

  WorkerContext& context_;
  const DownstreamInfo* downstream_;  // of the connection it serves now
  http::ResponseEncoder* encoder_;
  State state_ = State::kRouting;
  std::shared_ptr<const Config> config_;  // a request finishes on the config it started with

  // The request.
  bool head_method_ = false;
  bool idempotent_ = false;
  bool request_complete_ = false;
  bool request_has_body_ = false;
  bool client_upgrade_ = false;  // asked for a websocket upgrade
  bool expect_continue_ = false;
  // Views into the request head (or normalized_path_), valid during DecodeHead only.
  std::string_view path_;       // normalized, without the query
  std::string_view query_;      // "?..." or empty
  std::string_view authority_;  // Host, or the absolute-form target's authority
  std::string normalized_path_;
  bool absolute_form_ = false;
  std::string hash_key_;               // consistent-hash key of the request
  std::string set_cookie_;             // a generated hash cookie for the response, or empty
  bool request_id_generated_ = false;  // tel_request_id_ was made here, before routing
  // Where the value of x-envoy-attempt-count is in upstream_head_.fields, and its length.
  size_t attempt_count_at_ = 0;
  size_t attempt_count_len_ = 0;
  std::string cors_origin_;

  // Routing.
  const ListenerConfig* listener_ = nullptr;
  const router::Route* route_ = nullptr;
  const v1::WeightedCluster* target_ = nullptr;
  const upstream::Cluster* cluster_ = nullptr;
  bool upstream_http2_ = false;  // requests to cluster_ go over HTTP/2
  http::RequestHeaders upstream_head_;
  http::ResponseHeaders response_head_;
  std::vector<const upstream::Cluster*> mirrors_;  // chosen; sent once the request is complete
  int fault_abort_status_ = 0;
  int fault_grpc_status_ = -1;  // abort.grpcStatus drawn
  // gRPC (content-type application/grpc...): local replies are gRPC errors, telemetry
  // reports request_protocol="grpc" and the grpc-status of the response.
  bool grpc_ = false;
  int grpc_status_ = -1;
  std::optional<std::chrono::milliseconds> grpc_timeout_;  // the client's grpc-timeout
  bool counted_rq_active_ = false;

  // Request body: bytes not yet handed to a try, and every byte so far for a retry or a
  // mirror (bounded; past the bound neither is possible).
  net::Buffer unsent_;
  net::Buffer replay_;
  std::string request_trailers_;
  bool replay_enabled_ = false;
  bool replay_overflow_ = false;
  // Why reading the client is paused: the body waiting for a stream (unsent_) is full, or
  // the try's upstream is above its watermark. Reading resumes when no reason is left.
  static constexpr uint8_t kPauseUnsent = 1;
  static constexpr uint8_t kPauseUpstream = 2;
  uint8_t read_pauses_ = 0;

  // Tries.
  std::optional<policy::RetryState> retry_;
  std::unique_ptr<UpstreamRequest> try_;
  const upstream::Endpoint* previous_endpoint_ = nullptr;
  const upstream::Endpoint* served_endpoint_ = nullptr;
  int* active_requests_ = nullptr;        // the endpoint's in-flight counter (least request)
  upstream::Endpoint original_endpoint_;  // for original-destination clusters
  uint32_t attempts_ = 0;
  uint32_t transparent_resends_ = 0;
  bool response_started_ = false;

  // Timers.
  net::Timer route_timer_;  // the route's timeout: all tries together
  net::Timer try_timer_;    // per-try timeout
  net::Timer wait_timer_;   // fault delay, retry back-off
  net::Timer idle_timer_;   // stream idle timeout
  net::Clock::time_point last_activity_;

  // Telemetry.
  int response_status_ = 0;
  std::string flags_;  // Envoy response flags, comma-separated; empty = "-"
  std::chrono::steady_clock::time_point rq_start_;
  std::chrono::system_clock::time_point rq_start_wall_;
  std::chrono::steady_clock::time_point try_sent_;
  int64_t upstream_time_ms_ = -1;
  uint64_t rq_head_bytes_ = 0;
  uint64_t rq_body_bytes_ = 0;
  uint64_t resp_head_bytes_ = 0;
  uint64_t resp_body_bytes_ = 0;
  bool keep_strings_ = false;  // the access log or a span needs the request's strings
  bool recorded_ = false;
  std::string tel_method_, tel_path_, tel_authority_, tel_user_agent_, tel_xff_, tel_request_id_;
  bool tracing_ = false;
  telemetry::TraceContext trace_;
};

// Finished exchanges a worker keeps for the streams of any of its connections, so that
// HTTP/2 bursts (a hundred streams ending together, then a hundred starting) reuse them
// instead of allocating each exchange and growing its strings again. Bounded: at most
// `max` wait, with their large buffers freed.
class ExchangePool {
 public:
  explicit ExchangePool(size_t max) : max_(max) {}
  // A finished exchange to Recycle(), or null.
  std::unique_ptr<Exchange> Take();
  // Keeps `exchange` (finished, none of its calls on the stack), or frees it when full.
  void Give(std::unique_ptr<Exchange> exchange);
  [[nodiscard]] size_t size() const { return spare_.size(); }

 private:
  std::vector<std::unique_ptr<Exchange>> spare_;
  size_t max_;
};

}  // namespace skiff::proxy

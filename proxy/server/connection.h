#pragma once
// One downstream HTTP/1.1 connection and the upstream connection serving its current
// request. Bodies stream both ways through bounded buffers; nothing buffers a whole body.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/http/chunked.h"
#include "proxy/http/parser.h"
#include "proxy/net/event_loop.h"
#include "proxy/policy/retry_policy.h"
#include "proxy/telemetry/tracing.h"

namespace skiff::proxy {

class Worker;
class ServerConnection;

// A byte buffer with a read offset. Reads go straight into spare capacity (no zero-fill);
// consumed bytes are dropped lazily by moving the rest to the front.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  [[nodiscard]] std::string_view view() const { return {data_.get() + start_, end_ - start_}; }
  [[nodiscard]] size_t size() const { return end_ - start_; }
  [[nodiscard]] bool empty() const { return end_ == start_; }
  void Append(std::string_view s);
  void Consume(size_t n);
  void Clear() { start_ = end_ = 0; }
  // Reads once from fd into the buffer; returns bytes read, 0 on EOF, -1 on EAGAIN, -2 on
  // error. `*filled` is set when the read used all the space offered.
  ssize_t ReadFrom(int fd, bool* filled);
  // Writes as much as possible; returns false on a socket error.
  bool WriteTo(int fd);

 private:
  void Reserve(size_t extra);
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0;
  size_t start_ = 0;
  size_t end_ = 0;
};

// A connection to one upstream endpoint; idle in the worker's pool or serving a request.
class UpstreamConnection : public net::IoHandler {
 public:
  UpstreamConnection(Worker* worker, int fd, std::string key,
                     std::shared_ptr<upstream::ClusterState> cluster);
  ~UpstreamConnection() override;
  void OnEvents(uint32_t events) override;
  void SetOwner(ServerConnection* owner) { owner_ = owner; }
  void UpdateInterest(bool want_read, bool want_write);
  // Gives back its slot in the cluster's connection limit (once).
  void Uncount();

  Worker* worker_;
  int fd_;
  std::string key_;  // the pool key: "address:port"
  std::shared_ptr<upstream::ClusterState> cluster_;
  bool counted_ = true;
  uint32_t requests_ = 0;              // requests started on this connection
  uint32_t max_requests_ = 0;          // then it is not reused; 0 = no limit
  ServerConnection* owner_ = nullptr;  // nullptr while idle in the pool
  bool connected_ = false;
  bool reused_ = false;
  bool dead_ = false;  // closed; deleted after the current loop turn
  Buffer in_;
  Buffer out_;
  net::Timer timer_;  // connect timeout, or idle timeout in the pool
  uint32_t interest_ = 0;
};

class ServerConnection : public net::IoHandler {
 public:
  ServerConnection(Worker* worker, int fd, const ListenerConfig& listener, std::string peer);
  ~ServerConnection() override;
  void OnEvents(uint32_t events) override;
  void OnUpstreamEvents(uint32_t events);
  void OnUpstreamConnectTimeout();
  // A connection slot of the cluster this request waits for may be free: try again.
  void OnPoolReady();

 private:
  enum class Stage { kReadingHead, kProxying, kClosing };

  void OnReadable();
  void ProcessInput();
  void OnRequestHead(size_t head_bytes);
  void StartUpstream(const upstream::Cluster& cluster, const v1::Route& route,
                     const v1::WeightedCluster& target, const router::Route& compiled,
                     size_t head_bytes);
  void BuildUpstreamHead(const v1::Route& route, const v1::WeightedCluster& target,
                         const router::Route& compiled);
  void AfterFaultDelay();
  void StartAttempt();
  void AcquireConnection();
  const upstream::Endpoint* PickEndpoint();
  void SendToUpstream(bool replay);
  void AttemptFailed(policy::TryFailure failure, const char* flag, std::string_view body);
  bool TryRetry(bool retriable);
  void OnRouteTimeout();
  void EndExchangeState();
  void MarkRequestDone();
  void LaunchMirrors();
  void RecordOutcome(upstream::Outcome outcome);
  void AddFlag(const char* flag);
  void RecordTelemetry();
  bool ConnectUpstream(const upstream::Endpoint& ep);
  void ForwardRequestBody();
  void OnUpstreamReadable();
  void ForwardResponseBody();
  void FinishExchange();
  void UpstreamFailed(const char* flag, std::string_view body);
  void SendLocalReply(int status, std::string_view body, const char* flag, bool close = false,
                      std::string_view extra_headers = {});
  void Flush();
  void UpdateInterest();
  void ReleaseUpstream(bool reusable);
  // Ends the current try's hold on its upstream connection and endpoint (not reusable).
  void DropUpstream();
  void CloseSoon();
  void ArmIdle();
  void EndRequestCount();
  void CountResponse(int status);

  Worker* worker_;
  int fd_;
  std::string listener_address_;
  uint32_t listener_bind_port_;
  uint32_t listener_port_;
  std::string peer_;
  Stage stage_ = Stage::kReadingHead;
  Buffer in_;
  Buffer out_;
  http::RequestParser parser_;
  net::Timer timer_;
  uint32_t interest_ = 0;
  bool close_after_response_ = false;
  bool closed_ = false;
  bool draining_ = false;
  bool header_timer_started_ = false;

  // The current exchange.
  std::shared_ptr<const Config> config_;
  UpstreamConnection* upstream_ = nullptr;
  const upstream::Endpoint* endpoint_ = nullptr;
  int* active_requests_ = nullptr;     // the endpoint's counter, for least-request balancing
  std::string upstream_request_head_;  // kept to resend on a fresh connection
  bool request_has_body_ = false;
  bool request_done_ = false;  // whole request sent to (or queued for) the upstream
  uint64_t request_remaining_ = 0;
  bool request_chunked_ = false;
  http::ChunkedDecoder request_chunks_;
  http::ResponseParser response_parser_;
  bool response_started_ = false;
  bool response_head_sent_ = false;
  http::BodyFraming response_framing_ = http::BodyFraming::kNone;
  uint64_t response_remaining_ = 0;
  http::ChunkedDecoder response_chunks_;
  bool dechunk_for_client_ = false;  // HTTP/1.0 client and a chunked upstream response
  bool upstream_keep_alive_ = false;
  std::string method_;
  bool client_http10_ = false;
  const v1::Route* route_proto_ = nullptr;
  const v1::WeightedCluster* target_proto_ = nullptr;
  int response_status_ = 0;

  // Absolute-form request targets ("GET http://host/path"): the origin-form path and the
  // authority that replaces Host. Views into in_, valid until the head is consumed.
  std::string_view target_;
  std::string_view authority_;
  bool absolute_form_ = false;
  std::string cors_origin_;  // an allowed Origin: CORS headers go on the response
  std::string target_storage_;
  int fault_abort_status_ = 0;  // an abort fault drawn for this request, sent after any delay

  // Resilience state of the current exchange.
  const router::Route* compiled_route_ = nullptr;
  const upstream::Cluster* cluster_ = nullptr;
  bool counted_rq_active_ = false;  // in cluster_->state->rq_active
  bool pending_ = false;            // waiting in the worker's queue for a connection slot
  bool retry_active_ = false;       // in cluster_->state->rq_retry_active
  uint32_t attempts_ = 0;           // tries started
  uint32_t retries_left_ = 0;
  const upstream::Endpoint* previous_endpoint_ = nullptr;
  std::string flags_;  // Envoy response flags, comma-separated; empty = "-"
  Buffer replay_;      // the request body forwarded so far, to replay on a retry or mirror
  bool replay_enabled_ = false;
  bool replay_overflow_ = false;  // the body outgrew the buffer: no retry, no mirror
  size_t host_value_pos_ = 0;     // where the Host value sits in upstream_request_head_
  size_t host_value_len_ = 0;
  std::vector<const upstream::Cluster*> mirrors_;  // chosen for this request, not yet sent
  net::Timer route_timer_;                         // the route's timeout: all tries together
  net::Timer try_timer_;                           // per-try timeout
  net::Timer wait_timer_;  // fault delay, retry back-off, pending-queue poll

  // Telemetry of the current exchange (metrics, access log, span).
  bool exchange_active_ = false;
  std::chrono::steady_clock::time_point rq_start_;
  std::chrono::system_clock::time_point rq_start_wall_;
  std::chrono::steady_clock::time_point try_sent_;  // when the current try was sent
  int64_t upstream_time_ms_ = -1;                   // try sent -> response head
  uint64_t rq_head_bytes_ = 0;
  uint64_t rq_body_bytes_ = 0;
  uint64_t resp_head_bytes_ = 0;
  uint64_t resp_body_bytes_ = 0;
  const upstream::Endpoint* served_endpoint_ = nullptr;  // the endpoint that answered
  bool keep_strings_ = false;  // the access log or a span needs the request's strings
  std::string tel_method_, tel_path_, tel_authority_, tel_user_agent_, tel_xff_, tel_request_id_;
  bool tracing_ = false;
  telemetry::TraceContext trace_;
};

}  // namespace skiff::proxy

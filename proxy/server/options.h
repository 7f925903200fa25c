#pragma once
// The proxy's settings for its workers, and the counters they keep.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "proxy/http/http2_codec.h"
#include "proxy/http/path.h"

namespace skiff::telemetry {
class Telemetry;
}

namespace skiff::proxy {

struct ProxyOptions {
  std::string server_name = "skiff";
  std::chrono::milliseconds request_header_timeout{10000};
  std::chrono::milliseconds idle_timeout{300000};
  // Envoy's stream_idle_timeout: no byte in either direction for this long ends the
  // exchange (408 before a response started, a reset after).
  std::chrono::milliseconds stream_idle_timeout{300000};
  std::chrono::milliseconds upstream_connect_timeout{10000};
  std::chrono::milliseconds upstream_idle_timeout{60000};
  size_t max_buffer_bytes = 256 * 1024;  // per direction, before back-pressure
  http::Http2Options http2;              // downstream HTTP/2 connections
  // Used when the snapshot does not set one (Istio's meshConfig.pathNormalization).
  http::PathNormalization path_normalization = http::PathNormalization::kBase;
  telemetry::Telemetry* telemetry = nullptr;  // metrics, access log, tracing; null = off
};

// Counters a worker updates on its own thread and the admin thread reads (relaxed).
struct WorkerStats {
  std::atomic<uint64_t> downstream_cx_total{0};
  std::atomic<uint64_t> downstream_cx_active{0};
  std::atomic<uint64_t> downstream_rq_total{0};
  std::atomic<uint64_t> rq_1xx{0}, rq_2xx{0}, rq_3xx{0}, rq_4xx{0}, rq_5xx{0};
  std::atomic<uint64_t> downstream_rq_idle_timeout{0};  // stream idle timeouts
  std::atomic<uint64_t> no_route{0}, no_healthy_upstream{0};
  std::atomic<uint64_t> fault_delays_injected{0}, fault_aborts_injected{0};
  std::atomic<uint64_t> mirror_requests_total{0};         // copies sent
  std::atomic<uint64_t> mirror_requests_skipped{0};       // body too large, or too many in flight
  std::atomic<uint64_t> mirror_requests_failed{0};        // connect or send failed
  std::atomic<uint64_t> listener_accept_fd_exhausted{0};  // accept() hit EMFILE / ENFILE
  // Transparent capture.
  std::atomic<uint64_t> tcp_proxy_cx_total{0};  // connections proxied as TCP
  std::atomic<uint64_t> tcp_proxy_cx_active{0};
  std::atomic<uint64_t> tcp_proxy_connect_fail{0};
  std::atomic<uint64_t> capture_passthrough_total{0};  // to destinations outside the mesh
  std::atomic<uint64_t> capture_refused_total{0};      // REGISTRY_ONLY: refused
  std::atomic<uint64_t> capture_sniffed_http{0};       // detected as HTTP/1
  std::atomic<uint64_t> capture_sniffed_tcp{0};        // detected as something else
  // TLS.
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_handshake_error{0};  // not TLS, or a failed handshake
  std::atomic<uint64_t> tls_handshake_timeout{0};
  std::atomic<uint64_t> tls_no_route{0};  // PASSTHROUGH: no route for the SNI
  // HTTP/2.
  std::atomic<uint64_t> downstream_cx_http2_total{0};
  http::Http2Stats http2;
};

}  // namespace skiff::proxy

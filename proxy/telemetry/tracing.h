#pragma once
// Distributed tracing as Istio's proxies do it: the trace context of a request arrives in
// B3 (multi-header or the single `b3` header) or W3C `traceparent`/`tracestate`; the proxy
// makes a span for its hop (128-bit trace ids, a new 64-bit span id, the caller's span as
// parent), propagates the context upstream in both formats, keeps an incoming sampling
// decision or samples at --trace-sampling percent, and reports sampled spans as Zipkin v2
// JSON (which Jaeger also accepts) from a background thread.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace skiff::telemetry {

struct TraceContext {
  uint64_t trace_hi = 0;  // 0 for a 64-bit trace id
  uint64_t trace_lo = 0;
  uint64_t span_id = 0;    // this hop's span
  uint64_t parent_id = 0;  // the caller's span, 0 = root
  bool sampled = false;
  bool debug = false;
  std::string tracestate;  // passed through
};

using HeaderLookup = std::function<std::optional<std::string_view>(std::string_view)>;

// Reads the incoming context (W3C first, then B3 single, then B3 multi; malformed headers
// are ignored) and starts this hop's span. `random` draws uniform 64-bit values.
TraceContext StartSpan(const HeaderLookup& header, double sampling_percent,
                       const std::function<uint64_t()>& random);

// Headers the proxy replaces with its own when it propagates a context.
bool IsTraceHeader(std::string_view lower_or_mixed_case_name);

// Appends x-b3-traceid, x-b3-spanid, x-b3-parentspanid, x-b3-sampled (x-b3-flags when
// debug), traceparent and tracestate header lines ("name: value\r\n").
void AppendPropagationHeaders(const TraceContext& ctx, std::string* head);

std::string TraceIdHex(const TraceContext& ctx);  // 32 hex digits (16 for 64-bit ids)
std::string SpanIdHex(uint64_t id);               // 16 hex digits

struct SpanInfo {
  std::string_view name;          // e.g. "catalog.coolstore.svc.cluster.local:8080/*"
  std::string_view service_name;  // localEndpoint.serviceName, e.g. "apigateway.coolstore"
  int64_t start_us = 0;           // epoch microseconds
  int64_t duration_us = 0;
  std::string_view method;
  std::string_view url;
  int status = 0;
  std::string_view response_flags;
  std::string_view upstream_cluster;
  std::string_view upstream_address;
  std::string_view request_id;
  std::string_view user_agent;
  std::string_view node_id;
  uint64_t request_size = 0;
  uint64_t response_size = 0;
};

// One Zipkin v2 span as a JSON object (no trailing separator).
void AppendZipkinSpan(const TraceContext& ctx, const SpanInfo& span, std::string* out);

// A sink for Offload: POSTs the spans (each batch is comma-separated span objects) as one
// JSON array to http://ADDRESS/api/v2/spans. `address` is host:port.
std::function<bool(std::vector<std::string>&)> ZipkinSink(const std::string& address);

}  // namespace skiff::telemetry

#pragma once
// Access-log lines in Envoy's default text format or as JSON (Istio's key names). Built on
// the worker into its batch, written out by an Offload thread.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace skiff::telemetry {

struct AccessLogEntry {
  std::chrono::system_clock::time_point start;
  std::string_view method;
  std::string_view path;  // as received (origin form)
  std::string_view protocol = "HTTP/1.1";
  int response_code = 0;
  std::string_view response_flags;  // empty = "-"
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  int64_t duration_ms = 0;
  int64_t upstream_service_time_ms = -1;  // -1 = no upstream answer
  std::string_view x_forwarded_for;
  std::string_view user_agent;
  std::string_view request_id;
  std::string_view authority;
  std::string_view upstream_host;  // "address:port", empty = "-"
  std::string_view upstream_cluster;
};

// [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
// %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
void AppendTextLine(const AccessLogEntry& e, std::string* out);
void AppendJsonLine(const AccessLogEntry& e, std::string* out);
// RFC 3339 UTC with milliseconds: 2026-11-27T13:05:00.310Z
void AppendTimestamp(std::chrono::system_clock::time_point t, std::string* out);
// JSON string body (without the quotes).
void AppendJsonEscaped(std::string_view s, std::string* out);

// A sink for Offload: appends to a file ("stdout" = standard output). Returns an error text
// in `error` (and a null function) when the file cannot be opened.
std::function<bool(std::vector<std::string>&)> FileSink(const std::string& path,
                                                        std::string* error);

}  // namespace skiff::telemetry

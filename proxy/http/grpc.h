#pragma once
// gRPC over HTTP/2 as a proxy sees it: the grpc-timeout header, grpc-status in trailers,
// grpc-message encoding, and Envoy's HTTP-status-to-gRPC-status mapping for local replies.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace skiff::http {

// grpc-timeout: 1 to 8 digits and a unit (H M S m u n), rounded up to milliseconds.
// nullopt when malformed.
std::optional<std::chrono::milliseconds> ParseGrpcTimeout(std::string_view v);

// Envoy's mapping of an HTTP status to a gRPC status for local replies.
int GrpcStatusForHttp(int status);

// Appends `message` as grpc-message: percent-encoded outside printable ASCII, and '%' itself.
void AppendGrpcMessage(std::string* out, std::string_view message);

// The grpc-status in trailer fields ("name: value\r\n" lines), or -1.
int GrpcStatusOf(std::string_view fields);

}  // namespace skiff::http

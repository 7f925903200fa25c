#pragma once
// Retry decisions with Envoy's semantics, compiled once per route from the snapshot's
// RetryPolicy. Pure: no I/O, no clock, randomness passed in; the connection code asks it
// whether a failed or answered try may be retried and how long to back off.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "skiff/v1/config.pb.h"

namespace skiff::policy {

// Envoy's retry_on conditions (x-envoy-retry-on / grpc-retry-on).
enum RetryOn : uint32_t {
  kRetry5xx = 1u << 0,                    // any 5xx, and no response at all
  kRetryGatewayError = 1u << 1,           // 502/503/504, and no response at all
  kRetryReset = 1u << 2,                  // disconnect / reset / timeout before a response
  kRetryConnectFailure = 1u << 3,         // the connection could not be made
  kRetryRefusedStream = 1u << 4,          // HTTP/2 REFUSED_STREAM: never on HTTP/1.1
  kRetryRetriable4xx = 1u << 5,           // 409
  kRetryRetriableStatusCodes = 1u << 6,   // the listed codes
  kRetryGrpcCancelled = 1u << 7,          // grpc-status 1
  kRetryGrpcDeadlineExceeded = 1u << 8,   // 4
  kRetryGrpcResourceExhausted = 1u << 9,  // 8
  kRetryGrpcUnavailable = 1u << 10,       // 14
  kRetryGrpcInternal = 1u << 11,          // 13
  kRetryResetBeforeRequest = 1u << 12,    // a reset before any request byte was sent
};

// Why a try ended without a usable response.
enum class TryFailure {
  kConnectFailure,      // connect refused / failed / timed out
  kResetBeforeRequest,  // closed or reset before any byte of the request was sent
  kReset,               // closed or reset after (some of) the request was sent
  kPerTryTimeout,       // the per-try timeout fired
};

class RetryPolicy {
 public:
  RetryPolicy() = default;
  // Unknown condition names are ignored, as Envoy does; `unknown` (if given) collects them.
  explicit RetryPolicy(const v1::RetryPolicy& proto, std::vector<std::string>* unknown = nullptr);

  [[nodiscard]] uint32_t num_retries() const { return num_retries_; }
  [[nodiscard]] uint32_t conditions() const { return on_; }
  [[nodiscard]] std::optional<std::chrono::milliseconds> per_try_timeout() const {
    return per_try_timeout_;
  }
  [[nodiscard]] bool enabled() const { return num_retries_ > 0 && on_ != 0; }

  // Would a response with this status (and grpc-status header, if any) be retried?
  [[nodiscard]] bool RetriableResponse(int status, std::optional<int> grpc_status) const;
  // Would a try that failed this way be retried? A request that may have reached the
  // upstream before its connection closed (kReset) is retried only on "reset", "5xx" or
  // "gateway-error" - and, for a method that is not idempotent (`idempotent` false), only
  // when "reset" is listed explicitly. A per-try timeout is retried on those three for
  // any method, as Envoy does.
  [[nodiscard]] bool RetriableFailure(TryFailure failure, bool idempotent = true) const;

 private:
  uint32_t on_ = 0;
  uint32_t num_retries_ = 0;
  std::vector<uint32_t> codes_;
  std::optional<std::chrono::milliseconds> per_try_timeout_;
};

// Envoy's jittered exponential back-off: for the n-th retry (1-based), a uniform draw in
// [0, min((2^n - 1) * base, max)] with base 25 ms and max 250 ms.
std::chrono::milliseconds RetryBackoff(
    uint32_t retry_number, uint64_t random,
    std::chrono::milliseconds base = std::chrono::milliseconds(25),
    std::chrono::milliseconds max = std::chrono::milliseconds(250));

// True with probability percentage/100 (percentage clamped to 0..100), from a uniform
// 64-bit random value. 100 is always true, 0 never.
bool Roll(double percentage, uint64_t random);

// Milliseconds in a protobuf Duration (negative durations count as 0).
std::chrono::milliseconds ToMillis(const google::protobuf::Duration& d);

}  // namespace skiff::policy

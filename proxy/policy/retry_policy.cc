#include "proxy/policy/retry_policy.h"

#include <algorithm>
#include <string_view>

namespace skiff::policy {

namespace {

uint32_t ConditionBit(std::string_view name) {
  struct Entry {
    std::string_view name;
    uint32_t bit;
  };
  static constexpr Entry kConditions[] = {
      {"5xx", kRetry5xx},
      {"gateway-error", kRetryGatewayError},
      {"reset", kRetryReset},
      {"reset-before-request", kRetryResetBeforeRequest},
      {"connect-failure", kRetryConnectFailure},
      {"refused-stream", kRetryRefusedStream},
      {"retriable-4xx", kRetryRetriable4xx},
      {"retriable-status-codes", kRetryRetriableStatusCodes},
      {"cancelled", kRetryGrpcCancelled},
      {"deadline-exceeded", kRetryGrpcDeadlineExceeded},
      {"resource-exhausted", kRetryGrpcResourceExhausted},
      {"unavailable", kRetryGrpcUnavailable},
      {"internal", kRetryGrpcInternal},
  };
  for (const auto& e : kConditions) {
    if (e.name == name) {
      return e.bit;
    }
  }
  return 0;
}

}  // namespace

std::chrono::milliseconds ToMillis(const google::protobuf::Duration& d) {
  int64_t ms = d.seconds() * 1000 + d.nanos() / 1000000;
  if (ms <= 0 && (d.seconds() > 0 || d.nanos() > 0)) {
    ms = 1;  // a sub-millisecond duration still times out, at the first tick
  }
  return std::chrono::milliseconds(std::max<int64_t>(ms, 0));
}

RetryPolicy::RetryPolicy(const v1::RetryPolicy& proto, std::vector<std::string>* unknown)
    : num_retries_(proto.num_retries()),
      codes_(proto.retriable_status_codes().begin(), proto.retriable_status_codes().end()) {
  for (const auto& c : proto.retry_on()) {
    uint32_t bit = ConditionBit(c);
    if (bit == 0 && unknown != nullptr) {
      unknown->push_back(c);
    }
    on_ |= bit;
  }
  if (proto.has_per_try_timeout()) {
    auto ms = ToMillis(proto.per_try_timeout());
    if (ms.count() > 0) {
      per_try_timeout_ = ms;
    }
  }
}

bool RetryPolicy::RetriableResponse(int status, std::optional<int> grpc_status) const {
  if ((on_ & kRetry5xx) && status >= 500 && status <= 599) {
    return true;
  }
  if ((on_ & kRetryGatewayError) && (status == 502 || status == 503 || status == 504)) {
    return true;
  }
  if ((on_ & kRetryRetriable4xx) && status == 409) {
    return true;
  }
  if ((on_ & kRetryRetriableStatusCodes) &&
      std::find(codes_.begin(), codes_.end(), static_cast<uint32_t>(status)) != codes_.end()) {
    return true;
  }
  if (grpc_status) {
    switch (*grpc_status) {
      case 1:
        return (on_ & kRetryGrpcCancelled) != 0;
      case 4:
        return (on_ & kRetryGrpcDeadlineExceeded) != 0;
      case 8:
        return (on_ & kRetryGrpcResourceExhausted) != 0;
      case 13:
        return (on_ & kRetryGrpcInternal) != 0;
      case 14:
        return (on_ & kRetryGrpcUnavailable) != 0;
      default:
        return false;
    }
  }
  return false;
}

bool RetryPolicy::RetriableFailure(TryFailure failure, bool idempotent) const {
  constexpr uint32_t kNoResponse = kRetry5xx | kRetryGatewayError | kRetryReset;
  switch (failure) {
    case TryFailure::kConnectFailure:
      return (on_ & (kNoResponse | kRetryConnectFailure | kRetryResetBeforeRequest)) != 0;
    case TryFailure::kResetBeforeRequest:
      return (on_ & (kNoResponse | kRetryResetBeforeRequest)) != 0;
    case TryFailure::kReset:
      return idempotent ? (on_ & kNoResponse) != 0 : (on_ & kRetryReset) != 0;
    case TryFailure::kPerTryTimeout:
      return (on_ & kNoResponse) != 0;  // the route set perTryTimeout: as Envoy, any method
  }
  return false;
}

std::chrono::milliseconds RetryBackoff(uint32_t retry_number, uint64_t random,
                                       std::chrono::milliseconds base,
                                       std::chrono::milliseconds max) {
  if (retry_number == 0) {
    retry_number = 1;
  }
  uint64_t factor = retry_number >= 32 ? ~uint64_t{0} >> 1 : (uint64_t{1} << retry_number) - 1;
  uint64_t ceiling = static_cast<uint64_t>(base.count());
  ceiling = factor > static_cast<uint64_t>(max.count())
                ? static_cast<uint64_t>(max.count())
                : std::min<uint64_t>(ceiling * factor, max.count());
  return std::chrono::milliseconds(random % (ceiling + 1));
}

bool Roll(double percentage, uint64_t random) {
  if (!(percentage > 0)) {
    return false;
  }
  if (percentage >= 100) {
    return true;
  }
  // 53 random bits as a uniform double in [0, 1).
  double u = static_cast<double>(random >> 11) * (1.0 / 9007199254740992.0);
  return u * 100.0 < percentage;
}

}  // namespace skiff::policy

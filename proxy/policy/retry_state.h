#pragma once
// The retry state of one request, apart from the route's immutable RetryPolicy: how many
// retries are left, whether the cluster's retry budget (max_retries circuit breaker)
// allows another one, and the back-off before it. Each answered or failed try asks it
// for a RetryDecision. Pure: no I/O, no clock; randomness is passed in.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "proxy/policy/retry_policy.h"

namespace skiff::policy {

enum class RetryDecision {
  kNoRetry,        // the answer or failure is not retriable (or retries are off)
  kRetry,          // retry after backoff()
  kLimitExceeded,  // retriable, but no retries are left (Envoy's URX)
  kOverflow,       // retriable, but the cluster's max_retries are in flight
  kBodyGone,       // retriable, but the request body can no longer be replayed
};

class RetryState {
 public:
  // `active_retries` is the cluster's gauge of retries in flight, `max_retries` its limit
  // (0: none); `idempotent`: the request's method may be sent twice safely.
  RetryState(const RetryPolicy& policy, bool idempotent, std::atomic<int64_t>* active_retries,
             uint32_t max_retries);
  ~RetryState();
  RetryState(const RetryState&) = delete;
  RetryState& operator=(const RetryState&) = delete;

  RetryDecision OnResponse(int status, std::optional<int> grpc_status, bool body_replayable,
                           uint64_t random);
  RetryDecision OnFailure(TryFailure failure, bool body_replayable, uint64_t random);
  // The back-off drawn for the retry just decided.
  [[nodiscard]] std::chrono::milliseconds backoff() const { return backoff_; }
  [[nodiscard]] uint32_t retries_used() const { return used_; }
  [[nodiscard]] bool enabled() const { return policy_.enabled(); }
  // Ends this request's hold on the cluster's retry gauge (also done by the destructor).
  void Release();

 private:
  RetryDecision Decide(bool retriable, bool body_replayable, uint64_t random);

  const RetryPolicy& policy_;
  bool idempotent_;
  std::atomic<int64_t>* active_;
  uint32_t max_retries_;
  uint32_t left_;
  uint32_t used_ = 0;
  bool holding_ = false;  // counted in *active_
  std::chrono::milliseconds backoff_{0};
};

// GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 9.2.2).
bool IsIdempotent(std::string_view method);

}  // namespace skiff::policy

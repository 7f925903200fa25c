#include "proxy/policy/retry_state.h"

namespace skiff::policy {

RetryState::RetryState(const RetryPolicy& policy, bool idempotent,
                       std::atomic<int64_t>* active_retries, uint32_t max_retries)
    : policy_(policy),
      idempotent_(idempotent),
      active_(active_retries),
      max_retries_(max_retries),
      left_(policy.enabled() ? policy.num_retries() : 0) {}

RetryState::~RetryState() { Release(); }

void RetryState::Release() {
  if (holding_) {
    holding_ = false;
    active_->fetch_sub(1, std::memory_order_relaxed);
  }
}

RetryDecision RetryState::Decide(bool retriable, bool body_replayable, uint64_t random) {
  Release();  // the previous retry (if any) is over
  if (!retriable) {
    return RetryDecision::kNoRetry;
  }
  if (left_ == 0) {
    return policy_.enabled() ? RetryDecision::kLimitExceeded : RetryDecision::kNoRetry;
  }
  if (!body_replayable) {
    return RetryDecision::kBodyGone;
  }
  if (max_retries_ != 0 && active_ != nullptr &&
      active_->load(std::memory_order_relaxed) >= max_retries_) {
    return RetryDecision::kOverflow;
  }
  --left_;
  ++used_;
  if (active_ != nullptr) {
    holding_ = true;
    active_->fetch_add(1, std::memory_order_relaxed);
  }
  backoff_ = RetryBackoff(used_, random);
  return RetryDecision::kRetry;
}

RetryDecision RetryState::OnResponse(int status, std::optional<int> grpc_status,
                                     bool body_replayable, uint64_t random) {
  return Decide(policy_.RetriableResponse(status, grpc_status), body_replayable, random);
}

RetryDecision RetryState::OnFailure(TryFailure failure, bool body_replayable, uint64_t random) {
  return Decide(policy_.RetriableFailure(failure, idempotent_), body_replayable, random);
}

bool IsIdempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE";
}

}  // namespace skiff::policy

#include "proxy/policy/retry_state.h"

#include <catch2/catch.hpp>

using skiff::policy::RetryDecision;
using skiff::policy::RetryPolicy;
using skiff::policy::RetryState;
using skiff::policy::TryFailure;

namespace {
RetryPolicy Policy(uint32_t retries, std::initializer_list<const char*> on) {
  skiff::v1::RetryPolicy p;
  p.set_num_retries(retries);
  for (const char* c : on) {
    p.add_retry_on(c);
  }
  return RetryPolicy(p);
}
}  // namespace

TEST_CASE("retry state: counts retries down - then the limit is exceeded") {
  auto policy = Policy(2, {"5xx"});
  std::atomic<int64_t> active{0};
  RetryState s(policy, true, &active, 0);
  CHECK(s.OnResponse(503, std::nullopt, true, 0) == RetryDecision::kRetry);
  CHECK(active == 1);
  CHECK(s.OnResponse(500, std::nullopt, true, 0) == RetryDecision::kRetry);
  CHECK(active == 1);  // the first retry ended when the second was decided
  CHECK(s.OnResponse(502, std::nullopt, true, 0) == RetryDecision::kLimitExceeded);
  CHECK(active == 0);
  CHECK(s.retries_used() == 2);
  CHECK(s.OnResponse(200, std::nullopt, true, 0) == RetryDecision::kNoRetry);
}

TEST_CASE("retry state: back-off is jittered exponential within Envoy's bounds") {
  auto policy = Policy(5, {"5xx"});
  RetryState s(policy, true, nullptr, 0);
  const uint64_t max_draw = ~uint64_t{0};
  REQUIRE(s.OnResponse(503, std::nullopt, true, max_draw) == RetryDecision::kRetry);
  CHECK(s.backoff().count() <= 25);
  REQUIRE(s.OnResponse(503, std::nullopt, true, 74) == RetryDecision::kRetry);
  CHECK(s.backoff().count() == 74 % 76);  // second retry: [0, 75] ms
  for (int i = 0; i < 3; ++i) {
    REQUIRE(s.OnResponse(503, std::nullopt, true, max_draw) == RetryDecision::kRetry);
    CHECK(s.backoff().count() <= 250);
  }
}

TEST_CASE("retry state: the cluster's max_retries budget overflows") {
  auto policy = Policy(3, {"gateway-error"});
  std::atomic<int64_t> active{2};
  RetryState s(policy, true, &active, 2);
  CHECK(s.OnResponse(503, std::nullopt, true, 0) == RetryDecision::kOverflow);
  active = 1;
  CHECK(s.OnResponse(503, std::nullopt, true, 0) == RetryDecision::kRetry);
  CHECK(active == 2);
  s.Release();
  CHECK(active == 1);
}

TEST_CASE("retry state: a body that can no longer be replayed cannot be retried") {
  auto policy = Policy(3, {"5xx"});
  RetryState s(policy, true, nullptr, 0);
  CHECK(s.OnResponse(503, std::nullopt, false, 0) == RetryDecision::kBodyGone);
}

TEST_CASE("retry state: resets after bytes were sent - by method and policy") {
  auto five = Policy(2, {"5xx"});
  auto reset = Policy(2, {"reset"});
  auto istio = Policy(2, {"connect-failure", "refused-stream", "retriable-status-codes"});
  auto before = Policy(2, {"reset-before-request"});
  {
    RetryState get(five, true, nullptr, 0);
    CHECK(get.OnFailure(TryFailure::kReset, true, 0) == RetryDecision::kRetry);
    RetryState post(five, false, nullptr, 0);
    CHECK(post.OnFailure(TryFailure::kReset, true, 0) == RetryDecision::kNoRetry);
  }
  {
    RetryState post(reset, false, nullptr, 0);
    CHECK(post.OnFailure(TryFailure::kReset, true, 0) == RetryDecision::kRetry);
  }
  {
    RetryState get(istio, true, nullptr, 0);
    CHECK(get.OnFailure(TryFailure::kReset, true, 0) == RetryDecision::kNoRetry);
    CHECK(get.OnFailure(TryFailure::kConnectFailure, true, 0) == RetryDecision::kRetry);
  }
  {
    RetryState post(before, false, nullptr, 0);
    CHECK(post.OnFailure(TryFailure::kReset, true, 0) == RetryDecision::kNoRetry);
    CHECK(post.OnFailure(TryFailure::kResetBeforeRequest, true, 0) == RetryDecision::kRetry);
  }
  {
    auto none = Policy(0, {"5xx", "reset"});  // (RetryState keeps a reference)
    RetryState off(none, true, nullptr, 0);
    CHECK(off.OnFailure(TryFailure::kReset, true, 0) == RetryDecision::kNoRetry);
  }
}

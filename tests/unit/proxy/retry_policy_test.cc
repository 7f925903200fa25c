#include "proxy/policy/retry_policy.h"

#include <catch2/catch.hpp>

using skiff::policy::RetryBackoff;
using skiff::policy::RetryPolicy;
using skiff::policy::Roll;
using skiff::policy::TryFailure;
using namespace std::chrono_literals;

namespace {
RetryPolicy Make(std::initializer_list<const char*> on, uint32_t retries = 2,
                 std::initializer_list<uint32_t> codes = {}) {
  skiff::v1::RetryPolicy p;
  p.set_num_retries(retries);
  for (const char* c : on) {
    p.add_retry_on(c);
  }
  for (uint32_t c : codes) {
    p.add_retriable_status_codes(c);
  }
  return RetryPolicy(p);
}
}  // namespace

TEST_CASE("5xx retries every 5xx answer and every try without an answer") {
  auto p = Make({"5xx"});
  CHECK(p.RetriableResponse(500, std::nullopt));
  CHECK(p.RetriableResponse(503, std::nullopt));
  CHECK(p.RetriableResponse(599, std::nullopt));
  CHECK_FALSE(p.RetriableResponse(404, std::nullopt));
  CHECK_FALSE(p.RetriableResponse(200, std::nullopt));
  CHECK(p.RetriableFailure(TryFailure::kConnectFailure));
  CHECK(p.RetriableFailure(TryFailure::kReset));
  CHECK(p.RetriableFailure(TryFailure::kPerTryTimeout));
}

TEST_CASE("gateway-error retries only 502, 503 and 504") {
  auto p = Make({"gateway-error"});
  CHECK_FALSE(p.RetriableResponse(500, std::nullopt));
  CHECK(p.RetriableResponse(502, std::nullopt));
  CHECK(p.RetriableResponse(503, std::nullopt));
  CHECK(p.RetriableResponse(504, std::nullopt));
  CHECK(p.RetriableFailure(TryFailure::kConnectFailure));
}

TEST_CASE("connect-failure and reset cover only failures without an answer") {
  auto c = Make({"connect-failure"});
  CHECK(c.RetriableFailure(TryFailure::kConnectFailure));
  CHECK_FALSE(c.RetriableFailure(TryFailure::kReset));
  CHECK_FALSE(c.RetriableResponse(503, std::nullopt));
  auto r = Make({"reset"});
  CHECK(r.RetriableFailure(TryFailure::kReset));
  CHECK(r.RetriableFailure(TryFailure::kPerTryTimeout));
  CHECK_FALSE(r.RetriableResponse(500, std::nullopt));
}

TEST_CASE("retriable-status-codes, retriable-4xx and gRPC conditions") {
  auto p = Make({"retriable-status-codes", "retriable-4xx", "unavailable"}, 2, {503, 418});
  CHECK(p.RetriableResponse(418, std::nullopt));
  CHECK(p.RetriableResponse(503, std::nullopt));
  CHECK_FALSE(p.RetriableResponse(500, std::nullopt));
  CHECK(p.RetriableResponse(409, std::nullopt));
  CHECK(p.RetriableResponse(200, 14));       // grpc-status UNAVAILABLE
  CHECK_FALSE(p.RetriableResponse(200, 1));  // CANCELLED not listed
  CHECK_FALSE(p.RetriableFailure(TryFailure::kConnectFailure));
}

TEST_CASE("Istio's default retry policy: 2 retries on connect failures and 503") {
  auto p = Make(
      {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"},
      2, {503});
  CHECK(p.enabled());
  CHECK(p.num_retries() == 2);
  CHECK(p.RetriableResponse(503, std::nullopt));
  CHECK_FALSE(p.RetriableResponse(500, std::nullopt));
  CHECK(p.RetriableFailure(TryFailure::kConnectFailure));
  CHECK_FALSE(p.RetriableFailure(TryFailure::kReset));
}

TEST_CASE("no retries, unknown conditions, and the per-try timeout") {
  CHECK_FALSE(Make({"5xx"}, 0).enabled());
  CHECK_FALSE(Make({}, 3).enabled());
  skiff::v1::RetryPolicy proto;
  proto.set_num_retries(1);
  proto.add_retry_on("5xx");
  proto.add_retry_on("no-such-condition");
  proto.mutable_per_try_timeout()->set_seconds(2);
  std::vector<std::string> unknown;
  RetryPolicy p(proto, &unknown);
  CHECK(unknown == std::vector<std::string>{"no-such-condition"});
  REQUIRE(p.per_try_timeout());
  CHECK(*p.per_try_timeout() == 2000ms);
}

TEST_CASE("back-off is jittered within Envoy's exponential bounds: 25 ms base, 250 ms max") {
  for (uint64_t r = 0; r < 2000; r += 7) {
    CHECK(RetryBackoff(1, r) <= 25ms);
    CHECK(RetryBackoff(2, r) <= 75ms);
    CHECK(RetryBackoff(3, r) <= 175ms);
    CHECK(RetryBackoff(4, r) <= 250ms);
    CHECK(RetryBackoff(40, r) <= 250ms);
  }
  // The draw spreads over the whole range.
  CHECK(RetryBackoff(4, 250) == 250ms);
  CHECK(RetryBackoff(4, 251) == 0ms);
}

TEST_CASE("percentage rolls: 0 never, 100 always, 50 about half") {
  uint64_t x = 88172645463325252ULL;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  int hits = 0;
  for (int i = 0; i < 10000; ++i) {
    CHECK_FALSE(Roll(0, next()));
    CHECK(Roll(100, next()));
    hits += Roll(50, next()) ? 1 : 0;
  }
  // 10,000 draws at p = 0.5: 5 standard deviations are 250.
  CHECK(hits > 4750);
  CHECK(hits < 5250);
  CHECK_FALSE(Roll(-1, 0));
}

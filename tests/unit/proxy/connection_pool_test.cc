// The HTTP/1 connection pool's limits: connections, the pending queue, overflow. A real
// listening socket on 127.0.0.1 that never accepts stands in for the endpoint; the
// dispatcher is the fake one, so no event ever arrives and nothing depends on timing.
#include "proxy/upstream/connection_pool.h"

#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "proxy/net/socket.h"
#include "tests/unit/proxy/fakes.h"

namespace {

class Waiter : public skiff::upstream::PoolCallbacks {
 public:
  void OnPoolReady(skiff::http::ClientStream& s) override {
    stream = &s;
    s.SetDecoder(nullptr);
  }
  void OnPoolFailure(skiff::http::ResetReason r) override { failure = static_cast<int>(r) + 1; }
  skiff::http::ClientStream* stream = nullptr;
  int failure = 0;
};

}  // namespace

TEST_CASE("pool: max_connections queues requests - max_pending_requests overflows") {
  std::string error;
  int listener = skiff::net::Listen("127.0.0.1", 0, &error);
  REQUIRE(listener >= 0);
  uint16_t port = skiff::net::LocalPort(listener);
  skiff::testing::FakeDispatcher dispatcher;
  skiff::upstream::PoolOptions options;
  skiff::upstream::PoolStats stats;
  {
    skiff::upstream::HttpConnectionPool pool(dispatcher, options, stats);
    skiff::upstream::Cluster cluster;
    cluster.name = "pool-test";
    cluster.state = skiff::upstream::ClusterStateRegistry::Default().Get("pool-test");
    cluster.max_connections = 1;
    cluster.max_pending_requests = 1;
    skiff::upstream::Endpoint ep;
    ep.address = "127.0.0.1";
    ep.port = port;
    ep.key = "127.0.0.1:" + std::to_string(port);
    Waiter a, b, c;
    pool.NewStream(cluster, ep, false, a);
    CHECK(a.stream != nullptr);
    CHECK(cluster.state->cx_active == 1);
    pool.NewStream(cluster, ep, false, b);
    CHECK(b.stream == nullptr);
    CHECK(b.failure == 0);
    CHECK(cluster.state->rq_pending_active == 1);
    pool.NewStream(cluster, ep, false, c);
    CHECK(c.failure == static_cast<int>(skiff::http::ResetReason::kOverflow) + 1);
    CHECK(cluster.state->upstream_rq_pending_overflow >= 1);
    // The first stream gives up: its slot goes to the waiter.
    a.stream->Reset();
    dispatcher.RunDeferred();
    CHECK(b.stream != nullptr);
    CHECK(cluster.state->rq_pending_active == 0);
    CHECK(cluster.state->cx_active == 1);
    b.stream->Reset();
    dispatcher.RunDeferred();
    CHECK(cluster.state->cx_active == 0);
    CHECK(stats.upstream_cx_total == 2);
  }
  ::close(listener);
}

TEST_CASE("pool: a withdrawn waiter leaves the queue") {
  std::string error;
  int listener = skiff::net::Listen("127.0.0.1", 0, &error);
  REQUIRE(listener >= 0);
  skiff::testing::FakeDispatcher dispatcher;
  skiff::upstream::PoolOptions options;
  skiff::upstream::PoolStats stats;
  {
    skiff::upstream::HttpConnectionPool pool(dispatcher, options, stats);
    skiff::upstream::Cluster cluster;
    cluster.name = "pool-test-2";
    cluster.state = skiff::upstream::ClusterStateRegistry::Default().Get("pool-test-2");
    cluster.max_connections = 1;
    skiff::upstream::Endpoint ep;
    ep.address = "127.0.0.1";
    ep.port = skiff::net::LocalPort(listener);
    ep.key = "127.0.0.1:" + std::to_string(ep.port);
    Waiter a, b;
    pool.NewStream(cluster, ep, false, a);
    pool.NewStream(cluster, ep, false, b);
    CHECK(cluster.state->rq_pending_active == 1);
    pool.Cancel(b);
    CHECK(cluster.state->rq_pending_active == 0);
    a.stream->Reset();
    dispatcher.RunDeferred();
    CHECK(b.stream == nullptr);
  }
  ::close(listener);
}

// The request path without sockets: an Exchange on a fake dispatcher, a fake pool whose
// streams the test answers, and a fake client encoder. Time is simulated.
#include "proxy/server/exchange.h"

#include <catch2/catch.hpp>

#include "proxy/upstream/cluster_state.h"
#include "tests/unit/proxy/fakes.h"

using namespace std::chrono_literals;
using skiff::http::ResetReason;
using skiff::proxy::Exchange;
using skiff::testing::ExchangeHarness;
using skiff::testing::FakePool;
using skiff::testing::Snapshot;

namespace {

constexpr const char* kGet =
    "GET /items?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: t\r\n\r\n";
constexpr const char* kOk = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: 1\r\n\r\nok";
constexpr const char* k503 = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";

std::string Route(const std::string& extra_action, const std::string& extra_route = "") {
  return R"([{"route":{"clusters":[{"cluster":"c1","weight":100}])" + extra_action + "}" +
         extra_route + "}]";
}

uint64_t Retries(const std::string& cluster) {
  return skiff::upstream::ClusterStateRegistry::Default().Get(cluster)->upstream_rq_retry.load();
}

}  // namespace

TEST_CASE("exchange: a proxied request goes through route - upstream and response phases") {
  ExchangeHarness h(Snapshot(Route("")));
  h.Send(kGet);
  auto& pool = h.context.pool_;
  REQUIRE(pool.requests == 1);
  CHECK(h.exchange->state() == Exchange::State::kUpstream);
  auto& s = pool.last();
  CHECK(s.head.method == "GET");
  CHECK(s.head.path == "/items?x=1");
  CHECK(s.head.authority == "shop.example");
  CHECK(s.head.fields.find("x-forwarded-for: 10.0.0.9\r\n") != std::string::npos);
  CHECK(s.head.fields.find("x-request-id: ") != std::string::npos);
  CHECK(s.request_end);
  s.Respond(kOk);
  CHECK(h.encoder.status == 200);
  CHECK(h.encoder.body == "ok");
  CHECK(h.encoder.complete);
  CHECK(h.encoder.fields.find("x-up: 1\r\n") != std::string::npos);
  CHECK(h.encoder.fields.find("server: skiff\r\n") != std::string::npos);
  CHECK(h.exchange->state() == Exchange::State::kComplete);
  CHECK(h.exchange->response_flags().empty());
}

TEST_CASE("exchange: the upstream protocol - the cluster's or with USE_DOWNSTREAM the client's") {
  const std::string clusters =
      R"(,{"name":"h2","protocol":"HTTP2"},{"name":"keep","protocol":"USE_DOWNSTREAM"})";
  for (const char* client : {"HTTP/1.1", "HTTP/2"}) {
    for (const char* cluster : {"c1", "h2", "keep"}) {
      ExchangeHarness h(Snapshot(
          R"([{"route":{"clusters":[{"cluster":")" + std::string(cluster) +
              R"(","weight":100}]}}])",
          clusters,
          R"(,{"clusterName":"h2","endpoints":[{"address":"10.3.0.1","port":80,"healthy":true}]},)"
          R"({"clusterName":"keep","endpoints":[{"address":"10.3.0.1","port":80,"healthy":true}]})"));
      h.encoder.client_protocol = client;
      h.Send(kGet);
      auto& pool = h.context.pool_;
      INFO(client << " client, cluster " << cluster);
      REQUIRE(pool.requests == 1);
      bool want = std::string_view(cluster) == "h2" ||
                  (std::string_view(cluster) == "keep" && std::string_view(client) == "HTTP/2");
      CHECK(pool.http2_streams == (want ? 1 : 0));
    }
  }
}

TEST_CASE("exchange: retries back off in simulated time and then succeed") {
  ExchangeHarness h(Snapshot(Route(R"(,"retryPolicy":{"numRetries":2,"retryOn":["5xx"]})")));
  uint64_t before = Retries("c1");
  h.Send(kGet);
  auto& pool = h.context.pool_;
  pool.last().Respond(k503);
  CHECK(pool.streams[0]->was_reset);  // the answer's connection goes with it
  CHECK(h.exchange->state() == Exchange::State::kBackoff);
  CHECK(h.encoder.heads == 0);
  // Back-off for the first retry: uniform in [0, 25 ms]; the fake draws the middle.
  h.context.dispatcher_.Advance(5ms);
  CHECK(pool.requests == 1);
  h.context.dispatcher_.Advance(20ms);
  REQUIRE(pool.requests == 2);
  CHECK(pool.endpoints[0] != pool.endpoints[1]);  // a retry prefers another endpoint
  pool.last().Respond(kOk);
  CHECK(h.encoder.status == 200);
  CHECK(h.exchange->attempts() == 2);
  CHECK(Retries("c1") == before + 1);
}

TEST_CASE("exchange: retries run out on a retriable answer: the last answer - URX") {
  ExchangeHarness h(Snapshot(Route(R"(,"retryPolicy":{"numRetries":1,"retryOn":["5xx"]})")));
  h.Send(kGet);
  auto& pool = h.context.pool_;
  pool.last().Respond(k503);
  h.context.dispatcher_.Advance(30ms);
  REQUIRE(pool.requests == 2);
  pool.last().Respond(k503);
  CHECK(h.encoder.status == 503);
  CHECK(h.exchange->response_flags() == "URX");
}

TEST_CASE("exchange: per-try timeout resets the try - the last one answers 504 UT") {
  ExchangeHarness h(Snapshot(
      Route(R"(,"retryPolicy":{"numRetries":1,"retryOn":["5xx"],"perTryTimeout":"0.1s"})")));
  h.Send(kGet);
  auto& pool = h.context.pool_;
  h.context.dispatcher_.Advance(99ms);
  CHECK(!pool.streams[0]->was_reset);
  h.context.dispatcher_.Advance(1ms);
  CHECK(pool.streams[0]->was_reset);
  h.context.dispatcher_.Advance(30ms);
  REQUIRE(pool.requests == 2);
  h.context.dispatcher_.Advance(100ms);
  CHECK(h.encoder.status == 504);
  CHECK(h.encoder.body == "upstream request timeout");
  CHECK(h.exchange->response_flags().find("UT") != std::string::npos);
}

TEST_CASE("exchange: the route timeout bounds all tries together") {
  ExchangeHarness h(
      Snapshot(Route(R"(,"timeout":"0.25s","retryPolicy":{"numRetries":5,"retryOn":["5xx"]})")));
  h.Send(kGet);
  auto& pool = h.context.pool_;
  pool.last().Respond(k503);  // retried...
  h.context.dispatcher_.Advance(249ms);
  CHECK(h.encoder.heads == 0);
  h.context.dispatcher_.Advance(1ms);
  CHECK(h.encoder.status == 504);
  CHECK(h.exchange->state() == Exchange::State::kComplete);
}

TEST_CASE("exchange: stream idle timeout: 408 before a response - a reset after") {
  SECTION("no response") {
    ExchangeHarness h(Snapshot(Route("")));
    h.context.options_.stream_idle_timeout = 1000ms;
    h.Send(kGet);
    h.context.dispatcher_.Advance(999ms);
    CHECK(h.encoder.heads == 0);
    h.context.dispatcher_.Advance(2ms);
    CHECK(h.encoder.status == 408);
    CHECK(h.context.pool_.last().was_reset);  // the upstream connection is freed
    CHECK(h.exchange->response_flags() == "SI");
  }
  SECTION("a response that stops mid-body") {
    ExchangeHarness h(Snapshot(Route("")));
    h.context.options_.stream_idle_timeout = 1000ms;
    h.Send(kGet);
    h.context.dispatcher_.Advance(600ms);
    h.context.pool_.last().Respond("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", false);
    h.context.dispatcher_.Advance(900ms);  // activity at 600 ms moved the deadline
    CHECK(!h.encoder.reset);
    h.context.dispatcher_.Advance(200ms);
    CHECK(h.encoder.reset);
    CHECK(h.exchange->state() == Exchange::State::kReset);
  }
}

TEST_CASE("exchange: a delay fault holds the request - an abort answers without upstream") {
  SECTION("delay") {
    ExchangeHarness h(
        Snapshot(Route("", R"(,"fault":{"delay":{"fixedDelay":"0.5s","percentage":100}})")));
    h.Send(kGet);
    CHECK(h.exchange->state() == Exchange::State::kFaultDelay);
    h.context.dispatcher_.Advance(499ms);
    CHECK(h.context.pool_.requests == 0);
    h.context.dispatcher_.Advance(1ms);
    CHECK(h.context.pool_.requests == 1);
    h.context.pool_.last().Respond(kOk);
    CHECK(h.exchange->response_flags() == "DI");
  }
  SECTION("abort") {
    ExchangeHarness h(
        Snapshot(Route("", R"(,"fault":{"abort":{"httpStatus":418,"percentage":100}})")));
    h.Send(kGet);
    CHECK(h.context.pool_.requests == 0);
    CHECK(h.encoder.status == 418);
    CHECK(h.encoder.body == "fault filter abort");
    CHECK(h.exchange->response_flags() == "FI");
  }
}

TEST_CASE("exchange: mirrors get a -shadow copy once the request is complete") {
  ExchangeHarness h(Snapshot(Route(R"(,"mirrors":[{"cluster":"c2","percentage":100}])")));
  h.Send("POST /m HTTP/1.1\r\nHost: shop.example:8080\r\ncontent-length: 5\r\n\r\n");
  CHECK(h.context.shadows_.sent.empty());  // the body is not complete yet
  h.exchange->DecodeBody("hello", true);
  REQUIRE(h.context.shadows_.sent.size() == 1);
  const auto& [cluster, request] = h.context.shadows_.sent[0];
  CHECK(cluster == "c2");
  CHECK(request.find("host: shop.example-shadow:8080\r\n") != std::string::npos);
  CHECK(request.substr(request.size() - 5) == "hello");
  CHECK(h.context.pool_.last().body == "hello");
}

TEST_CASE("exchange: pool overflow is 503 UO - a connect failure 503 UF") {
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.context.pool_.mode = FakePool::Mode::kOverflow;
    h.Send(kGet);
    CHECK(h.encoder.status == 503);
    CHECK(h.exchange->response_flags() == "UO");
  }
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.context.pool_.mode = FakePool::Mode::kConnectFailure;
    h.Send(kGet);
    CHECK(h.encoder.status == 503);
    CHECK(h.exchange->response_flags() == "UF");
  }
}

TEST_CASE("exchange: a request waiting for a connection slot keeps its body - bounded") {
  ExchangeHarness h(Snapshot(Route("")));
  h.context.pool_.mode = FakePool::Mode::kWait;
  h.context.options_.max_buffer_bytes = 8;
  h.Send("POST /w HTTP/1.1\r\nHost: a\r\ncontent-length: 12\r\n\r\n");
  h.exchange->DecodeBody("0123456789", false);
  CHECK(h.encoder.read_disabled);  // over the limit: reading the client pauses
  h.context.pool_.Release();
  CHECK(h.context.pool_.last().body == "0123456789");
  CHECK(!h.encoder.read_disabled);
  h.exchange->DecodeBody("ab", true);
  CHECK(h.context.pool_.last().body == "0123456789ab");
  CHECK(h.context.pool_.last().request_end);
}

TEST_CASE("exchange: a request that may have been processed is not sent twice") {
  SECTION("GET, Istio's default retries, connection closed after the request") {
    ExchangeHarness h(Snapshot(Route(
        R"(,"retryPolicy":{"numRetries":2,"retryOn":["connect-failure","retriable-status-codes"],
           "retriableStatusCodes":[503]})")));
    h.context.pool_.next_pooled = true;
    h.Send(kGet);
    h.context.pool_.last().Fail(ResetReason::kConnectionTermination);
    h.context.dispatcher_.Advance(300ms);
    CHECK(h.context.pool_.requests == 1);
    CHECK(h.encoder.status == 503);
    CHECK(h.encoder.body ==
          "upstream connect error or disconnect/reset before headers. reset reason: "
          "connection termination");
    CHECK(h.exchange->response_flags() == "UC");
  }
  SECTION("POST with retryOn 5xx: reset only implied, so no resend") {
    ExchangeHarness h(Snapshot(Route(R"(,"retryPolicy":{"numRetries":2,"retryOn":["5xx"]})")));
    h.Send("POST /p HTTP/1.1\r\nHost: a\r\ncontent-length: 1\r\n\r\n");
    h.exchange->DecodeBody("x", true);
    h.context.pool_.last().Fail(ResetReason::kConnectionTermination);
    h.context.dispatcher_.Advance(300ms);
    CHECK(h.context.pool_.requests == 1);
    CHECK(h.encoder.status == 503);
  }
  SECTION("GET with retryOn 5xx is retried") {
    ExchangeHarness h(Snapshot(Route(R"(,"retryPolicy":{"numRetries":2,"retryOn":["5xx"]})")));
    h.Send(kGet);
    h.context.pool_.last().Fail(ResetReason::kConnectionTermination);
    h.context.dispatcher_.Advance(30ms);
    CHECK(h.context.pool_.requests == 2);
  }
  SECTION("a pooled connection that took no byte is replaced, not counted as a retry") {
    ExchangeHarness h(Snapshot(Route(R"(,"retryPolicy":{"numRetries":0})")));
    h.context.pool_.next_pooled = true;
    h.Send(kGet);
    auto& first = h.context.pool_.last();
    first.sent = 0;
    h.context.pool_.next_pooled = false;
    first.Fail(ResetReason::kConnectionTermination);
    h.context.dispatcher_.RunDeferred();
    REQUIRE(h.context.pool_.requests == 2);
    h.context.pool_.last().Respond(kOk);
    CHECK(h.encoder.status == 200);
    CHECK(h.exchange->attempts() == 1);
  }
}

TEST_CASE("exchange: local replies: no route 404 NR - CONNECT 405 - redirect - direct response") {
  {
    ExchangeHarness h(Snapshot(R"([{"match":{"uri":{"prefix":"/only"}},"route":{"clusters":[
      {"cluster":"c1","weight":1}]}}])"));
    h.Send(kGet);
    CHECK(h.encoder.status == 404);
    CHECK(h.exchange->response_flags() == "NR");
  }
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.Send("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n");
    CHECK(h.encoder.status == 405);
    CHECK(h.context.pool_.requests == 0);
  }
  {
    ExchangeHarness h(Snapshot(R"([{"redirect":{"uri":"/new","responseCode":308}}])"));
    h.Send(kGet);
    CHECK(h.encoder.status == 308);
    CHECK(h.encoder.fields.find("location: http://shop.example/new?x=1\r\n") != std::string::npos);
  }
  {
    ExchangeHarness h(Snapshot(R"([{"directResponse":{"status":200,"body":"hi"}}])"));
    h.Send(kGet);
    CHECK(h.encoder.status == 200);
    CHECK(h.encoder.body == "hi");
  }
}

TEST_CASE("exchange: path normalization before routing - and the path sent upstream") {
  ExchangeHarness h(Snapshot(R"([{"match":{"uri":{"prefix":"/admin"}},
      "directResponse":{"status":403}},
    {"route":{"clusters":[{"cluster":"c1","weight":1}]}}])"));
  h.Send("GET /x/../%61dmin HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(h.encoder.status == 403);
  ExchangeHarness g(Snapshot(R"([{"match":{"uri":{"prefix":"/admin"}},
      "directResponse":{"status":403}},
    {"route":{"clusters":[{"cluster":"c1","weight":1}]}}])"));
  g.Send("GET /a/./b/../c%7e?q=/./ HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(g.context.pool_.requests == 1);
  CHECK(g.context.pool_.last().head.path == "/a/c~?q=/./");
}

TEST_CASE("exchange: an upgrade is relayed only when the client asked for it") {
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.Send(kGet);
    h.context.pool_.last().Respond("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
                                   false);
    CHECK(h.encoder.status == 502);
  }
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.Send("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    auto& s = h.context.pool_.last();
    CHECK(s.head.upgrade);
    CHECK(s.head.fields.find("upgrade: websocket\r\n") != std::string::npos);
    s.Respond("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", false);
    CHECK(h.encoder.status == 101);
    CHECK(h.encoder.tunnel);
    CHECK(s.tunnel);
    CHECK(h.exchange->state() == Exchange::State::kTunnel);
    h.exchange->DecodeBody("ping", false);
    CHECK(s.body == "ping");
  }
}

TEST_CASE("exchange: the client going away resets the try - counted as DC") {
  ExchangeHarness h(Snapshot(Route("")));
  h.Send(kGet);
  h.exchange->OnDownstreamReset(ResetReason::kConnectionTermination);
  CHECK(h.context.pool_.last().was_reset);
  CHECK(h.exchange->state() == Exchange::State::kReset);
  CHECK(h.exchange->response_flags() == "DC");
}

TEST_CASE("exchange: a malformed body before the response is 400 - after it - a reset") {
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.Send("POST /p HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n");
    h.exchange->OnDownstreamReset(ResetReason::kProtocolError);
    CHECK(h.encoder.status == 400);
  }
  {
    ExchangeHarness h(Snapshot(Route("")));
    h.Send("POST /p HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n");
    h.context.pool_.last().Respond("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab", false);
    h.exchange->OnDownstreamReset(ResetReason::kProtocolError);
    CHECK(h.encoder.heads == 1);  // no second response
    CHECK(h.encoder.reset);
  }
}

TEST_CASE("exchange: recycled for the next request with nothing left over") {
  ExchangeHarness h(Snapshot(Route(R"(,"retryPolicy":{"numRetries":1,"retryOn":["5xx"]})")));
  h.Send(kGet);
  h.context.pool_.last().Respond(kOk);
  REQUIRE(h.exchange->state() == Exchange::State::kComplete);
  h.exchange->Recycle(h.info, h.encoder);
  skiff::testing::FakeEncoder second;
  h.encoder = second;
  h.Send("GET /again HTTP/1.1\r\nHost: other\r\n\r\n");
  REQUIRE(h.context.pool_.requests == 2);
  CHECK(h.context.pool_.last().head.path == "/again");
  CHECK(h.context.pool_.last().head.authority == "other");
  h.context.pool_.last().Respond(kOk);
  CHECK(h.exchange->attempts() == 1);
  CHECK(h.exchange->response_flags().empty());
}

TEST_CASE("exchange pool: keeps ended exchanges - bounded - never a running one") {
  ExchangeHarness done(Snapshot(Route("")));
  ExchangeHarness running(Snapshot(Route("")));
  ExchangeHarness another(Snapshot(Route("")));
  skiff::proxy::ExchangePool pool(1);
  done.Send(kGet);
  done.context.pool_.last().Respond(kOk);
  REQUIRE(done.exchange->state() == Exchange::State::kComplete);
  CHECK(done.exchange->Reusable());
  running.Send(kGet);  // waiting for the upstream's answer
  CHECK_FALSE(running.exchange->Reusable());
  pool.Give(std::move(running.exchange));  // freed, not kept
  CHECK(pool.size() == 0);
  pool.Give(std::move(done.exchange));
  CHECK(pool.size() == 1);
  another.Send(kGet);
  another.context.pool_.last().Respond(kOk);
  pool.Give(std::move(another.exchange));  // full
  CHECK(pool.size() == 1);
  // Taken for another connection of the same worker (the pool is per worker: `done`'s
  // context): it serves a request there as a new exchange would.
  std::unique_ptr<Exchange> reused = pool.Take();
  REQUIRE(reused != nullptr);
  CHECK(pool.Take() == nullptr);
  skiff::proxy::DownstreamInfo info = done.info;
  info.peer = "10.0.0.77";
  skiff::testing::FakeEncoder encoder;  // the new stream's
  reused->Recycle(info, encoder);
  skiff::testing::ParsedRequest req(kGet);
  reused->DecodeHead(req.head(), req.head_bytes, req.end_stream());
  done.context.dispatcher_.RunDeferred();
  REQUIRE(done.context.pool_.requests == 2);
  CHECK(done.context.pool_.last().head.fields.find("x-forwarded-for: 10.0.0.77\r\n") !=
        std::string::npos);
  done.context.pool_.last().Respond(kOk);
  CHECK(reused->state() == Exchange::State::kComplete);
  CHECK(encoder.status == 200);
  CHECK(encoder.body == "ok");
}

TEST_CASE("exchange: a body that waited for its stream stays paused while the upstream is full") {
  ExchangeHarness h(Snapshot(R"([{"route":{"clusters":[{"cluster":"c1","weight":100}]}}])"));
  h.context.pool_.mode = FakePool::Mode::kWait;
  h.context.pool_.next_watermark = 64 * 1024;
  h.Send("POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 10000000\r\n\r\n");
  h.exchange->DecodeBody(std::string(300 * 1024, 'a'), false);
  REQUIRE(h.encoder.read_disabled);  // more than max_buffer_bytes wait for the stream
  h.context.pool_.Release();         // the stream: what waited goes, and fills the upstream
  h.context.dispatcher_.RunDeferred();
  REQUIRE(h.context.pool_.last().above_watermark);
  CHECK(h.encoder.read_disabled);  // still paused: the upstream takes no more
  h.context.pool_.last().decoder->OnUpstreamWatermark(false);
  CHECK_FALSE(h.encoder.read_disabled);
}

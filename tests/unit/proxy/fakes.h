#pragma once
// Fakes for unit tests of the request path: a dispatcher whose clock the test moves, a
// worker context around it, a client-side encoder that records what the exchange sends,
// and a connection pool whose streams record the request and let the test answer.
// No sockets, no threads, no sleeps.
#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/http/parser.h"
#include "proxy/net/dispatcher.h"
#include "proxy/server/active_connection.h"
#include "proxy/server/exchange.h"
#include "proxy/server/worker_context.h"

namespace skiff::testing {

class FakeDispatcher final : public net::Dispatcher {
 public:
  FakeDispatcher() : now_(net::Clock::time_point{} + std::chrono::hours(1)), wheel_(now_) {}
  void Add(int fd, uint32_t events, net::IoHandler*) override { interest[fd] = events; }
  void Modify(int fd, uint32_t events, net::IoHandler*) override { interest[fd] = events; }
  void Remove(int fd) override { interest.erase(fd); }
  void Schedule(net::Timer* timer, std::chrono::milliseconds delay) override {
    wheel_.Schedule(timer, delay, now_);
  }
  void Defer(std::function<void()> fn) override { deferred_.push_back(std::move(fn)); }
  [[nodiscard]] net::Clock::time_point now() const override { return now_; }

  // Runs what was deferred (as the end of a loop turn does).
  void RunDeferred() {
    for (int i = 0; i < 100 && !deferred_.empty(); ++i) {
      auto fns = std::move(deferred_);
      deferred_.clear();
      for (auto& fn : fns) {
        fn();
      }
    }
  }
  // Moves the clock, firing timers one millisecond at a time.
  void Advance(std::chrono::milliseconds ms) {
    for (int64_t i = 0; i < ms.count(); ++i) {
      now_ += std::chrono::milliseconds(1);
      wheel_.Advance(now_);
      RunDeferred();
    }
  }
  [[nodiscard]] size_t timers() const { return wheel_.size(); }
  // The epoll events asked for, per fd.
  std::map<int, uint32_t> interest;

 private:
  net::Clock::time_point now_;
  net::TimerWheel wheel_;
  std::vector<std::function<void()>> deferred_;
};

// A stream of the fake pool: records what the exchange sends; the test answers.
class FakeStream final : public http::ClientStream {
 public:
  void SetDecoder(http::ResponseDecoder* d) override { decoder = d; }
  void EncodeHead(const http::RequestHeaders& h, bool end) override {
    head = h;
    request_end = end;
    sent += 100;
  }
  void EncodeBody(std::string_view data, bool end) override {
    body.append(data);
    request_end = request_end || end;
    sent += data.size();
    if (watermark != 0 && !above_watermark && body.size() > watermark && decoder != nullptr) {
      above_watermark = true;  // the upstream takes no more for now
      decoder->OnUpstreamWatermark(true);
    }
  }
  void EncodeTrailers(std::string_view fields) override {
    trailers.append(fields);
    request_end = true;
  }
  void StartTunnel() override { tunnel = true; }
  void ReadDisable(bool d) override { read_disabled = d; }
  void Reset() override {
    was_reset = true;
    decoder = nullptr;
  }
  [[nodiscard]] uint64_t bytes_sent() const override { return sent; }
  [[nodiscard]] bool reused() const override { return pooled; }

  // The test's side: an upstream response, parsed from raw bytes.
  void Respond(const std::string& raw, bool end_with_body = true) {
    http::ResponseParser parser;
    auto r = parser.Parse(raw);
    REQUIRE(r.status == http::ParseStatus::kDone);
    std::string_view rest = std::string_view(raw).substr(r.consumed);
    bool has_body = !rest.empty();
    http::ResponseDecoder* d = decoder;
    REQUIRE(d != nullptr);
    d->DecodeResponseHead(parser.head(), !has_body && end_with_body);
    if (has_body && decoder != nullptr) {
      decoder->DecodeResponseBody(rest, end_with_body);
    }
  }
  void Fail(http::ResetReason reason) {
    http::ResponseDecoder* d = decoder;
    decoder = nullptr;
    REQUIRE(d != nullptr);
    d->OnUpstreamReset(reason);
  }

  http::ResponseDecoder* decoder = nullptr;
  http::RequestHeaders head;
  std::string body, trailers;
  bool request_end = false;
  bool tunnel = false;
  bool read_disabled = false;
  bool was_reset = false;
  bool pooled = false;
  uint64_t sent = 0;
  size_t watermark = 0;  // above this many body bytes: tells the decoder (0: never)
  bool above_watermark = false;
};

class FakePool final : public upstream::ConnectionPool {
 public:
  enum class Mode { kReady, kWait, kOverflow, kConnectFailure };
  void NewStream(const upstream::Cluster& cluster, const upstream::Endpoint& endpoint, bool http2,
                 upstream::PoolCallbacks& callbacks) override {
    ++requests;
    http2_streams += http2 ? 1 : 0;
    endpoints.push_back(endpoint.key);
    clusters.push_back(cluster.name);
    switch (mode) {
      case Mode::kReady:
        Give(callbacks);
        return;
      case Mode::kWait:
        waiting.push_back(&callbacks);
        return;
      case Mode::kOverflow:
        callbacks.OnPoolFailure(http::ResetReason::kOverflow);
        return;
      case Mode::kConnectFailure:
        callbacks.OnPoolFailure(http::ResetReason::kConnectFailure);
        return;
    }
  }
  void Cancel(upstream::PoolCallbacks& callbacks) override {
    for (auto it = waiting.begin(); it != waiting.end(); ++it) {
      if (*it == &callbacks) {
        waiting.erase(it);
        ++cancelled;
        return;
      }
    }
  }
  // Hands the first waiter a stream.
  void Release() {
    REQUIRE(!waiting.empty());
    auto* cb = waiting.front();
    waiting.pop_front();
    Give(*cb);
  }
  FakeStream& last() { return *streams.back(); }

  Mode mode = Mode::kReady;
  bool next_pooled = false;
  size_t next_watermark = 0;
  int requests = 0;
  int http2_streams = 0;  // of those, asked over HTTP/2
  int cancelled = 0;
  std::vector<std::string> endpoints, clusters;
  std::deque<upstream::PoolCallbacks*> waiting;
  std::vector<std::unique_ptr<FakeStream>> streams;

 private:
  void Give(upstream::PoolCallbacks& cb) {
    streams.push_back(std::make_unique<FakeStream>());
    streams.back()->pooled = next_pooled;
    streams.back()->watermark = next_watermark;
    cb.OnPoolReady(*streams.back());
  }
};

class FakeShadows final : public proxy::ShadowWriter {
 public:
  void Shadow(const upstream::Cluster& cluster, std::string request) override {
    sent.emplace_back(cluster.name, std::move(request));
  }
  std::vector<std::pair<std::string, std::string>> sent;
};

class FakeContext final : public proxy::WorkerContext {
 public:
  explicit FakeContext(const std::string& snapshot_json) : lb_([this] { return NextRandom(); }) {
    v1::Snapshot snap;
    REQUIRE(google::protobuf::util::JsonStringToMessage(snapshot_json, &snap).ok());
    std::string error;
    config_ = proxy::Config::Build(std::move(snap), {}, 1, &error);
    INFO(error);
    REQUIRE(config_ != nullptr);
    codec_options_.max_buffer_bytes = options_.max_buffer_bytes;
  }
  net::Dispatcher& dispatcher() override { return dispatcher_; }
  [[nodiscard]] const proxy::ProxyOptions& options() const override { return options_; }
  [[nodiscard]] const http::ServerCodecOptions& codec_options() const override {
    return codec_options_;
  }
  [[nodiscard]] const std::shared_ptr<const proxy::Config>& config() const override {
    return config_;
  }
  proxy::WorkerStats& stats() override { return stats_; }
  // A fixed sequence: retries back off for half of their maximum, 50% draws hit.
  uint64_t NextRandom() override { return random_value; }
  telemetry::WorkerTelemetry* telemetry() override { return nullptr; }
  upstream::ConnectionPool& pool() override { return pool_; }
  upstream::LoadBalancer& load_balancer() override { return lb_; }
  proxy::ShadowWriter& shadows() override { return shadows_; }
  void ConnectionClosed(proxy::ActiveConnection*) override {}
  void Adopt(std::unique_ptr<proxy::ActiveConnection>) override {}

  FakeDispatcher dispatcher_;
  proxy::ProxyOptions options_;
  http::ServerCodecOptions codec_options_;
  std::shared_ptr<const proxy::Config> config_;
  proxy::WorkerStats stats_;
  FakePool pool_;
  upstream::LoadBalancer lb_;
  FakeShadows shadows_;
  uint64_t random_value = 1ULL << 63;
};

// The client side of an exchange: records the response.
class FakeEncoder final : public http::ResponseEncoder {
 public:
  void Encode100Continue() override { ++continues; }
  void EncodeHead(const http::ResponseHeaders& h, bool end) override {
    ++heads;
    status = h.status;
    fields = h.fields;
    content_length = h.content_length;
    started = true;
    complete = end;
  }
  void EncodeBody(std::string_view data, bool end) override {
    body.append(data);
    complete = complete || end;
  }
  void EncodeTrailers(std::string_view f) override {
    trailers.append(f);
    complete = true;
  }
  void StartTunnel() override { tunnel = true; }
  void ResetStream() override { reset = true; }
  void ReadDisable(bool d) override { read_disabled = d; }
  [[nodiscard]] bool response_started() const override { return started; }
  [[nodiscard]] uint64_t head_bytes_written() const override { return 100; }
  [[nodiscard]] std::string_view protocol() const override { return client_protocol; }

  std::string_view client_protocol = "HTTP/1.1";  // what the client speaks
  int heads = 0, continues = 0, status = 0;
  std::string fields, body, trailers;
  std::optional<uint64_t> content_length;
  bool started = false, complete = false, tunnel = false, reset = false, read_disabled = false;
};

// A request head parsed from raw bytes (kept alive with the bytes).
struct ParsedRequest {
  explicit ParsedRequest(std::string raw) : bytes(std::move(raw)) {
    auto r = parser.Parse(bytes);
    REQUIRE(r.status == http::ParseStatus::kDone);
    head_bytes = r.consumed;
  }
  std::string bytes;
  http::RequestParser parser;
  size_t head_bytes = 0;
  [[nodiscard]] const http::RequestHead& head() const { return parser.head(); }
  [[nodiscard]] bool end_stream() const { return head().Framing() == http::BodyFraming::kNone; }
};

// One exchange with its fakes.
struct ExchangeHarness {
  explicit ExchangeHarness(const std::string& snapshot_json) : context(snapshot_json) {
    info.peer = "10.0.0.9";
    info.listener_address = "0.0.0.0";
    info.listener_bind_port = 80;
    info.listener_port = 80;
    exchange = std::make_unique<proxy::Exchange>(context, info, encoder);
  }
  ~ExchangeHarness() {
    exchange.reset();
    context.dispatcher_.RunDeferred();  // tries retired after this turn
  }
  ExchangeHarness(const ExchangeHarness&) = delete;
  ExchangeHarness& operator=(const ExchangeHarness&) = delete;
  void Send(const std::string& raw) {
    request = std::make_unique<ParsedRequest>(raw);
    exchange->DecodeHead(request->head(), request->head_bytes, request->end_stream());
    context.dispatcher_.RunDeferred();
  }
  FakeContext context;
  proxy::DownstreamInfo info;
  FakeEncoder encoder;
  std::unique_ptr<ParsedRequest> request;
  std::unique_ptr<proxy::Exchange> exchange;
};

// A snapshot with one listener on 80, one virtual host "*" and the given routes and
// clusters ("c1" and "c2" with endpoints 10.1.0.1:8080 and 10.1.0.2:8080).
inline std::string Snapshot(const std::string& routes_json,
                            const std::string& extra_cluster_json = "",
                            const std::string& extra_endpoints_json = "") {
  return R"({"listeners":[{"name":"l","address":"0.0.0.0","port":80,"routeTable":"http.80"}],
    "routeTables":[{"name":"http.80","virtualHosts":[{"name":"vh","domains":["*"],
      "routes":)" +
         routes_json + R"(}]}],
    "clusters":[{"name":"c1"},{"name":"c2"})" +
         extra_cluster_json + R"(],
    "endpoints":[{"clusterName":"c1","endpoints":[{"address":"10.1.0.1","port":8080,"healthy":true},
                                                {"address":"10.1.0.2","port":8080,"healthy":true}]},
                 {"clusterName":"c2","endpoints":[{"address":"10.2.0.1","port":8080,"healthy":true}]})" +
         extra_endpoints_json + "]}";
}

}  // namespace skiff::testing

// The sidecar's probes of its app (proxy/admin/app_prober): real sockets on 127.0.0.1.
#include "proxy/admin/app_prober.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <string>

namespace {

using namespace std::chrono_literals;

// The app: /health answers 200, /sick 500; it records the headers it got.
struct App {
  App() {
    server = std::make_unique<skiff::HttpServer>(skiff::HttpServerOptions{},
                                                 [](const skiff::HttpRequest& r) {
                                                   skiff::HttpResponse resp;
                                                   resp.status = r.path == "/health" ? 200 : 500;
                                                   return resp;
                                                 });
    std::string error;
    REQUIRE(server->Listen(&error));
    server->Start();
  }
  std::unique_ptr<skiff::HttpServer> server;
};

skiff::HttpResponse Probe(skiff::proxy::AppProber& prober, const std::string& path) {
  const skiff::proxy::AppProbe* probe = prober.Find(path);
  REQUIRE(probe != nullptr);
  auto done = std::make_shared<std::promise<skiff::HttpResponse>>();
  auto got = done->get_future();
  prober.Probe(*probe, [done](skiff::HttpResponse r) { done->set_value(std::move(r)); });
  REQUIRE(got.wait_for(20s) == std::future_status::ready);
  return got.get();
}

}  // namespace

TEST_CASE("app prober: HTTP and TCP probes of the app, with its status") {
  App app;
  // A port that accepts connections but never answers, and one where nothing listens.
  int silent = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(silent, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(silent, 4) == 0);
  uint16_t silent_port = skiff::BoundPort(silent);
  int closed = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(::bind(closed, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  uint16_t closed_port = skiff::BoundPort(closed);  // bound, not listening: refused
  std::string p = std::to_string(app.server->port());
  std::string json = R"({
    "/app-health/app/readyz": {"httpGet": {"path": "/health", "port": )" +
                     p + R"(, "scheme": "HTTP",
                               "httpHeaders": [{"name": "x-probe", "value": "1"}]}},
    "/app-health/app/livez": {"httpGet": {"path": "/sick", "port": )" +
                     p + R"(}},
    "/app-health/app/startupz": {"tcpSocket": {"port": )" +
                     p + R"(}},
    "/app-health/silent/readyz": {"httpGet": {"path": "/", "port": )" +
                     std::to_string(silent_port) + R"(}, "timeoutSeconds": 1},
    "/app-health/gone/livez": {"tcpSocket": {"port": )" +
                     std::to_string(closed_port) + R"(}}})";
  skiff::proxy::AppProber prober;
  std::string error;
  REQUIRE(prober.Configure(json, "", &error));
  prober.Start();
  CHECK(Probe(prober, "/app-health/app/readyz").status == 200);
  CHECK(Probe(prober, "/app-health/app/livez").status == 500);
  CHECK(Probe(prober, "/app-health/app/startupz").status == 200);
  auto started = std::chrono::steady_clock::now();
  auto timed_out = Probe(prober, "/app-health/silent/readyz");
  CHECK(timed_out.status == 503);
  CHECK(timed_out.body.find("did not answer within 1s") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - started >= 900ms);
  auto refused = Probe(prober, "/app-health/gone/livez");
  CHECK(refused.status == 503);
  CHECK(refused.body.find("cannot connect") != std::string::npos);
  CHECK(prober.Find("/app-health/other/livez") == nullptr);
  prober.Stop();
  ::close(silent);
  ::close(closed);
}

TEST_CASE("app prober: what SKIFF_KUBE_APP_PROBERS may hold") {
  std::string error;
  CHECK(skiff::proxy::AppProber().Configure("", "", &error));
  CHECK_FALSE(skiff::proxy::AppProber().Configure("[1]", "", &error));
  CHECK_FALSE(
      skiff::proxy::AppProber().Configure(R"({"/x": {"tcpSocket": {"port": 1}}})", "", &error));
  CHECK_FALSE(skiff::proxy::AppProber().Configure(
      R"({"/app-health/a/livez": {"tcpSocket": {"port": 0}}})", "", &error));
  CHECK(error == "\"/app-health/a/livez\": port must be a number 1-65535");
  CHECK_FALSE(skiff::proxy::AppProber().Configure(
      R"({"/app-health/a/livez": {"httpGet": {"path": "/a\r\nx: y", "port": 80}}})", "", &error));
  CHECK_FALSE(skiff::proxy::AppProber().Configure(
      R"({"/app-health/a/livez": {"httpGet": {"port": 80, "scheme": "HTTPS"}}})", "", &error));
  CHECK_FALSE(skiff::proxy::AppProber().Configure("{}", "not-an-ip", &error));
}

// The bounded HTTP server of common/: real sockets on 127.0.0.1, in process.
#include "common/http_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

int Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

void Send(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      return;  // the server may close early (431)
    }
    off += static_cast<size_t>(n);
  }
}

// Everything until the server closes, waiting at most `timeout` in total.
std::string ReadAll(int fd, std::chrono::milliseconds timeout = 20s) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
      return out + "<timeout>";
    }
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      return out;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

bool StillOpen(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;  // nothing to read, no EOF
}

struct Server {
  explicit Server(skiff::HttpServerOptions o = {}) {
    server = std::make_unique<skiff::HttpServer>(o, [](const skiff::HttpRequest& r) {
      skiff::HttpResponse resp;
      resp.body = r.method + " " + r.path + " " + r.query;
      return resp;
    });
    std::string error;
    REQUIRE(server->Listen(&error));
    server->Start();
  }
  std::string Get(const std::string& request) {
    int fd = Connect(server->port());
    Send(fd, request);
    std::string r = ReadAll(fd);
    ::close(fd);
    return r;
  }
  std::unique_ptr<skiff::HttpServer> server;
};

}  // namespace

TEST_CASE("http server: answers GET and HEAD, one request per connection") {
  Server s;
  std::string r = s.Get("GET /stats?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(r.find("connection: close\r\n") != std::string::npos);
  CHECK(r.find("\r\n\r\nGET /stats x=1") != std::string::npos);
  r = s.Get("HEAD /stats HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(r.find("content-length: 12\r\n") != std::string::npos);
  CHECK(r.substr(r.size() - 4) == "\r\n\r\n");  // no body
  r = s.Get("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(r.rfind("HTTP/1.1 405 ", 0) == 0);
  CHECK(r.find("allow: GET, HEAD\r\n") != std::string::npos);
  CHECK(s.Get("GET nopath HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(s.Get("GET / HTTP/2.0\r\n\r\n").rfind("HTTP/1.1 505 ", 0) == 0);
}

TEST_CASE("http server: silent and endlessly slow clients do not block others") {
  Server s;
  std::vector<int> silent;
  for (int i = 0; i < 10; ++i) {
    silent.push_back(Connect(s.server->port()));
  }
  for (int i = 0; i < 5; ++i) {
    int fd = Connect(s.server->port());
    Send(fd, "GET /x HTTP/1.1\r\nX-Slow: ");
    silent.push_back(fd);
  }
  CHECK(s.Get("GET /ready HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200 ", 0) == 0);
  for (int fd : silent) {
    CHECK(StillOpen(fd));
    ::close(fd);
  }
}

TEST_CASE("http server: a head over the limit is 431, a head that does not arrive is 408") {
  skiff::HttpServerOptions o;
  o.max_head_bytes = 1024;
  o.head_timeout = 300ms;
  Server s(o);
  std::string r = s.Get("GET / HTTP/1.1\r\nX: " + std::string(4000, 'a') + "\r\n\r\n");
  CHECK(r.rfind("HTTP/1.1 431 ", 0) == 0);
  CHECK(s.server->stats().head_too_large.load() == 1);
  r = s.Get("GET / HTTP/1.1\r\nX: 1\r\n");
  CHECK(r.rfind("HTTP/1.1 408 ", 0) == 0);
  CHECK(s.server->stats().head_timeouts.load() == 1);
}

TEST_CASE("http server: at max_connections the oldest unfinished connection makes room") {
  skiff::HttpServerOptions o;
  o.max_connections = 4;
  Server s(o);
  std::vector<int> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(Connect(s.server->port()));
    Send(slow.back(), "GET / HTTP/1.1\r\n");
  }
  // Wait until the server holds all four, so the next one is the fifth.
  for (int i = 0; i < 2000 && s.server->stats().active.load() < 4; ++i) {
    ::usleep(1000);
  }
  REQUIRE(s.server->stats().active.load() == 4);
  CHECK(s.Get("GET /ready HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200 ", 0) == 0);
  CHECK(s.server->stats().evicted.load() >= 1);
  CHECK(ReadAll(slow[0], 5s).empty());  // the oldest was closed without an answer
  for (int fd : slow) {
    ::close(fd);
  }
}

TEST_CASE("http server: a port another socket holds, even with SO_REUSEPORT, is refused") {
  int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(holder, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(holder, 4) == 0);
  uint16_t port = skiff::BoundPort(holder);
  std::string error;
  CHECK(skiff::ListenExclusive("127.0.0.1", port, "--admin-port", &error) < 0);
  CHECK(error == "address already in use: 127.0.0.1:" + std::to_string(port) + " (--admin-port)");
  ::close(holder);
  int fd = skiff::ListenExclusive("127.0.0.1", port, "--admin-port", &error);
  CHECK(fd >= 0);
  ::close(fd);
}

TEST_CASE("http server: a deferred answer comes later without holding up others") {
  std::mutex mu;
  std::vector<skiff::HttpReply> pending;
  skiff::HttpServerOptions o;
  o.defer_timeout = 1500ms;
  skiff::HttpServer server(o, [&](const skiff::HttpRequest& r) {
    skiff::HttpResponse resp;
    if (r.path == "/later") {
      resp.deferred = [&](skiff::HttpReply reply) {
        std::lock_guard<std::mutex> lock(mu);
        pending.push_back(std::move(reply));
      };
    } else {
      resp.body = "now";
    }
    return resp;
  });
  std::string error;
  REQUIRE(server.Listen(&error));
  server.Start();
  int later = Connect(server.port());
  Send(later, "GET /later HTTP/1.1\r\nHost: a\r\n\r\n");
  int never = Connect(server.port());
  Send(never, "GET /later HTTP/1.1\r\nHost: a\r\n\r\n");
  // While both wait, another request is answered at once.
  int now = Connect(server.port());
  Send(now, "GET /now HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(ReadAll(now).find("\r\n\r\nnow") != std::string::npos);
  ::close(now);
  // The first deferred request is answered from another thread.
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (pending.size() == 2) {
        break;
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  skiff::HttpReply first;
  {
    std::lock_guard<std::mutex> lock(mu);
    REQUIRE(pending.size() == 2);
    first = pending[0];
  }
  std::thread([first] {
    skiff::HttpResponse r;
    r.status = 503;
    r.body = "app down";
    first(r);
  }).join();
  std::string r = ReadAll(later);
  CHECK(r.rfind("HTTP/1.1 503 ", 0) == 0);
  CHECK(r.find("\r\n\r\napp down") != std::string::npos);
  ::close(later);
  // The other is never answered: 504 at defer_timeout.
  CHECK(ReadAll(never).rfind("HTTP/1.1 504 ", 0) == 0);
  ::close(never);
  // Answers after the connection is gone, or after the server stopped, are dropped.
  skiff::HttpReply second;
  {
    std::lock_guard<std::mutex> lock(mu);
    second = pending[1];
  }
  second(skiff::HttpResponse{});
  server.Stop();
  second(skiff::HttpResponse{});
}

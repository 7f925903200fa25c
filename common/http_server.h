#pragma once
// A small, bounded HTTP/1.1 server for operational endpoints: the proxy's admin, stats and
// readiness ports and the operator's metrics/health port. One thread, epoll, non-blocking
// sockets; one request per connection (answered with `connection: close`), GET and HEAD.
//
// Nothing one client does can stop the server from answering others: every connection has a
// deadline (the request head must arrive within `head_timeout`, else 408; the response must
// be taken within `write_timeout`, else the connection is closed), the head is bounded
// (`max_head_bytes`, else 431), and so is the number of connections: at `max_connections`,
// or when the process is out of file descriptors, the connection closest to its deadline
// (the oldest one still sending its head) is closed to make room, so a probe that sends its
// request at once is answered even while thousands of clients trickle bytes. A handler may
// answer later (HttpResponse::deferred) without holding up the others.
//
// The listening socket never uses SO_REUSEPORT, so a port that another process holds (with
// or without SO_REUSEPORT) is refused instead of silently shared.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace skiff {

struct HttpRequest {
  std::string method;  // GET or HEAD (others are answered 405 by the server)
  std::string target;  // as sent: "/stats?format=json"
  std::string path;    // the target without its query: "/stats"
  std::string query;   // after '?', may be empty
};

struct HttpResponse;
// How a handler answers later (see HttpResponse::deferred): call it once, from any thread.
// A call after the connection is gone (its deadline passed, or the server stopped) does
// nothing.
using HttpReply = std::function<void(HttpResponse)>;

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
  // Set by a handler whose answer is not ready (it waits for something else, such as an
  // application it probes): the server calls it at once with the HttpReply to answer with,
  // and serves other connections meanwhile. No answer within `defer_timeout` is a 504.
  std::function<void(HttpReply)> deferred;
};

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0 picks a free port
  // The flag that chose the port ("--admin-port"), named in errors and logs.
  std::string flag;
  size_t max_head_bytes = 64 * 1024;
  std::chrono::milliseconds head_timeout{10000};
  std::chrono::milliseconds write_timeout{10000};
  std::chrono::milliseconds defer_timeout{30000};  // for deferred answers
  size_t max_connections = 128;
};

struct HttpServerStats {
  std::atomic<uint64_t> requests{0};        // requests answered by the handler
  std::atomic<uint64_t> head_too_large{0};  // answered 431
  std::atomic<uint64_t> head_timeouts{0};   // answered 408
  std::atomic<uint64_t> evicted{0};         // closed to make room for new connections
  std::atomic<uint64_t> active{0};          // connections open now
};

// Binds address:port (SO_REUSEADDR, never SO_REUSEPORT) and listens, non-blocking; -1 with
// `error` such as "address already in use: 127.0.0.1:15000 (--admin-port)" when the port is
// taken. `flag` may be empty.
int ListenExclusive(const std::string& address, uint16_t port, const std::string& flag,
                    std::string* error);
// The port a bound socket has.
uint16_t BoundPort(int fd);

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; false with `error` set (see ListenExclusive).
  bool Listen(std::string* error);
  // Serves on a thread of its own (after Listen).
  void Start();
  // Closes the listener and every connection and joins the thread. Idempotent.
  void Stop();

  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] const std::string& address() const { return options_.address; }
  [[nodiscard]] const HttpServerStats& stats() const { return stats_; }

 private:
  struct Loop;
  HttpServerOptions options_;
  Handler handler_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  HttpServerStats stats_;
  std::unique_ptr<Loop> loop_;
};

}  // namespace skiff

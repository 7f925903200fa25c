#pragma once
// A small HTTPS (TLS 1.2+, OpenSSL) server for the admission webhooks, bounded in every
// way a client could push it: at most `max_connections` at once (more are closed at
// accept), a deadline for the TLS handshake and for each request head and body, a head
// limit (431) and a body limit (413), keep-alive connections closed when idle. One thread
// per connection (few: the API server keeps a handful open). The certificate can be
// replaced while it runs; new connections use the new one.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "operator/webhook/certs.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace skiff::webhook {

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

struct ServerOptions {
  std::string address = "0.0.0.0";
  int port = 15017;  // 0: any free port (see port())
  size_t max_connections = 64;
  size_t max_head_bytes = 64 * 1024;
  size_t max_body_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds request_timeout{10000};  // head and body of one request
  // Longer than the API server's idle timeout for webhook connections (90 s), so that it
  // closes idle connections first and never sends on one we are closing.
  std::chrono::milliseconds idle_timeout{120000};
  size_t max_requests_per_connection = 1000;
};

class TlsServer {
 public:
  // `handler(method, path, body)`.
  using Handler =
      std::function<HttpResponse(const std::string&, const std::string&, const std::string&)>;
  TlsServer(ServerOptions options, Handler handler);
  ~TlsServer();
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;

  // Binds and starts accepting; false with `*error` ("address already in use: ...").
  bool Start(std::string* error);
  void Stop();
  // The certificate and key for new connections (PEM). False with `*error` if unusable.
  bool SetCertificate(const CertBundle& bundle, std::string* error);
  [[nodiscard]] bool HasCertificate() const;
  [[nodiscard]] int port() const { return port_; }

  struct Metrics {
    std::atomic<uint64_t> connections{0};           // accepted
    std::atomic<uint64_t> rejected_connections{0};  // over max_connections
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> handshake_failures{0};
    std::atomic<size_t> active{0};
  };
  [[nodiscard]] const Metrics& metrics() const { return metrics_; }

 private:
  void AcceptLoop();
  void Serve(int fd, std::shared_ptr<SSL_CTX> ctx);

  ServerOptions options_;
  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  mutable std::mutex ctx_mu_;
  std::shared_ptr<SSL_CTX> ctx_;
  // Connection threads, joined (not detached): a thread's OpenSSL state is freed when it
  // exits, after its last line, and it must not outlive the server. Touched only by the
  // accept thread (which reaps ended ones before each new connection) and, once that has
  // been joined, by Stop().
  struct ConnThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<ConnThread> conn_threads_;
  Metrics metrics_;
};

}  // namespace skiff::webhook

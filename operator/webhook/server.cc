#include "operator/webhook/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/strings.h"

namespace skiff::webhook {

namespace {

using Clock = std::chrono::steady_clock;

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

struct SslDeleter {
  void operator()(SSL* s) const { SSL_free(s); }
};

// One TLS connection on a non-blocking socket: every read and write waits for the socket
// with a deadline, in slices that notice a stop.
class Conn {
 public:
  Conn(int fd, SSL* ssl, const std::atomic<bool>& stop) : fd_(fd), ssl_(ssl), stop_(stop) {}

  // Waits for what the last SSL call wants; false at the deadline, on stop or error.
  bool Wait(int ssl_error, Clock::time_point deadline) {
    short events = ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
    while (!stop_.load(std::memory_order_relaxed)) {
      // Rounded up, so that a false return means the deadline has passed.
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return false;
      }
      pollfd p{fd_, events, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 500)));
      if (r > 0) {
        return (p.revents & (POLLERR | POLLNVAL)) == 0;
      }
      if (r < 0 && errno != EINTR) {
        return false;
      }
    }
    return false;
  }

  bool Handshake(Clock::time_point deadline) {
    for (;;) {
      int r = SSL_accept(ssl_);
      if (r == 1) {
        return true;
      }
      int err = SSL_get_error(ssl_, r);
      if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) || !Wait(err, deadline)) {
        ERR_clear_error();
        return false;
      }
    }
  }

  // Appends what arrives to `*buf`; false on close, error, deadline or stop.
  bool Read(std::string* buf, Clock::time_point deadline) {
    char chunk[16384];
    for (;;) {
      int r = SSL_read(ssl_, chunk, sizeof chunk);
      if (r > 0) {
        buf->append(chunk, static_cast<size_t>(r));
        return true;
      }
      int err = SSL_get_error(ssl_, r);
      if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) || !Wait(err, deadline)) {
        ERR_clear_error();
        return false;
      }
    }
  }

  bool Write(const std::string& data, Clock::time_point deadline) {
    size_t done = 0;
    while (done < data.size()) {
      int r = SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done));
      if (r > 0) {
        done += static_cast<size_t>(r);
        continue;
      }
      int err = SSL_get_error(ssl_, r);
      if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) || !Wait(err, deadline)) {
        ERR_clear_error();
        return false;
      }
    }
    return true;
  }

  [[nodiscard]] bool Pending() const { return SSL_pending(ssl_) > 0; }

 private:
  int fd_;
  SSL* ssl_;
  const std::atomic<bool>& stop_;
};

std::string Response(int status, const std::string& content_type, const std::string& body,
                     bool close) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) + "\r\n";
  out += "Content-Type: " + content_type + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (close) {
    out += "Connection: close\r\n";
  }
  out += "\r\n";
  out += body;
  return out;
}

}  // namespace

TlsServer::TlsServer(ServerOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

TlsServer::~TlsServer() { Stop(); }

bool TlsServer::SetCertificate(const CertBundle& bundle, std::string* error) {
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) {
    *error = "SSL_CTX_new failed";
    return false;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  auto load = [&](const std::string& pem, bool is_key) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    bool ok = false;
    if (bio != nullptr) {
      if (is_key) {
        EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
        ok = key != nullptr && SSL_CTX_use_PrivateKey(ctx.get(), key) == 1;
        EVP_PKEY_free(key);
      } else {
        X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
        ok = cert != nullptr && SSL_CTX_use_certificate(ctx.get(), cert) == 1;
        X509_free(cert);
      }
      BIO_free(bio);
    }
    return ok;
  };
  if (!load(bundle.cert_pem, false) || !load(bundle.key_pem, true) ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    ERR_clear_error();
    *error = "the serving certificate and key cannot be used";
    return false;
  }
  std::lock_guard<std::mutex> lock(ctx_mu_);
  ctx_ = std::move(ctx);
  return true;
}

bool TlsServer::HasCertificate() const {
  std::lock_guard<std::mutex> lock(ctx_mu_);
  return ctx_ != nullptr;
}

bool TlsServer::Start(std::string* error) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  bool v6 = options_.address.find(':') != std::string::npos;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(options_.port));
    if (inet_pton(AF_INET6, options_.address.c_str(), &a->sin6_addr) != 1) {
      *error = "invalid webhook address \"" + options_.address + "\"";
      return false;
    }
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(options_.port));
    if (inet_pton(AF_INET, options_.address.c_str(), &a->sin_addr) != 1) {
      *error = "invalid webhook address \"" + options_.address + "\"";
      return false;
    }
    len = sizeof(sockaddr_in);
  }
  listen_fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // no SO_REUSEPORT
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    *error = std::string(errno == EADDRINUSE ? "address already in use" : std::strerror(errno)) +
             ": " + options_.address + ":" + std::to_string(options_.port) + " (--webhook-port)";
    ::close(listen_fd_);
    listen_fd_ = -1;
    return false;
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  port_ = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                   : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  return true;
}

void TlsServer::Stop() {
  if (stop_.exchange(true)) {
    return;
  }
  if (accept_thread_.joinable()) {
    accept_thread_.join();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // Connection threads notice the stop within a poll slice (500 ms).
  for (auto& c : conn_threads_) {
    c.thread.join();
  }
  conn_threads_.clear();
}

void TlsServer::AcceptLoop() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, 200);
    if (r <= 0) {
      continue;
    }
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // out of descriptors
      }
      continue;
    }
    std::shared_ptr<SSL_CTX> ctx;
    {
      std::lock_guard<std::mutex> lock(ctx_mu_);
      ctx = ctx_;
    }
    if (ctx == nullptr || metrics_.active.load() >= options_.max_connections) {
      metrics_.rejected_connections.fetch_add(1, std::memory_order_relaxed);
      ::close(fd);  // no certificate yet, or too many connections
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    metrics_.connections.fetch_add(1, std::memory_order_relaxed);
    metrics_.active.fetch_add(1);
    // Threads that have ended are joined here, so that at most max_connections (plus the
    // few about to exit) are ever kept.
    std::erase_if(conn_threads_, [](ConnThread& c) {
      if (!c.done->load()) {
        return false;
      }
      c.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread thread([this, fd, ctx, done] {
      // A peer that goes away makes writes fail with EPIPE instead of killing the process
      // (OpenSSL writes with write(2), which has no MSG_NOSIGNAL).
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
      Serve(fd, ctx);
      ::close(fd);
      metrics_.active.fetch_sub(1);
      done->store(true);
    });
    conn_threads_.push_back({std::move(thread), std::move(done)});
  }
}

void TlsServer::Serve(int fd, std::shared_ptr<SSL_CTX> ctx) {
  std::unique_ptr<SSL, SslDeleter> ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) {
    return;
  }
  Conn conn(fd, ssl.get(), stop_);
  if (!conn.Handshake(Clock::now() + options_.handshake_timeout)) {
    metrics_.handshake_failures.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::string in;
  for (size_t served = 0; served < options_.max_requests_per_connection && !stop_.load();) {
    // Idle until the next request starts.
    if (in.empty() && !conn.Pending() && !conn.Read(&in, Clock::now() + options_.idle_timeout)) {
      return;
    }
    auto deadline = Clock::now() + options_.request_timeout;
    size_t head_end;
    while ((head_end = in.find("\r\n\r\n")) == std::string::npos) {
      if (in.size() > options_.max_head_bytes) {
        conn.Write(Response(431, "text/plain", "request head too large\n", true), deadline);
        return;
      }
      if (!conn.Read(&in, deadline)) {
        if (Clock::now() >= deadline && !stop_.load()) {
          conn.Write(Response(408, "text/plain", "request timeout\n", true),
                     Clock::now() + std::chrono::seconds(1));
        }
        return;
      }
    }
    if (head_end > options_.max_head_bytes) {
      conn.Write(Response(431, "text/plain", "request head too large\n", true), deadline);
      return;
    }
    std::string_view head(in.data(), head_end);
    size_t line_end = head.find("\r\n");
    std::string_view request_line = head.substr(0, line_end);
    auto parts = Split(request_line, ' ');
    if (parts.size() != 3 || !StartsWith(parts[2], "HTTP/1.")) {
      conn.Write(Response(400, "text/plain", "bad request line\n", true), deadline);
      return;
    }
    bool close = parts[2] == "HTTP/1.0";
    int64_t content_length = -1;
    bool chunked = false;
    for (const auto& raw :
         Split(line_end == std::string_view::npos ? "" : head.substr(line_end + 2), '\n')) {
      std::string_view line = Trim(raw);
      auto colon = line.find(':');
      if (colon == std::string_view::npos) {
        continue;
      }
      std::string name = ToLower(line.substr(0, colon));
      std::string_view value = Trim(line.substr(colon + 1));
      if (name == "content-length") {
        if (value.empty() || value.size() > 12 ||
            value.find_first_not_of("0123456789") != std::string_view::npos) {
          conn.Write(Response(400, "text/plain", "bad Content-Length\n", true), deadline);
          return;
        }
        content_length = std::stoll(std::string(value));
      } else if (name == "transfer-encoding") {
        chunked = true;
      } else if (name == "connection") {
        close = close || ToLower(value) == "close";
      }
    }
    if (chunked) {
      conn.Write(Response(501, "text/plain", "chunked request bodies are not supported\n", true),
                 deadline);
      return;
    }
    const std::string& method = parts[0];
    if (content_length < 0) {
      if (method == "POST") {
        conn.Write(Response(411, "text/plain", "Content-Length required\n", true), deadline);
        return;
      }
      content_length = 0;
    }
    if (static_cast<size_t>(content_length) > options_.max_body_bytes) {
      conn.Write(Response(413, "text/plain", "request body too large\n", true), deadline);
      return;
    }
    size_t body_start = head_end + 4;
    size_t need = body_start + static_cast<size_t>(content_length);
    while (in.size() < need) {
      if (!conn.Read(&in, deadline)) {
        return;
      }
    }
    std::string body = in.substr(body_start, static_cast<size_t>(content_length));
    std::string path = parts[1].substr(0, parts[1].find('?'));
    in.erase(0, need);
    metrics_.requests.fetch_add(1, std::memory_order_relaxed);
    ++served;
    HttpResponse resp = handler_(method, path, body);
    close = close || served >= options_.max_requests_per_connection;
    if (!conn.Write(Response(resp.status, resp.content_type, resp.body, close),
                    Clock::now() + options_.request_timeout) ||
        close) {
      return;
    }
  }
}

}  // namespace skiff::webhook

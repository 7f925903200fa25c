#include "common/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace skiff {

namespace {

using Clock = std::chrono::steady_clock;

// How long a closed-for-writing connection may keep sending (its rest is discarded), so the
// response is not destroyed by a reset for unread bytes.
constexpr std::chrono::milliseconds kLinger{1000};
// Accepting pauses this long when the process is out of file descriptors and nothing can be
// closed to make room.
constexpr std::chrono::milliseconds kAcceptBackoff{100};

bool ToSockaddr(const std::string& address, uint16_t port, sockaddr_storage* out, socklen_t* len) {
  std::memset(out, 0, sizeof *out);
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  std::string a = address;
  if (a.size() > 2 && a.front() == '[' && a.back() == ']') {
    a = a.substr(1, a.size() - 2);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (::inet_pton(AF_INET6, a.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

std::string HostPort(const std::string& address, uint16_t port) {
  bool v6 = address.find(':') != std::string::npos && address.front() != '[';
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

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
    case 431:
      return "Request Header Fields Too Large";
    case 504:
      return "Gateway Timeout";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

bool IsToken(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (!(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') &&
        std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

}  // namespace

int ListenExclusive(const std::string& address, uint16_t port, const std::string& flag,
                    std::string* error) {
  std::string where = HostPort(address, port) + (flag.empty() ? "" : " (" + flag + ")");
  sockaddr_storage ss;
  socklen_t len;
  if (!ToSockaddr(address, port, &ss, &len)) {
    *error = "invalid listen address \"" + address + "\"" + (flag.empty() ? "" : " (" + flag + ")");
    return -1;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "cannot listen on " + where + ": socket: " + std::strerror(errno);
    return -1;
  }
  int one = 1;
  // SO_REUSEADDR only lets a restarted process bind over connections in TIME_WAIT; Linux
  // still refuses a port that any socket listens on. SO_REUSEPORT is never set.
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    int e = errno;
    ::close(fd);
    *error = e == EADDRINUSE ? "address already in use: " + where
                             : "cannot listen on " + where + ": " + std::strerror(e);
    return -1;
  }
  return fd;
}

uint16_t BoundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return 0;
  }
  if (ss.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

namespace {

// Deferred answers on their way to the serving thread, which `wake_fd` wakes. Shared with
// the HttpReply functions, which may outlive the server: once `closed`, they do nothing.
struct Mailbox {
  struct Letter {
    int fd;
    uint64_t id;
    HttpResponse response;
  };
  std::mutex mu;
  bool closed = false;
  int wake_fd = -1;
  std::vector<Letter> letters;

  void Post(int fd, uint64_t id, HttpResponse response) {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) {
      return;
    }
    letters.push_back({fd, id, std::move(response)});
    uint64_t one = 1;
    ssize_t r = ::write(wake_fd, &one, sizeof one);
    (void)r;
  }
};

}  // namespace

// The serving thread and everything only it touches.
struct HttpServer::Loop {
  enum class State { kReading, kWaiting, kWriting, kLingering };
  struct Conn {
    int fd = -1;
    uint64_t id = 0;  // tells a reused fd from the connection a deferred answer is for
    State state = State::kReading;
    bool head_only = false;
    std::string in;
    std::string out;
    size_t written = 0;
    Clock::time_point deadline;
  };

  HttpServer* server;
  std::shared_ptr<Mailbox> mailbox = std::make_shared<Mailbox>();
  uint64_t next_id = 1;
  int epfd = -1;
  int wake_fd = -1;
  std::atomic<bool> stop{false};
  std::thread thread;
  std::unordered_map<int, Conn> conns;
  std::set<std::pair<Clock::time_point, int>> deadlines;
  bool accept_paused = false;
  Clock::time_point accept_resume;
  Clock::time_point last_eviction_log;

  explicit Loop(HttpServer* s) : server(s) {}

  [[nodiscard]] const HttpServerOptions& options() const { return server->options_; }
  HttpServerStats& stats() { return server->stats_; }

  void SetDeadline(Conn& c, Clock::time_point t) {
    deadlines.erase({c.deadline, c.fd});
    c.deadline = t;
    deadlines.insert({t, c.fd});
  }

  void Close(int fd) {
    auto it = conns.find(fd);
    if (it == conns.end()) {
      return;
    }
    deadlines.erase({it->second.deadline, fd});
    ::epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
    conns.erase(it);
    stats().active.fetch_sub(1, std::memory_order_relaxed);
  }

  // Closes the connection closest to its deadline; false if there is none.
  bool EvictOne(const char* why) {
    if (deadlines.empty()) {
      return false;
    }
    int fd = deadlines.begin()->second;
    Close(fd);
    stats().evicted.fetch_add(1, std::memory_order_relaxed);
    auto now = Clock::now();
    if (now - last_eviction_log > std::chrono::seconds(10)) {
      last_eviction_log = now;
      spdlog::warn("{} on {}: {}; closing the oldest unfinished connections to make room",
                   options().flag.empty() ? "http" : options().flag,
                   HostPort(options().address, server->port_), why);
    }
    return true;
  }

  void PauseAccept(Clock::time_point now) {
    accept_paused = true;
    accept_resume = now + kAcceptBackoff;
    epoll_event ev{};
    ev.events = 0;
    ev.data.fd = server->listen_fd_;
    ::epoll_ctl(epfd, EPOLL_CTL_MOD, server->listen_fd_, &ev);
  }

  void ResumeAccept() {
    accept_paused = false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = server->listen_fd_;
    ::epoll_ctl(epfd, EPOLL_CTL_MOD, server->listen_fd_, &ev);
  }

  void Accept() {
    for (int i = 0; i < 64; ++i) {
      int fd = ::accept4(server->listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) {
          continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
          if (EvictOne("out of file descriptors")) {
            continue;
          }
          PauseAccept(Clock::now());
        }
        return;  // EAGAIN, or an error that the next readiness event retries
      }
      if (conns.size() >= options().max_connections) {
        EvictOne("too many connections");
      }
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.fd = fd;
      if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ::close(fd);
        continue;
      }
      Conn& c = conns[fd];
      c.fd = fd;
      c.id = next_id++;
      c.deadline = Clock::now() + options().head_timeout;
      deadlines.insert({c.deadline, fd});
      stats().active.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void Respond(Conn& c, const HttpResponse& r, bool head_only) {
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + Reason(r.status) +
                      "\r\ncontent-type: " + r.content_type +
                      "\r\ncontent-length: " + std::to_string(r.body.size()) +
                      "\r\ncache-control: no-cache, max-age=0\r\nconnection: close\r\n";
    for (const auto& [k, v] : r.headers) {
      out += k + ": " + v + "\r\n";
    }
    out += "\r\n";
    if (!head_only) {
      out += r.body;
    }
    c.in.clear();
    c.in.shrink_to_fit();
    c.out = std::move(out);
    c.written = 0;
    c.state = State::kWriting;
    SetDeadline(c, Clock::now() + options().write_timeout);
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.fd = c.fd;
    ::epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
    Write(c);
  }

  void Write(Conn& c) {
    while (c.written < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
      if (n > 0) {
        c.written += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;  // EPOLLOUT continues it
      }
      Close(c.fd);
      return;
    }
    // All written: half-close, then discard whatever the client still sends for a moment.
    ::shutdown(c.fd, SHUT_WR);
    c.out.clear();
    c.out.shrink_to_fit();
    c.state = State::kLingering;
    SetDeadline(c, Clock::now() + std::min(kLinger, options().write_timeout));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = c.fd;
    ::epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
  }

  HttpResponse Error(int status, const std::string& message) {
    HttpResponse r;
    r.status = status;
    r.body = message + "\n";
    return r;
  }

  // With a complete head in c.in; `line_end` is the position of the request line's LF.
  void Handle(Conn& c, size_t line_end) {
    std::string_view line(c.in.data(), line_end);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
      Respond(c, Error(400, "malformed request line"), false);
      return;
    }
    HttpRequest req;
    req.method = std::string(line.substr(0, sp1));
    req.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
    std::string_view version = line.substr(sp2 + 1);
    if (!IsToken(req.method) || req.target.empty() || req.target[0] != '/') {
      Respond(c, Error(400, "malformed request line"), false);
      return;
    }
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
      Respond(c, Error(505, "HTTP/1.0 and HTTP/1.1 only"), false);
      return;
    }
    bool head_only = req.method == "HEAD";
    if (req.method != "GET" && !head_only) {
      HttpResponse r = Error(405, "only GET and HEAD");
      r.headers.emplace_back("allow", "GET, HEAD");
      Respond(c, r, false);
      return;
    }
    size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) {
      req.query = req.target.substr(q + 1);
    }
    HttpResponse r;
    try {
      r = server->handler_(req);
    } catch (const std::exception& e) {
      r = Error(500, std::string("internal error: ") + e.what());
    }
    stats().requests.fetch_add(1, std::memory_order_relaxed);
    if (r.deferred) {
      // The answer comes later, through the mailbox; meanwhile the connection only waits
      // (what the client still sends is discarded; its close is noticed).
      c.state = State::kWaiting;
      c.head_only = head_only;
      c.in.clear();
      SetDeadline(c, Clock::now() + options().defer_timeout);
      std::function<void(HttpReply)> deferred = std::move(r.deferred);
      deferred([mailbox = mailbox, fd = c.fd, id = c.id](HttpResponse response) {
        mailbox->Post(fd, id, std::move(response));
      });
      return;
    }
    Respond(c, r, head_only);
  }

  // Answers the deferred requests whose answers arrived (their connections still waiting).
  void DeliverLetters() {
    std::vector<Mailbox::Letter> letters;
    {
      std::lock_guard<std::mutex> lock(mailbox->mu);
      letters.swap(mailbox->letters);
    }
    for (auto& l : letters) {
      auto it = conns.find(l.fd);
      if (it != conns.end() && it->second.id == l.id && it->second.state == State::kWaiting) {
        l.response.deferred = nullptr;
        Respond(it->second, l.response, it->second.head_only);
      }
    }
  }

  void Read(Conn& c) {
    char buf[16384];
    bool eof = false;
    // Bounded per event (epoll is level-triggered): a client that keeps sending while its
    // answer lingers cannot keep this thread from the others.
    for (int reads = 0; reads < 16; ++reads) {
      size_t want = sizeof buf;
      if (c.state == State::kReading) {
        size_t room = options().max_head_bytes + 4 - c.in.size();  // a little over: 431
        if (room == 0) {
          break;
        }
        want = std::min(want, room);
      }
      ssize_t n = ::recv(c.fd, buf, want, 0);
      if (n > 0) {
        if (c.state == State::kReading) {
          c.in.append(buf, static_cast<size_t>(n));
        }
        continue;  // lingering: discarded
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      }
      eof = true;  // end of stream, or an error
      break;
    }
    if (c.state != State::kReading) {
      if (eof) {
        Close(c.fd);
      }
      return;
    }
    // The head ends with an empty line (CRLF CRLF; a bare LF LF is accepted as well).
    size_t head_len = std::string::npos;
    if (size_t e = c.in.find("\r\n\r\n"); e != std::string::npos) {
      head_len = e + 4;
    }
    if (size_t e = c.in.find("\n\n"); e != std::string::npos) {
      head_len = std::min(head_len, e + 2);
    }
    if (head_len == std::string::npos) {
      if (c.in.size() > options().max_head_bytes) {
        TooLarge(c);
      } else if (eof) {
        Close(c.fd);
      }
      return;
    }
    if (head_len > options().max_head_bytes) {
      TooLarge(c);
      return;
    }
    Handle(c, c.in.find('\n'));
  }

  void TooLarge(Conn& c) {
    stats().head_too_large.fetch_add(1, std::memory_order_relaxed);
    Respond(c,
            Error(431, "request head larger than " + std::to_string(options().max_head_bytes) +
                           " bytes"),
            false);
  }

  void OnDeadline(Conn& c) {
    if (c.state == State::kWaiting) {
      Respond(c, Error(504, "no answer in time"), c.head_only);
      return;
    }
    if (c.state == State::kReading) {
      int fd = c.fd;
      stats().head_timeouts.fetch_add(1, std::memory_order_relaxed);
      Respond(c, Error(408, "request head not received in time"), false);
      auto it = conns.find(fd);  // Respond may have closed it
      if (it != conns.end() && it->second.state == State::kWriting) {
        // The client does not read either: do not wait the whole write timeout for it.
        SetDeadline(it->second, Clock::now() + std::min(kLinger, options().write_timeout));
      }
      return;
    }
    Close(c.fd);
  }

  void Run() {
    constexpr int kMaxEvents = 64;
    epoll_event events[kMaxEvents];
    while (!stop.load(std::memory_order_acquire)) {
      auto now = Clock::now();
      int timeout = -1;
      if (!deadlines.empty()) {
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadlines.begin()->first - now);
        timeout = static_cast<int>(std::max<int64_t>(0, ms.count()));
      }
      if (accept_paused) {
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(accept_resume - now);
        int t = static_cast<int>(std::max<int64_t>(0, ms.count()));
        timeout = timeout < 0 ? t : std::min(timeout, t);
      }
      int n = ::epoll_wait(epfd, events, kMaxEvents, timeout);
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == wake_fd) {
          uint64_t v;
          ssize_t r = ::read(wake_fd, &v, sizeof v);
          (void)r;
          DeliverLetters();
          continue;
        }
        if (fd == server->listen_fd_) {
          Accept();
          continue;
        }
        auto it = conns.find(fd);
        if (it == conns.end()) {
          continue;
        }
        Conn& c = it->second;
        if (c.state == State::kWriting) {
          if ((events[i].events & (EPOLLERR | EPOLLHUP)) != 0) {
            Close(fd);
          } else {
            Write(c);
          }
        } else {
          Read(c);
        }
      }
      now = Clock::now();
      while (!deadlines.empty() && deadlines.begin()->first <= now) {
        int fd = deadlines.begin()->second;
        auto it = conns.find(fd);
        if (it == conns.end()) {
          deadlines.erase(deadlines.begin());
          continue;
        }
        OnDeadline(it->second);
      }
      if (accept_paused && now >= accept_resume) {
        ResumeAccept();
      }
    }
    while (!conns.empty()) {
      Close(conns.begin()->first);
    }
  }
};

HttpServer::HttpServer(HttpServerOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)), port_(options_.port) {}

HttpServer::~HttpServer() { Stop(); }

bool HttpServer::Listen(std::string* error) {
  listen_fd_ = ListenExclusive(options_.address, options_.port, options_.flag, error);
  if (listen_fd_ < 0) {
    return false;
  }
  port_ = BoundPort(listen_fd_);
  return true;
}

void HttpServer::Start() {
  loop_ = std::make_unique<Loop>(this);
  loop_->epfd = ::epoll_create1(EPOLL_CLOEXEC);
  loop_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  loop_->mailbox->wake_fd = loop_->wake_fd;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = loop_->wake_fd;
  ::epoll_ctl(loop_->epfd, EPOLL_CTL_ADD, loop_->wake_fd, &ev);
  ev.data.fd = listen_fd_;
  ::epoll_ctl(loop_->epfd, EPOLL_CTL_ADD, listen_fd_, &ev);
  loop_->thread = std::thread([this] { loop_->Run(); });
}

void HttpServer::Stop() {
  if (loop_ != nullptr) {
    loop_->stop.store(true, std::memory_order_release);
    uint64_t one = 1;
    ssize_t r = ::write(loop_->wake_fd, &one, sizeof one);
    (void)r;
    if (loop_->thread.joinable()) {
      loop_->thread.join();
    }
    {
      std::lock_guard<std::mutex> lock(loop_->mailbox->mu);
      loop_->mailbox->closed = true;  // later answers are dropped, not written to a closed fd
    }
    ::close(loop_->wake_fd);
    ::close(loop_->epfd);
    loop_.reset();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
}

}  // namespace skiff

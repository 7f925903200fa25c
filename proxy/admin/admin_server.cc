#include "proxy/admin/admin_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "proxy/http/parser.h"
#include "proxy/net/socket.h"

namespace skiff::proxy {

AdminServer::AdminServer(std::string address, uint16_t port, Handler handler)
    : address_(std::move(address)), port_(port), handler_(std::move(handler)) {}

AdminServer::~AdminServer() { Stop(); }

bool AdminServer::Start(std::string* error) {
  listen_fd_ = net::Listen(address_, port_, error);
  if (listen_fd_ < 0) {
    return false;
  }
  port_ = net::LocalPort(listen_fd_);
  thread_ = std::thread([this] { Serve(); });
  return true;
}

void AdminServer::Stop() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
}

void AdminServer::Serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) {
      continue;
    }
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      HandleConnection(fd);
      ::close(fd);
    }
  }
}

void AdminServer::HandleConnection(int fd) {
  std::string in;
  http::RequestParser parser;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  http::ParseResult r;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
      return;
    }
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      return;
    }
    in.append(buf, static_cast<size_t>(n));
    r = parser.Parse(in);
    if (r.status != http::ParseStatus::kIncomplete) {
      break;
    }
  }
  Response resp;
  if (r.status == http::ParseStatus::kError) {
    resp.status = r.error_status;
    resp.body = std::string(r.error_reason) + "\n";
  } else {
    std::string path(parser.head().target);
    resp = handler_(path.substr(0, path.find('?')));
  }
  std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " " +
                    (resp.status == 200 ? "OK" : "Error") +
                    "\r\ncontent-type: " + resp.content_type +
                    "\r\ncontent-length: " + std::to_string(resp.body.size()) +
                    "\r\nconnection: close\r\n\r\n" + resp.body;
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) {
        continue;
      }
      return;
    }
    off += static_cast<size_t>(n);
  }
}

}  // namespace skiff::proxy

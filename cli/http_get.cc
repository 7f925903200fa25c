#include "cli/http_get.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace skiff::cli {

namespace {

constexpr size_t kMaxBody = size_t{256} * 1024 * 1024;  // a config dump of a very large mesh

bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  if (!address.empty() && address[0] == '[') {
    auto close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return false;
    }
    *host = address.substr(1, close - 1);
    *port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      return false;
    }
    *host = address.substr(0, colon);
    *port = address.substr(colon + 1);
  }
  return !port->empty();
}

}  // namespace

bool HttpGet(const std::string& address, const std::string& path, int* status, std::string* body,
             std::string* error) {
  std::string host;
  std::string port;
  if (!SplitAddress(address, &host, &port)) {
    *error = "expected HOST:PORT, got \"" + address + "\"";
    return false;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    *error = "cannot resolve " + address + ": " + ::gai_strerror(rc);
    return false;
  }
  int fd = -1;
  std::string connect_error = "no address";
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      connect_error = std::strerror(errno);
      continue;
    }
    timeval tv{10, 0};  // connect, each read and each write
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      connect_error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) {
    *error = "cannot connect to " + address + ": " + connect_error;
    return false;
  }
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + address +
                        "\r\nConnection: close\r\nUser-Agent: skiffctl\r\n\r\n";
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      *error = "cannot send to " + address + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) {
      break;
    }
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      *error = "no answer from " + address + ": " + std::strerror(errno);
      ::close(fd);
      return false;
    }
    response.append(buf, static_cast<size_t>(n));
    if (response.size() > kMaxBody) {
      *error = "the answer from " + address + " is larger than 256 MiB";
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  auto head_end = response.find("\r\n\r\n");
  if (response.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos ||
      response.size() < 12) {
    *error = "not an HTTP answer from " + address;
    return false;
  }
  *status = std::atoi(response.substr(9, 3).c_str());
  *body = response.substr(head_end + 4);
  // The admin server sends Content-Length; a body cut short is an error.
  std::string head = response.substr(0, head_end);
  for (auto& c : head) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (auto cl = head.find("\r\ncontent-length:"); cl != std::string::npos) {
    size_t want = std::strtoull(head.c_str() + cl + 17, nullptr, 10);
    if (body->size() < want) {
      *error = "the answer from " + address + " ended early";
      return false;
    }
    body->resize(want);
  }
  return true;
}

}  // namespace skiff::cli

#include "proxy/net/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

namespace skiff::net {

namespace {
bool ToSockaddr(const std::string& address, uint16_t port, sockaddr_storage* out, socklen_t* len) {
  std::memset(out, 0, sizeof *out);
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  std::string a = address;
  if (a.size() > 2 && a.front() == '[' && a.back() == ']') {
    a = a.substr(1, a.size() - 2);
  }
  if (::inet_pton(AF_INET6, a.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}
}  // namespace

int Listen(const std::string& address, uint16_t port, std::string* error) {
  sockaddr_storage ss;
  socklen_t len;
  if (!ToSockaddr(address, port, &ss, &len)) {
    *error = "invalid listen address \"" + address + "\"";
    return -1;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 4096) != 0) {
    int err = errno;
    std::string key = address + ":" + std::to_string(port);
    *error = err == EADDRINUSE ? "address already in use: " + key
                               : "bind " + key + ": " + std::strerror(err);
    ::close(fd);
    return -1;
  }
  return fd;
}

namespace {
std::mutex& SharedMu() {
  static auto* mu = new std::mutex();
  return *mu;
}
std::map<std::string, int>& SharedPorts() {
  static auto* ports = new std::map<std::string, int>();
  return *ports;
}
std::string PortKey(const std::string& address, uint16_t port) {
  return address + ":" + std::to_string(port);
}
}  // namespace

int ListenShared(const std::string& address, uint16_t port, std::string* error) {
  std::lock_guard<std::mutex> lock(SharedMu());
  std::string key = PortKey(address, port);
  auto& count = SharedPorts()[key];
  if (count == 0) {
    // Nobody in this process holds it yet: any socket on it belongs to someone else.
    sockaddr_storage ss;
    socklen_t len;
    if (!ToSockaddr(address, port, &ss, &len)) {
      SharedPorts().erase(key);
      *error = "invalid listen address \"" + address + "\"";
      return -1;
    }
    int probe = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      SharedPorts().erase(key);
      *error = std::string("socket: ") + std::strerror(errno);
      return -1;
    }
    int one = 1;
    ::setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(probe, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      int err = errno;
      ::close(probe);
      SharedPorts().erase(key);
      *error = err == EADDRINUSE ? "address already in use: " + key
                                 : "bind " + key + ": " + std::strerror(err);
      return -1;
    }
    ::close(probe);
  }
  int fd = Listen(address, port, error);
  if (fd < 0) {
    if (count == 0) {
      SharedPorts().erase(key);
    }
    return -1;
  }
  ++count;
  return fd;
}

void CloseShared(int fd, const std::string& address, uint16_t port) {
  std::lock_guard<std::mutex> lock(SharedMu());
  ::close(fd);
  auto it = SharedPorts().find(PortKey(address, port));
  if (it != SharedPorts().end() && --it->second <= 0) {
    SharedPorts().erase(it);
  }
}

int ConnectNonBlocking(const std::string& address, uint16_t port, std::string* error,
                       const std::string& source) {
  sockaddr_storage ss;
  socklen_t len;
  if (!ToSockaddr(address, port, &ss, &len)) {
    *error = "invalid endpoint address \"" + address + "\"";
    return -1;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  SetNoDelay(fd);
  if (!source.empty()) {
    sockaddr_storage src;
    socklen_t src_len;
    if (!ToSockaddr(source, 0, &src, &src_len) || src.ss_family != ss.ss_family) {
      *error = "invalid source address \"" + source + "\"";
      ::close(fd);
      return -1;
    }
    // Any free port: bind without one, and let connect pick (IP_BIND_ADDRESS_NO_PORT).
    int one = 1;
    ::setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&src), src_len) != 0) {
      *error = "bind " + source + ": " + std::strerror(errno);
      ::close(fd);
      return -1;
    }
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    *error = std::string("connect: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

namespace {
bool FromSockaddr(const sockaddr_storage& ss, std::string* address, uint16_t* port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    *port = ntohs(v4->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    *port = ntohs(v6->sin6_port);
  } else {
    return false;
  }
  *address = buf;
  return true;
}
}  // namespace

bool OriginalDestination(int fd, std::string* address, uint16_t* port) {
  constexpr int kSoOriginalDst = 80;  // SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST
  sockaddr_storage ss{};
  socklen_t len = sizeof(sockaddr_in);
  if (::getsockopt(fd, SOL_IP, kSoOriginalDst, &ss, &len) == 0) {
    return FromSockaddr(ss, address, port);
  }
  len = sizeof(sockaddr_in6);
  if (::getsockopt(fd, SOL_IPV6, kSoOriginalDst, &ss, &len) == 0) {
    return FromSockaddr(ss, address, port);
  }
  return false;
}

bool LocalAddress(int fd, std::string* address, uint16_t* port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return false;
  }
  return FromSockaddr(ss, address, port);
}

uint16_t LocalPort(int fd) {
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

std::string PeerAddress(const sockaddr_storage& addr) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr, buf, sizeof buf);
  } else if (addr.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr, buf,
                sizeof buf);
  }
  return buf;
}

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace skiff::net

#pragma once
// Thin helpers over BSD sockets: non-blocking listeners (SO_REUSEPORT) and connects.
#include <netinet/in.h>

#include <cstdint>
#include <string>

namespace skiff::net {

// Returns a non-blocking listening socket bound to address:port with SO_REUSEADDR and
// SO_REUSEPORT, or -1 with `error` set.
int Listen(const std::string& address, uint16_t port, std::string* error);
// As Listen, but the port is shared only among this process's own sockets (one per
// worker): the first socket of the process on address:port is bound only after a probe
// bind without SO_REUSEPORT succeeded, so a port that another process holds (with or
// without SO_REUSEPORT) is refused with "address already in use: ADDRESS:PORT". Give the
// socket back with CloseShared.
int ListenShared(const std::string& address, uint16_t port, std::string* error);
void CloseShared(int fd, const std::string& address, uint16_t port);
// Starts a non-blocking connect; returns the fd (connect in progress or done) or -1.
// A non-empty `source` binds the local address first (any port).
int ConnectNonBlocking(const std::string& address, uint16_t port, std::string* error,
                       const std::string& source = {});
// The original destination of a connection that iptables REDIRECTed (SO_ORIGINAL_DST,
// IPv4 and IPv6): false when it has none.
bool OriginalDestination(int fd, std::string* address, uint16_t* port);
// The local address and port of a socket.
bool LocalAddress(int fd, std::string* address, uint16_t* port);
// The local port a socket is bound to.
uint16_t LocalPort(int fd);
// "a.b.c.d" or the IPv6 text of a peer address.
std::string PeerAddress(const sockaddr_storage& addr);
void SetNoDelay(int fd);

}  // namespace skiff::net

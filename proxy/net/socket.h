#pragma once
// Thin helpers over BSD sockets: non-blocking listeners (SO_REUSEPORT) and connects.
#include <netinet/in.h>

#include <cstdint>
#include <string>

namespace skiff::net {

// Returns a non-blocking listening socket bound to address:port with SO_REUSEADDR and
// SO_REUSEPORT, or -1 with `error` set.
int Listen(const std::string& address, uint16_t port, std::string* error);
// Starts a non-blocking connect; returns the fd (connect in progress or done) or -1.
int ConnectNonBlocking(const std::string& address, uint16_t port, std::string* error);
// The local port a socket is bound to.
uint16_t LocalPort(int fd);
// "a.b.c.d" or the IPv6 text of a peer address.
std::string PeerAddress(const sockaddr_storage& addr);
void SetNoDelay(int fd);

}  // namespace skiff::net

#include "proxy/net/transport.h"

#include <sys/socket.h>
#include <unistd.h>

namespace skiff::net {

PlainTransport::~PlainTransport() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void PlainTransport::ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }

}  // namespace skiff::net

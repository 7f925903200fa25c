#pragma once
// The byte transport under a codec: plain TCP today; TLS plugs in here as a second
// implementation. It owns the socket.
#include <sys/types.h>

#include <cstdint>
#include <memory>

#include "proxy/net/buffer.h"

namespace skiff::net {

class Transport {
 public:
  virtual ~Transport() = default;
  [[nodiscard]] virtual int fd() const = 0;
  // Reads once into `buf`: bytes read, 0 on EOF, -1 when nothing is available now, -2 on
  // an error. `*filled` is set when the read used all the space offered (read again).
  virtual ssize_t Read(Buffer* buf, bool* filled) = 0;
  // Writes what it can of `buf`: bytes written (possibly 0), or -1 on an error.
  virtual ssize_t Write(Buffer* buf) = 0;
  // Ends the sending side (TCP FIN), keeping the receiving side open.
  virtual void ShutdownWrite() = 0;
  // Before a close: tells the peer the stream ends (TLS close_notify); nothing for TCP,
  // whose FIN the close sends.
  virtual void SendCloseNotify() {}
  // Bytes of its own wait for the socket (TLS records, a handshake): keep writing.
  [[nodiscard]] virtual bool wants_write() const { return false; }
  // The transport's own handshake (TLS) is over; a TCP socket has none.
  [[nodiscard]] virtual bool handshake_done() const { return true; }
  // The bytes are encrypted (TLS): the request's scheme is https.
  [[nodiscard]] virtual bool secure() const { return false; }
  // Input read from the socket already waits inside the transport (TLS records not yet
  // decrypted or returned): Read() has more to give without a socket event.
  [[nodiscard]] virtual bool has_pending_input() const { return false; }
};

// A TCP socket as it is.
class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(int fd) : fd_(fd) {}
  ~PlainTransport() override;
  PlainTransport(const PlainTransport&) = delete;
  PlainTransport& operator=(const PlainTransport&) = delete;
  [[nodiscard]] int fd() const override { return fd_; }
  ssize_t Read(Buffer* buf, bool* filled) override { return buf->ReadFrom(fd_, filled); }
  ssize_t Write(Buffer* buf) override { return buf->WriteTo(fd_); }
  void ShutdownWrite() override;

 private:
  int fd_;
};

}  // namespace skiff::net

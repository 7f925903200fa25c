#pragma once
// Accepts connections on one listening socket of one worker. When the process runs out of
// file descriptors (EMFILE / ENFILE) it stops accepting for a short back-off instead of
// spinning on a socket that stays readable, and tells its owner (which counts and logs
// it); accepting resumes by itself.
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "proxy/net/dispatcher.h"

namespace skiff::net {

class Listener final : public IoHandler {
 public:
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // A new non-blocking connection; the callee owns `fd`.
    virtual void OnAccept(int fd, const sockaddr_storage& peer) = 0;
    // accept() failed for lack of descriptors; accepting pauses for the back-off.
    virtual void OnAcceptFdExhausted() = 0;
  };

  static constexpr std::chrono::milliseconds kFdBackoff{100};

  // Takes ownership of the listening socket `fd` (from ListenShared).
  Listener(Dispatcher& dispatcher, int fd, std::string address, uint16_t port,
           Callbacks& callbacks);
  ~Listener() override;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  void OnEvents(uint32_t events) override;
  [[nodiscard]] int fd() const { return fd_; }

 private:
  void Resume();

  Dispatcher& dispatcher_;
  int fd_;
  std::string address_;
  uint16_t port_;
  Callbacks& callbacks_;
  Timer backoff_;
  bool paused_ = false;
};

}  // namespace skiff::net

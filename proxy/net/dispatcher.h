#pragma once
// What the request path needs from an event loop: readiness events on file descriptors,
// timers, work deferred to the end of the current turn, and the loop's clock. The epoll
// EventLoop implements it; unit tests use a fake one whose clock they move by hand, so
// timeouts, back-off and delays run in simulated time with no sockets and no sleeps.
#include <chrono>
#include <cstdint>
#include <functional>

#include "proxy/net/timer.h"

namespace skiff::net {

// Something registered with a dispatcher for readiness events on one fd.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual void OnEvents(uint32_t events) = 0;
};

class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  // Readiness interest (EPOLLIN, EPOLLOUT, ...) of `fd`, delivered to `handler`.
  virtual void Add(int fd, uint32_t events, IoHandler* handler) = 0;
  virtual void Modify(int fd, uint32_t events, IoHandler* handler) = 0;
  virtual void Remove(int fd) = 0;
  // Arms `timer` to fire after `delay` (re-arming cancels the previous schedule).
  virtual void Schedule(Timer* timer, std::chrono::milliseconds delay) = 0;
  // Runs `fn` at the end of the current turn, after every callback of this turn returned
  // (e.g. to delete an object whose callback is on the stack).
  virtual void Defer(std::function<void()> fn) = 0;
  // The time of the current turn.
  [[nodiscard]] virtual Clock::time_point now() const = 0;
};

}  // namespace skiff::net

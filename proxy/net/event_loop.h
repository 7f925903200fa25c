#pragma once
// One epoll loop per worker thread, with a hashed timer wheel. Nothing here is thread-safe
// except Wake(): every handler and timer runs on the loop's own thread.
#include <sys/epoll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "proxy/net/dispatcher.h"
#include "proxy/net/timer.h"

namespace skiff::net {

class EventLoop final : public Dispatcher {
 public:
  EventLoop();
  ~EventLoop() override;
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void Add(int fd, uint32_t events, IoHandler* handler) override;
  void Modify(int fd, uint32_t events, IoHandler* handler) override;
  void Remove(int fd) override;
  void Schedule(Timer* timer, std::chrono::milliseconds delay) override {
    wheel_.Schedule(timer, delay, now_);
  }
  void Defer(std::function<void()> fn) override { deferred_.push_back(std::move(fn)); }
  // Runs what Defer() queued; for shutdown, after Run() has returned.
  void RunDeferred();

  // Runs until Stop(); `on_iteration` runs once per loop turn on the loop thread.
  void Run(const std::function<void()>& on_iteration = {});
  void Stop();
  // Thread-safe: interrupts epoll_wait so that on_iteration runs soon.
  void Wake();

  [[nodiscard]] Clock::time_point now() const override { return now_; }

 private:
  class Waker;
  int epfd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  Clock::time_point now_;
  TimerWheel wheel_;
  std::vector<std::function<void()>> deferred_;
  std::vector<std::function<void()>> deferred_running_;
  std::unique_ptr<IoHandler> waker_;
};

}  // namespace skiff::net

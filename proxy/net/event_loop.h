#pragma once
// One epoll loop per worker thread, with a hashed timer wheel. Nothing here is thread-safe
// except Wake(): every handler and timer runs on the loop's own thread.
#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace skiff::net {

using Clock = std::chrono::steady_clock;

// Something registered with the loop for readiness events on one fd.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual void OnEvents(uint32_t events) = 0;
};

class TimerWheel;

// An intrusive timer: embed it in the object it times out. Re-arming or destroying it
// cancels the previous schedule.
class Timer {
 public:
  explicit Timer(std::function<void()> callback = {}) : callback_(std::move(callback)) {}
  ~Timer() { Cancel(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void SetCallback(std::function<void()> callback) { callback_ = std::move(callback); }
  void Cancel();
  [[nodiscard]] bool armed() const { return wheel_ != nullptr; }

 private:
  friend class TimerWheel;
  std::function<void()> callback_;
  TimerWheel* wheel_ = nullptr;
  Timer* prev_ = nullptr;
  Timer* next_ = nullptr;
  uint64_t expires_tick_ = 0;
};

// Hashed timing wheel with 1 ms ticks and 4096 slots; timers further out than one turn
// wait in their slot for the right turn.
class TimerWheel {
 public:
  explicit TimerWheel(Clock::time_point now);
  ~TimerWheel();
  void Schedule(Timer* timer, std::chrono::milliseconds delay, Clock::time_point now);
  // Runs every timer that has expired by `now`.
  void Advance(Clock::time_point now);
  // Milliseconds until the next timer may fire (capped), or -1 when there is none.
  [[nodiscard]] int NextTimeoutMs() const;

 private:
  friend class Timer;
  static constexpr size_t kSlots = 4096;
  void Unlink(Timer* t);
  [[nodiscard]] uint64_t TickOf(Clock::time_point t) const;

  Clock::time_point origin_;
  uint64_t current_tick_ = 0;
  size_t count_ = 0;
  // No timer expires before this tick (it may be early after cancellations, never late),
  // so the slot scan runs only when the hint has passed, not on every loop turn.
  mutable uint64_t next_hint_ = 0;
  std::vector<Timer*> slots_;  // heads of intrusive lists
};

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  void Add(int fd, uint32_t events, IoHandler* handler);
  void Modify(int fd, uint32_t events, IoHandler* handler);
  void Remove(int fd);

  void Schedule(Timer* timer, std::chrono::milliseconds delay) {
    wheel_.Schedule(timer, delay, now_);
  }
  // Runs `fn` on the loop thread at the end of the current iteration (safe to call from
  // handlers, e.g. to delete objects after their callbacks return).
  void Defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }
  // Runs what Defer() queued; for shutdown, after Run() has returned.
  void RunDeferred();

  // Runs until Stop(); `on_iteration` runs once per loop turn on the loop thread.
  void Run(const std::function<void()>& on_iteration = {});
  void Stop();
  // Thread-safe: interrupts epoll_wait so that on_iteration runs soon.
  void Wake();

  [[nodiscard]] Clock::time_point now() const { return now_; }

 private:
  class Waker;
  int epfd_ = -1;
  int wake_fd_ = -1;
  bool running_ = false;
  Clock::time_point now_;
  TimerWheel wheel_;
  std::vector<std::function<void()>> deferred_;
  std::unique_ptr<IoHandler> waker_;
};

}  // namespace skiff::net

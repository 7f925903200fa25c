#pragma once
// Intrusive timers on a hashed timing wheel. Nothing here is thread-safe: a wheel and its
// timers belong to one dispatcher's thread. Time is passed in, so tests drive it.
#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

namespace skiff::net {

using Clock = std::chrono::steady_clock;

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
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;
  void Schedule(Timer* timer, std::chrono::milliseconds delay, Clock::time_point now);
  // Runs every timer that has expired by `now`.
  void Advance(Clock::time_point now);
  // Milliseconds until the next timer may fire (capped), or -1 when there is none.
  [[nodiscard]] int NextTimeoutMs() const;
  [[nodiscard]] size_t size() const { return count_; }

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

}  // namespace skiff::net

#include "proxy/net/timer.h"

#include <algorithm>

namespace skiff::net {

void Timer::Cancel() {
  if (wheel_ != nullptr) {
    wheel_->Unlink(this);
  }
}

TimerWheel::TimerWheel(Clock::time_point now) : origin_(now), slots_(kSlots, nullptr) {}

TimerWheel::~TimerWheel() {
  for (auto& head : slots_) {
    while (head != nullptr) {
      Unlink(head);
    }
  }
}

uint64_t TimerWheel::TickOf(Clock::time_point t) const {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - origin_).count();
  return ms < 0 ? 0 : static_cast<uint64_t>(ms);
}

void TimerWheel::Unlink(Timer* t) {
  if (t->prev_ != nullptr) {
    t->prev_->next_ = t->next_;
  } else {
    slots_[t->expires_tick_ % kSlots] = t->next_;
  }
  if (t->next_ != nullptr) {
    t->next_->prev_ = t->prev_;
  }
  t->prev_ = t->next_ = nullptr;
  t->wheel_ = nullptr;
  --count_;
}

void TimerWheel::Schedule(Timer* t, std::chrono::milliseconds delay, Clock::time_point now) {
  t->Cancel();
  uint64_t tick = TickOf(now) + static_cast<uint64_t>(delay.count() < 1 ? 1 : delay.count());
  if (tick <= current_tick_) {
    tick = current_tick_ + 1;
  }
  t->expires_tick_ = tick;
  t->wheel_ = this;
  Timer*& head = slots_[tick % kSlots];
  t->prev_ = nullptr;
  t->next_ = head;
  if (head != nullptr) {
    head->prev_ = t;
  }
  head = t;
  ++count_;
  if (count_ == 1 || tick < next_hint_) {
    next_hint_ = tick;
  }
}

void TimerWheel::Advance(Clock::time_point now) {
  uint64_t target = TickOf(now);
  std::vector<Timer*> due;
  while (current_tick_ < target && count_ > 0) {
    ++current_tick_;
    for (Timer* t = slots_[current_tick_ % kSlots]; t != nullptr;) {
      Timer* next = t->next_;
      if (t->expires_tick_ <= current_tick_) {
        Unlink(t);
        due.push_back(t);
      }
      t = next;
    }
    // Fire after unlinking the slot so callbacks may re-arm or destroy other timers.
    for (size_t i = 0; i < due.size(); ++i) {
      Timer* t = due[i];
      if (t->callback_) {
        t->callback_();
      }
    }
    due.clear();
  }
  if (count_ == 0) {
    current_tick_ = target;
  }
}

int TimerWheel::NextTimeoutMs() const {
  if (count_ == 0) {
    return -1;
  }
  if (next_hint_ > current_tick_) {
    return static_cast<int>(std::min<uint64_t>(next_hint_ - current_tick_, kSlots));
  }
  // Scan ahead for the first timer due within one turn of the wheel.
  for (uint64_t i = 1; i <= kSlots; ++i) {
    for (Timer* t = slots_[(current_tick_ + i) % kSlots]; t != nullptr; t = t->next_) {
      if (t->expires_tick_ <= current_tick_ + i) {
        next_hint_ = current_tick_ + i;
        return static_cast<int>(i);
      }
    }
  }
  next_hint_ = current_tick_ + kSlots;
  return static_cast<int>(kSlots);
}

}  // namespace skiff::net

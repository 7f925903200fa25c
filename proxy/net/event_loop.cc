#include "proxy/net/event_loop.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace skiff::net {

class EventLoop::Waker : public IoHandler {
 public:
  explicit Waker(int fd) : fd_(fd) {}
  void OnEvents(uint32_t /*events*/) override {
    uint64_t v;
    while (::read(fd_, &v, sizeof v) > 0) {
    }
  }

 private:
  int fd_;
};

EventLoop::EventLoop() : now_(Clock::now()), wheel_(now_) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd_ < 0 || wake_fd_ < 0) {
    throw std::runtime_error(std::string("epoll/eventfd: ") + std::strerror(errno));
  }
  waker_ = std::make_unique<Waker>(wake_fd_);
  Add(wake_fd_, EPOLLIN, waker_.get());
}

EventLoop::~EventLoop() {
  ::close(wake_fd_);
  ::close(epfd_);
}

void EventLoop::Add(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    throw std::runtime_error(std::string("epoll_ctl add: ") + std::strerror(errno));
  }
}

void EventLoop::Modify(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  ::epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
}

void EventLoop::Remove(int fd) { ::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

void EventLoop::Run(const std::function<void()>& on_iteration) {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (!stop_.load(std::memory_order_acquire)) {
    if (on_iteration) {
      on_iteration();
    }
    int timeout = wheel_.NextTimeoutMs();
    if (!deferred_.empty()) {
      timeout = 0;
    }
    int n = ::epoll_wait(epfd_, events, kMaxEvents, timeout < 0 ? 1000 : timeout);
    now_ = Clock::now();
    for (int i = 0; i < n; ++i) {
      static_cast<IoHandler*>(events[i].data.ptr)->OnEvents(events[i].events);
    }
    wheel_.Advance(now_);
    RunDeferred();
  }
}

void EventLoop::RunDeferred() {
  while (!deferred_.empty()) {
    // Swapping keeps both vectors' memory: no allocation per turn.
    deferred_running_.swap(deferred_);
    for (auto& fn : deferred_running_) {
      fn();
    }
    deferred_running_.clear();
  }
}

void EventLoop::Stop() {
  stop_.store(true, std::memory_order_release);  // sticky: a Stop() before Run() counts
  Wake();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

}  // namespace skiff::net

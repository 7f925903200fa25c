#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "proxy/net/event_loop.h"

using namespace std::chrono_literals;
using skiff::net::Clock;
using skiff::net::Timer;
using skiff::net::TimerWheel;

TEST_CASE("timers fire in order once their time has come, driven by an injected clock") {
  auto t0 = Clock::time_point{} + 1h;
  TimerWheel wheel(t0);
  std::vector<int> fired;
  Timer a([&] { fired.push_back(1); });
  Timer b([&] { fired.push_back(2); });
  Timer c([&] { fired.push_back(3); });
  wheel.Schedule(&a, 10ms, t0);
  wheel.Schedule(&b, 5ms, t0);
  wheel.Schedule(&c, 10s, t0);  // beyond one turn of the wheel
  CHECK(wheel.NextTimeoutMs() == 5);
  wheel.Advance(t0 + 4ms);
  CHECK(fired.empty());
  wheel.Advance(t0 + 10ms);
  CHECK(fired == std::vector<int>{2, 1});
  wheel.Advance(t0 + 9s);
  CHECK(fired.size() == 2);
  wheel.Advance(t0 + 10s);
  CHECK(fired == std::vector<int>{2, 1, 3});
  CHECK(wheel.NextTimeoutMs() == -1);
}

TEST_CASE("cancelled and re-armed timers do not fire early") {
  auto t0 = Clock::time_point{} + 1h;
  TimerWheel wheel(t0);
  int fired = 0;
  Timer a([&] { ++fired; });
  wheel.Schedule(&a, 10ms, t0);
  a.Cancel();
  wheel.Advance(t0 + 20ms);
  CHECK(fired == 0);
  wheel.Schedule(&a, 10ms, t0 + 20ms);
  wheel.Schedule(&a, 50ms, t0 + 20ms);  // re-arming replaces the first schedule
  wheel.Advance(t0 + 40ms);
  CHECK(fired == 0);
  wheel.Advance(t0 + 70ms);
  CHECK(fired == 1);
  {
    Timer gone([&] { ++fired; });
    wheel.Schedule(&gone, 5ms, t0 + 70ms);
  }  // destroying a timer cancels it
  wheel.Advance(t0 + 100ms);
  CHECK(fired == 1);
}

TEST_CASE("a timer callback may re-arm itself") {
  auto t0 = Clock::time_point{} + 1h;
  TimerWheel wheel(t0);
  int fired = 0;
  auto now = t0;
  Timer a;
  a.SetCallback([&] {
    if (++fired < 3) {
      wheel.Schedule(&a, 10ms, now);
    }
  });
  wheel.Schedule(&a, 10ms, now);
  for (int i = 1; i <= 5; ++i) {
    now = t0 + std::chrono::milliseconds(10 * i);
    wheel.Advance(now);
  }
  CHECK(fired == 3);
}

TEST_CASE("event loop: a Stop() that comes before Run() still stops it") {
  skiff::net::EventLoop loop;
  loop.Stop();
  std::promise<void> done;
  auto finished = done.get_future();
  std::thread t([&] {
    loop.Run();
    done.set_value();
  });
  bool stopped = finished.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!stopped) {
    loop.Stop();  // unblock the thread so the test can fail instead of hanging
  }
  t.join();
  CHECK(stopped);
}

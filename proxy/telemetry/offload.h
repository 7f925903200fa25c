#pragma once
// Moves text produced on the workers (access-log lines, span JSON) to a background thread
// that writes it out, so no worker ever blocks on a file, a pipe or a collector. Workers
// hand over whole batches (once per loop turn), not single lines; the queue is bounded and
// what does not fit is dropped and counted.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace skiff::telemetry {

class Offload {
 public:
  // `sink` runs on the background thread with one or more batches joined; it returns false
  // when the batch could not be delivered (counted as failed). `flush_every` bounds how long
  // text waits before the sink sees it.
  Offload(std::string name, size_t max_queued_bytes, std::chrono::milliseconds flush_every,
          std::function<bool(std::vector<std::string>&)> sink);
  ~Offload();
  Offload(const Offload&) = delete;
  Offload& operator=(const Offload&) = delete;

  // Thread-safe. Takes the batch (leaves it empty); `items` is how many records it holds.
  void Submit(std::string* batch, uint64_t items);
  // Delivers what is queued and stops the thread.
  void Stop();

  [[nodiscard]] uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  [[nodiscard]] uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }
  [[nodiscard]] uint64_t failed() const { return failed_.load(std::memory_order_relaxed); }

 private:
  void Run();

  std::string name_;
  size_t max_queued_bytes_;
  std::chrono::milliseconds flush_every_;
  std::function<bool(std::vector<std::string>&)> sink_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> queue_;
  std::vector<uint64_t> counts_;
  size_t queued_bytes_ = 0;
  bool stop_ = false;
  std::atomic<uint64_t> dropped_{0}, delivered_{0}, failed_{0};
  std::thread thread_;
};

}  // namespace skiff::telemetry

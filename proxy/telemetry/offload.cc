#include "proxy/telemetry/offload.h"

#include <numeric>

namespace skiff::telemetry {

Offload::Offload(std::string name, size_t max_queued_bytes, std::chrono::milliseconds flush_every,
                 std::function<bool(std::vector<std::string>&)> sink)
    : name_(std::move(name)),
      max_queued_bytes_(max_queued_bytes),
      flush_every_(flush_every),
      sink_(std::move(sink)),
      thread_([this] { Run(); }) {}

Offload::~Offload() { Stop(); }

void Offload::Submit(std::string* batch, uint64_t items) {
  if (batch->empty()) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && queued_bytes_ + batch->size() <= max_queued_bytes_) {
      queued_bytes_ += batch->size();
      queue_.push_back(std::move(*batch));
      counts_.push_back(items);
      batch->clear();
      return;
    }
  }
  dropped_.fetch_add(items, std::memory_order_relaxed);
  batch->clear();
}

void Offload::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      return;
    }
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Offload::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait_for(lock, flush_every_, [this] { return stop_; });
    if (queue_.empty()) {
      if (stop_) {
        return;
      }
      continue;
    }
    std::vector<std::string> batches;
    batches.swap(queue_);
    std::vector<uint64_t> counts;
    counts.swap(counts_);
    queued_bytes_ = 0;
    bool stopping = stop_;
    lock.unlock();
    uint64_t items = std::accumulate(counts.begin(), counts.end(), uint64_t{0});
    if (sink_(batches)) {
      delivered_.fetch_add(items, std::memory_order_relaxed);
    } else {
      failed_.fetch_add(items, std::memory_order_relaxed);
    }
    lock.lock();
    if (stopping && queue_.empty()) {
      return;
    }
  }
}

}  // namespace skiff::telemetry

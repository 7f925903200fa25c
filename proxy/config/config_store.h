#pragma once
// The published configuration. Workers poll version() once per loop turn and take the
// new Config under the mutex only when it changed; a request keeps the Config it started
// with.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "proxy/config/config.h"

namespace skiff::proxy {

class ConfigStore {
 public:
  void Publish(std::shared_ptr<const Config> config) {
    std::lock_guard<std::mutex> lock(mu_);
    config_ = std::move(config);
    version_.fetch_add(1, std::memory_order_release);
  }
  [[nodiscard]] std::shared_ptr<const Config> Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return config_;
  }
  [[nodiscard]] uint64_t version() const { return version_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Config> config_;
  std::atomic<uint64_t> version_{0};
};

}  // namespace skiff::proxy

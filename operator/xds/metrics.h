#pragma once
// The xDS side's metrics: a Prometheus histogram of milliseconds, the snapshot cache's
// counters and the server's.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "proto/resources.h"

namespace skiff::xds {

// A Prometheus histogram of milliseconds, updated with relaxed atomics.
struct MsHistogram {
  static constexpr std::array<double, 12> kBounds = {1,   5,   10,   25,   50,   100,
                                                     250, 500, 1000, 2500, 5000, 10000};
  std::array<std::atomic<uint64_t>, 12> buckets{};  // non-cumulative
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> sum_us{0};
  void Observe(std::chrono::microseconds d);
  // "# HELP/# TYPE" and the _bucket/_sum/_count lines.
  [[nodiscard]] std::string Render(const std::string& name, const std::string& help) const;
};

struct CacheMetrics {
  std::atomic<uint64_t> groups{0};        // entries in the snapshot cache
  std::atomic<uint64_t> refused{0};       // streams refused by max_groups / max_streams / bad nodes
  std::atomic<uint64_t> translations{0};  // group snapshots computed (routes and all)
  std::atomic<uint64_t> translation_us_total{0};
  std::atomic<uint64_t> endpoint_translations{0};  // group endpoints recomputed alone
};

struct ServerMetrics : CacheMetrics {
  std::atomic<uint64_t> pushes{0};  // responses sent, all types
  std::array<std::atomic<uint64_t>, kTypeOrder.size()>
      type_pushes{};  // ... per type, in kTypeOrder
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> nacks{0};      // rejects
  std::atomic<uint64_t> connected{0};  // streams open now
  std::atomic<uint64_t> streams_total{0};
  // Time to compute the snapshots of one change and start the pushes to every stream.
  MsHistogram push_time;
};

}  // namespace skiff::xds

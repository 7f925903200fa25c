#include "operator/xds/metrics.h"

#include <algorithm>
#include <cstdio>

namespace skiff::xds {

void MsHistogram::Observe(std::chrono::microseconds d) {
  double ms = static_cast<double>(d.count()) / 1000.0;
  size_t i = 0;
  while (i < kBounds.size() && ms > kBounds[i]) {
    ++i;
  }
  if (i < kBounds.size()) {
    buckets[i].fetch_add(1, std::memory_order_relaxed);
  }
  count.fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<uint64_t>(d.count()), std::memory_order_relaxed);
}

std::string MsHistogram::Render(const std::string& name, const std::string& help) const {
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets[i].load(std::memory_order_relaxed);
    char le[32];
    std::snprintf(le, sizeof le, "%g", kBounds[i]);
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  uint64_t n = std::max(count.load(std::memory_order_relaxed), cumulative);
  char sum[64];
  std::snprintf(sum, sizeof sum, "%.3f",
                static_cast<double>(sum_us.load(std::memory_order_relaxed)) / 1000.0);
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(n) + "\n";
  out += name + "_sum " + sum + "\n";
  out += name + "_count " + std::to_string(n) + "\n";
  return out;
}

}  // namespace skiff::xds

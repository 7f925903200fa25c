#include "proxy/upstream/cluster.h"

#include <algorithm>

namespace skiff::upstream {

uint64_t Hash64(std::string_view data) {
  // FNV-1a, then a 64-bit finaliser (splitmix) to spread the bits.
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

void Cluster::BuildRing() {
  ring.clear();
  constexpr int kPointsPerEndpoint = 100;
  for (uint32_t i = 0; i < endpoints.size(); ++i) {
    for (int p = 0; p < kPointsPerEndpoint; ++p) {
      ring.emplace_back(Hash64(endpoints[i].key + "#" + std::to_string(p)), i);
    }
  }
  std::sort(ring.begin(), ring.end());
}

uint32_t Cluster::RingLookup(uint64_t hash) const {
  auto it = std::lower_bound(ring.begin(), ring.end(), std::make_pair(hash, uint32_t{0}));
  if (it == ring.end()) {
    it = ring.begin();
  }
  return it->second;
}

}  // namespace skiff::upstream

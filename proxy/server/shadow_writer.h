#pragma once
// Where an Exchange hands the mirrored ("shadow") copies of its request: fire-and-forget,
// nothing of them reaches the client.
#include <string>

#include "proxy/upstream/cluster.h"

namespace skiff::proxy {

class ShadowWriter {
 public:
  virtual ~ShadowWriter() = default;
  // Sends `request` (a complete HTTP/1.1 request: head and body) to one endpoint of
  // `cluster`.
  virtual void Shadow(const upstream::Cluster& cluster, std::string request) = 0;
};

}  // namespace skiff::proxy

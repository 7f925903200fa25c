#pragma once
// What a worker keeps for each accepted connection, whatever serves it (HTTP, a TCP
// proxy, or the sniffer deciding between them).
namespace skiff::proxy {

class ActiveConnection {
 public:
  virtual ~ActiveConnection() = default;
  // Graceful drain: finish what is in flight, then close.
  virtual void Drain() = 0;
};

}  // namespace skiff::proxy

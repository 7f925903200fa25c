#pragma once
// One kind's list + watch on the API server, as client-go's reflector does: a paged list,
// then a watch from its resourceVersion with bookmarks and a randomised timeout (5-10 min);
// a relist on 410 Gone ("too old resource version"); jittered exponential back-off
// (0.8 s -> 30 s) on errors; a watch that ends at once with no events counts as an error.
// It hands on raw JSON objects: decoding is the source's business.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "operator/source/kube/client.h"

namespace skiff::kube {

// A kind of the API: its kind, apiVersion and resource name.
struct ResourceType {
  std::string kind;         // "VirtualService"
  std::string api_version;  // "networking.istio.io/v1"
  std::string plural;       // "virtualservices"
  // A kind whose CRD may not be installed: while the API server answers 404, it has no
  // objects (and the list is retried), instead of holding up the first sync.
  bool optional = false;
  // The collection's path: every namespace, or one.
  [[nodiscard]] std::string Path(const std::string& namespace_) const;
};

// Wakes sleepers at shutdown.
class StopSignal {
 public:
  void Stop();
  [[nodiscard]] bool stopped() const;
  // Sleeps for `d` or until Stop(); false when stopping.
  bool Sleep(std::chrono::milliseconds d);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

struct ReflectorMetrics {
  std::atomic<uint64_t> watch_restarts{0};  // watches that ended and were started again
  std::atomic<uint64_t> relists{0};         // lists after 410 Gone
  std::atomic<uint64_t> watch_errors{0};
  std::atomic<uint64_t> events_received{0};
};

class Reflector {
 public:
  struct Handler {
    // Every object of the kind (a list); the watch follows from its resourceVersion.
    std::function<void(std::vector<nlohmann::json> items)> on_list;
    // A watch event: ADDED, MODIFIED or DELETED, with the object.
    std::function<void(const std::string& type, const nlohmann::json& object)> on_event;
  };
  // `client`, `stop` and `metrics` outlive the reflector (shared by all kinds).
  Reflector(Client* client, ResourceType type, std::string namespace_, Handler handler,
            StopSignal* stop, ReflectorMetrics* metrics);

  // Lists and watches until `stop`.
  void Run();
  [[nodiscard]] const ResourceType& type() const { return type_; }

 private:
  bool List(std::string* resource_version);

  Client* const client_;
  const ResourceType type_;
  const std::string namespace_;
  Handler handler_;
  StopSignal* const stop_;
  ReflectorMetrics* const metrics_;
  bool absent_ = false;  // an optional kind the API server does not serve (404)
};

// Jittered: `base` times a random factor in [1, 1.5).
std::chrono::milliseconds Jitter(std::chrono::milliseconds base);

}  // namespace skiff::kube

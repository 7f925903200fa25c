#pragma once
// The typed object store, between the sources and the translator.
//
// Objects are keyed by (kind, namespace, name). An object equal to the stored one, ignoring
// its resourceVersion (status and managedFields are not even decoded), changes nothing: a
// status write by the leader comes back as a watch event that differs only there, and costs
// no translation. Changes are batched with a hold-off: an update goes out `holdoff` after
// the last change of a burst, or `max_wait` after its first, from the store's own thread
// (with a hold-off of 0, as soon as that thread wakes). On the way out the last good version
// of every resource is served in place of a newer, invalid one (LastGood). An update whose
// changes are all EndpointSlices and Pods says so: only endpoints need computing.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "operator/source/source.h"
#include "operator/store/last_good.h"

namespace skiff::store {

struct StoreOptions {
  std::chrono::milliseconds holdoff{100};
  std::chrono::milliseconds max_wait{1000};
};

// What the store hands on.
struct StoreUpdate {
  // Every object, the last good version of a resource in place of an invalid newer one,
  // with what the sources could not read.
  source::LoadResult inputs;
  // Only EndpointSlices and Pods changed since the previous update (never for the first).
  bool endpoints_only = false;
};

struct StoreMetrics {
  std::atomic<uint64_t> changes{0};           // objects added, changed or deleted
  std::atomic<uint64_t> unchanged{0};         // objects a source handed in equal to the stored ones
  std::atomic<uint64_t> updates{0};           // updates handed on
  std::atomic<uint64_t> endpoint_updates{0};  // ... of which only endpoints changed
  std::atomic<uint64_t> objects{0};           // objects stored
};

class ObjectStore final : public source::Sink {
 public:
  using Consumer = std::function<void(StoreUpdate)>;
  // `consumer` is called on the store's thread, one update at a time.
  ObjectStore(StoreOptions options, Consumer consumer);
  ~ObjectStore() override;
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;
  // No update is handed on after it returns (one in progress finishes first).
  void Stop();

  void Replace(source::LoadResult all) override;
  void ReplaceKind(api::Kind kind, std::vector<api::Object> objects,
                   const std::string& namespace_) override;
  using source::Sink::ReplaceKind;
  void Upsert(api::Object object) override;
  void Delete(api::Kind kind, const std::string& namespace_, const std::string& name) override;
  void Synced() override;

  // The invalid resources of the last update and what is served in their place.
  [[nodiscard]] ConfigStatus Status() const { return last_good_.Status(); }
  [[nodiscard]] const StoreMetrics& metrics() const { return metrics_; }

  // Whether `a` and `b` are the same object for translation: equal in everything decoded
  // but resourceVersion, and from the same place (file and document).
  static bool Same(const api::Object& a, const api::Object& b);

 private:
  using Key = std::tuple<int, std::string, std::string>;  // kind, namespace, name
  static Key KeyOf(const api::Object& o) {
    return {static_cast<int>(o.kind), o.meta.namespace_, o.meta.name};
  }
  // With mu_ held.
  void PutLocked(api::Object object);
  void EraseLocked(std::map<Key, std::shared_ptr<const api::Object>>::iterator it);
  void ChangedLocked(api::Kind kind);
  void Run();

  const StoreOptions options_;
  Consumer consumer_;
  LastGood last_good_;
  StoreMetrics metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<Key, std::shared_ptr<const api::Object>> objects_;
  // From the file source: what it could not read, and how much it read.
  std::vector<api::DocumentError> errors_, warnings_;
  std::vector<std::string> broken_files_;
  int files_ = 0;
  int ignored_ = 0;
  bool synced_ = false;                                 // the sources delivered everything once
  bool emitted_ = false;                                // an update went out
  bool dirty_ = false;                                  // something changed since the last update
  bool routes_dirty_ = false;                           // ... besides EndpointSlices and Pods
  std::chrono::steady_clock::time_point first_, last_;  // of the changes since the last update
  std::thread thread_;
};

}  // namespace skiff::store

#pragma once
// The snapshot cache: per proxy group (role, labels, namespace) with a connected proxy, the
// snapshot of the current inputs, split into xDS resources and pre-serialized once for all
// the group's state-of-the-world streams.
//
// Snapshots are built off the gRPC threads and without the cache's lock: Update builds
// every cached group's snapshot on the caller's thread (the pipeline's), then publishes
// them; a group that appears (its first proxy connects) is built on the cache's own builder
// thread, which then tells the server (on_published) so its streams push. A stream reads
// its group's published snapshot and never builds one.
//
// UpdateEndpoints is the short path for EndpointSlice and Pod changes: it recomputes only
// the endpoints of each group's clusters; listeners, route tables and clusters stay the
// same objects (same versions, same bytes), so only endpoints are pushed.
#include <array>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "operator/translate/translate.h"
#include "operator/xds/metrics.h"
#include "proto/resources.h"

namespace skiff::xds {

// One type of a group's snapshot.
struct TypeSnapshot {
  ResourceMap resources;                                 // name -> resource
  std::string version;                                   // content hash of the type
  std::map<std::string, std::string> resource_versions;  // name -> ResourceVersion (delta)
  // The serialized state-of-the-world DiscoveryResponse without its nonce; every stream of
  // the group sends these bytes (no copy) followed by its own nonce field.
  std::shared_ptr<const std::string> sotw_bytes;
};

struct GroupSnapshot {
  uint64_t generation = 0;  // of the inputs it was built from
  // Per type in kTypeOrder (index i is kTypeOrder[i]); shared between snapshots of a group
  // when a type did not change.
  std::array<std::shared_ptr<const TypeSnapshot>, kTypeOrder.size()> by_order;
  // The group's clusters (name, service, port, subset): what its endpoints are for.
  std::shared_ptr<const google::protobuf::RepeatedPtrField<v1::Cluster>> clusters;

  [[nodiscard]] const TypeSnapshot& type(size_t i) const { return *by_order[i]; }
};

// The xDS resources of one type, versioned and serialized.
std::shared_ptr<const TypeSnapshot> MakeTypeSnapshot(const char* type_url, ResourceMap resources);
// A group snapshot of `snapshot` (consumed).
std::shared_ptr<const GroupSnapshot> MakeGroupSnapshot(v1::Snapshot* snapshot, uint64_t generation);

struct SnapshotCacheOptions {
  // Groups in the cache at most. An entry lives while a stream of its group is open
  // (reference counted) and is evicted with the last one; a further group is refused.
  size_t max_groups = 4096;
};

class SnapshotCache {
 public:
  class Entry;
  using Handle = std::shared_ptr<Entry>;

  // `metrics` outlives the cache.
  SnapshotCache(SnapshotCacheOptions options, CacheMetrics* metrics);
  ~SnapshotCache();
  SnapshotCache(const SnapshotCache&) = delete;
  SnapshotCache& operator=(const SnapshotCache&) = delete;

  // Called on the builder thread after it published the snapshot of a group.
  void SetOnPublished(std::function<void(const translate::ProxyGroup&)> on_published);
  // Stops the builder thread.
  void Stop();

  // New inputs: every cached group's snapshot is built for them (on this thread, not
  // holding the lock), then published. Returns when all are.
  void Update(std::shared_ptr<const translate::Translator> translator);
  // Only EndpointSlices and Pods changed: `endpoints` computes the new endpoints of every
  // cached group's clusters; everything else of its snapshot is kept.
  void UpdateEndpoints(std::shared_ptr<const translate::EndpointTranslator> endpoints);

  // A stream of `group` starts: the group's entry (shared with its other streams), or null
  // with `*error` when the cache is full. A new entry's snapshot is built on the builder
  // thread.
  Handle Acquire(const translate::ProxyGroup& group, std::string* error);
  // A stream of the entry's group ended; the last one evicts the entry.
  void Release(const Handle& handle);
  // The entry's published snapshot; null until its first one is built.
  static std::shared_ptr<const GroupSnapshot> Published(const Handle& handle);

  // The snapshot of `group`: the published one of a cached group (what its streams are
  // served), else one built now for the current inputs on the caller's thread (not kept).
  std::shared_ptr<const GroupSnapshot> Snapshot(const translate::ProxyGroup& group);
  [[nodiscard]] size_t groups() const;
  [[nodiscard]] uint64_t generation() const;

 private:
  struct Inputs {
    std::shared_ptr<const translate::Translator> translator;
    std::shared_ptr<const translate::EndpointTranslator> endpoints;  // newer than translator's
    uint64_t generation = 0;
  };
  std::shared_ptr<const GroupSnapshot> Build(const translate::ProxyGroup& group,
                                             const Inputs& inputs);
  // `old` with the endpoints of `inputs`; null when they are the same.
  std::shared_ptr<const GroupSnapshot> WithEndpoints(const GroupSnapshot& old,
                                                     const Inputs& inputs);
  static bool Publish(Entry* entry, std::shared_ptr<const GroupSnapshot> snapshot);
  void RunBuilder();

  const SnapshotCacheOptions options_;
  CacheMetrics* const metrics_;
  std::function<void(const translate::ProxyGroup&)> on_published_;

  std::mutex update_mu_;  // one Update / UpdateEndpoints at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  Inputs inputs_;
  std::map<translate::ProxyGroup, Handle> entries_;
  std::deque<Handle> to_build_;  // new entries, and entries built from inputs now outdated
  std::chrono::steady_clock::time_point last_refusal_log_;
  std::thread builder_;
};

}  // namespace skiff::xds

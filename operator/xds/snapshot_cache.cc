#include "operator/xds/snapshot_cache.h"

#include <spdlog/spdlog.h>

#include "skiff/v1/discovery.pb.h"

namespace skiff::xds {

class SnapshotCache::Entry {
 public:
  explicit Entry(translate::ProxyGroup g) : group(std::move(g)) {}
  const translate::ProxyGroup group;
  // Guarded by the cache's mu_.
  size_t streams = 0;
  bool pending = false;  // queued for (or being built by) the builder thread

  std::shared_ptr<const GroupSnapshot> Get() {
    std::lock_guard<std::mutex> lock(mu);
    return snapshot;
  }
  std::mutex mu;
  std::shared_ptr<const GroupSnapshot> snapshot;  // guarded by mu
};

std::shared_ptr<const TypeSnapshot> MakeTypeSnapshot(const char* type_url, ResourceMap resources) {
  auto t = std::make_shared<TypeSnapshot>();
  t->resources = std::move(resources);
  t->version = TypeVersion(t->resources);
  v1::DiscoveryResponse response;
  response.set_version_info(t->version);
  response.set_type_url(type_url);
  for (const auto& [name, any] : t->resources) {
    t->resource_versions.emplace_hint(t->resource_versions.end(), name, ResourceVersion(any));
    *response.add_resources() = any;
  }
  t->sotw_bytes = std::make_shared<const std::string>(response.SerializeAsString());
  return t;
}

std::shared_ptr<const GroupSnapshot> MakeGroupSnapshot(v1::Snapshot* snapshot,
                                                       uint64_t generation) {
  auto snap = std::make_shared<GroupSnapshot>();
  snap->generation = generation;
  TypedResources resources = SplitSnapshot(*snapshot);
  for (size_t i = 0; i < kTypeOrder.size(); ++i) {
    snap->by_order[i] = MakeTypeSnapshot(kTypeOrder[i], std::move(resources.at(kTypeOrder[i])));
  }
  // What the endpoints are computed from, without the clusters' policies.
  auto clusters = std::make_shared<google::protobuf::RepeatedPtrField<v1::Cluster>>();
  clusters->Reserve(snapshot->clusters_size());
  for (auto& c : *snapshot->mutable_clusters()) {
    auto* key = clusters->Add();
    key->set_name(std::move(*c.mutable_name()));
    key->set_service(std::move(*c.mutable_service()));
    key->set_port(c.port());
    key->set_subset(std::move(*c.mutable_subset()));
  }
  snap->clusters = std::move(clusters);
  return snap;
}

SnapshotCache::SnapshotCache(SnapshotCacheOptions options, CacheMetrics* metrics)
    : options_(options), metrics_(metrics) {
  builder_ = std::thread([this] { RunBuilder(); });
}

SnapshotCache::~SnapshotCache() { Stop(); }

void SnapshotCache::SetOnPublished(std::function<void(const translate::ProxyGroup&)> f) {
  std::lock_guard<std::mutex> lock(mu_);
  on_published_ = std::move(f);
}

void SnapshotCache::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (builder_.joinable()) {
    builder_.join();
  }
}

std::shared_ptr<const GroupSnapshot> SnapshotCache::Build(const translate::ProxyGroup& group,
                                                          const Inputs& inputs) {
  auto start = std::chrono::steady_clock::now();
  v1::Snapshot snapshot;
  if (inputs.translator != nullptr) {
    inputs.translator->Build(group, &snapshot);
  }
  if (inputs.endpoints != nullptr) {
    inputs.endpoints->Build(snapshot.clusters(), snapshot.mutable_endpoints());
  }
  auto snap = MakeGroupSnapshot(&snapshot, inputs.generation);
  metrics_->translations.fetch_add(1, std::memory_order_relaxed);
  metrics_->translation_us_total.fetch_add(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count()),
      std::memory_order_relaxed);
  return snap;
}

std::shared_ptr<const GroupSnapshot> SnapshotCache::WithEndpoints(const GroupSnapshot& old,
                                                                  const Inputs& inputs) {
  v1::Snapshot snapshot;
  inputs.endpoints->Build(*old.clusters, snapshot.mutable_endpoints());
  TypedResources resources = SplitSnapshot(snapshot);
  size_t i = 0;
  while (kTypeOrder[i] != std::string_view(kEndpointsType)) {
    ++i;
  }
  auto endpoints = MakeTypeSnapshot(kEndpointsType, std::move(resources.at(kEndpointsType)));
  metrics_->endpoint_translations.fetch_add(1, std::memory_order_relaxed);
  if (endpoints->version == old.by_order[i]->version) {
    return nullptr;  // no endpoint of this group changed: its snapshot stays
  }
  auto snap = std::make_shared<GroupSnapshot>();
  snap->generation = inputs.generation;
  snap->by_order = old.by_order;  // the other types: the same objects, versions and bytes
  snap->by_order[i] = std::move(endpoints);
  snap->clusters = old.clusters;
  return snap;
}

bool SnapshotCache::Publish(Entry* entry, std::shared_ptr<const GroupSnapshot> snapshot) {
  std::lock_guard<std::mutex> lock(entry->mu);
  if (entry->snapshot != nullptr && entry->snapshot->generation >= snapshot->generation) {
    return false;  // a newer one is there already
  }
  entry->snapshot = std::move(snapshot);
  return true;
}

void SnapshotCache::Update(std::shared_ptr<const translate::Translator> translator) {
  std::lock_guard<std::mutex> update_lock(update_mu_);
  Inputs inputs;
  std::vector<Handle> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inputs_.translator = std::move(translator);
    inputs_.endpoints.reset();
    inputs_.generation++;
    inputs = inputs_;
    entries.reserve(entries_.size());
    for (const auto& [group, entry] : entries_) {
      if (!entry->pending) {  // (the builder builds those, and again if they are outdated)
        entries.push_back(entry);
      }
    }
  }
  for (const auto& entry : entries) {
    Publish(entry.get(), Build(entry->group, inputs));
  }
}

void SnapshotCache::UpdateEndpoints(
    std::shared_ptr<const translate::EndpointTranslator> endpoints) {
  std::lock_guard<std::mutex> update_lock(update_mu_);
  Inputs inputs;
  std::vector<Handle> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inputs_.endpoints = std::move(endpoints);
    inputs_.generation++;
    inputs = inputs_;
    entries.reserve(entries_.size());
    for (const auto& [group, entry] : entries_) {
      if (!entry->pending) {
        entries.push_back(entry);
      }
    }
  }
  for (const auto& entry : entries) {
    auto old = entry->Get();
    if (old == nullptr) {
      continue;
    }
    if (auto snap = WithEndpoints(*old, inputs)) {
      Publish(entry.get(), std::move(snap));
    }
  }
}

SnapshotCache::Handle SnapshotCache::Acquire(const translate::ProxyGroup& group,
                                             std::string* error) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(group);
  if (it == entries_.end()) {
    if (entries_.size() >= options_.max_groups) {
      metrics_->refused.fetch_add(1, std::memory_order_relaxed);
      *error = "too many proxy groups: the snapshot cache holds " +
               std::to_string(options_.max_groups) +
               " groups with connected proxies (--max-proxy-groups); refusing role " + group.role +
               ", namespace " + group.namespace_.substr(0, 256);
      auto now = std::chrono::steady_clock::now();
      if (now - last_refusal_log_ > std::chrono::seconds(10)) {
        last_refusal_log_ = now;
        spdlog::warn("xDS: {}", *error);
      }
      return nullptr;
    }
    it = entries_.emplace(group, std::make_shared<Entry>(group)).first;
    metrics_->groups.store(entries_.size(), std::memory_order_relaxed);
    it->second->pending = true;
    to_build_.push_back(it->second);
    cv_.notify_all();
  }
  ++it->second->streams;
  return it->second;
}

void SnapshotCache::Release(const Handle& handle) {
  std::lock_guard<std::mutex> lock(mu_);
  if (--handle->streams == 0) {
    auto it = entries_.find(handle->group);
    if (it != entries_.end() && it->second == handle) {
      entries_.erase(it);  // the last stream of the group is gone: evict its snapshot
      metrics_->groups.store(entries_.size(), std::memory_order_relaxed);
    }
  }
}

std::shared_ptr<const GroupSnapshot> SnapshotCache::Published(const Handle& handle) {
  return handle != nullptr ? handle->Get() : nullptr;
}

std::shared_ptr<const GroupSnapshot> SnapshotCache::Snapshot(const translate::ProxyGroup& group) {
  Inputs inputs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(group);
    if (it != entries_.end()) {
      if (auto snap = it->second->Get()) {
        return snap;  // what its streams are served
      }
    }
    inputs = inputs_;
  }
  return Build(group, inputs);
}

size_t SnapshotCache::groups() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

uint64_t SnapshotCache::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return inputs_.generation;
}

void SnapshotCache::RunBuilder() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !to_build_.empty(); });
    if (stop_) {
      return;
    }
    Handle entry = std::move(to_build_.front());
    to_build_.pop_front();
    if (entry->streams == 0) {
      entry->pending = false;  // evicted before it was built
      continue;
    }
    Inputs inputs = inputs_;
    lock.unlock();
    bool published = Publish(entry.get(), Build(entry->group, inputs));
    lock.lock();
    entry->pending = false;
    if (inputs.generation != inputs_.generation && entry->streams > 0) {
      entry->pending = true;  // the inputs changed meanwhile: build it again
      to_build_.push_back(entry);
    }
    auto on_published = on_published_;
    if (published && on_published) {
      lock.unlock();
      on_published(entry->group);
      lock.lock();
    }
  }
}

}  // namespace skiff::xds

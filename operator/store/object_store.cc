#include "operator/store/object_store.h"

#include <set>

namespace skiff::store {

namespace {

bool EndpointKind(api::Kind kind) {
  return kind == api::Kind::kEndpointSlice || kind == api::Kind::kPod;
}

// Everything but resourceVersion, which a write to the status changes (and nothing else
// that skiff decodes). A field added to ObjectMeta belongs here too.
bool SameMeta(const api::ObjectMeta& a, const api::ObjectMeta& b) {
  return a.name == b.name && a.namespace_ == b.namespace_ && a.generation == b.generation &&
         a.uid == b.uid && a.creation_timestamp == b.creation_timestamp && a.labels == b.labels &&
         a.annotations == b.annotations;
}

bool SameErrors(const std::vector<api::DocumentError>& a,
                const std::vector<api::DocumentError>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return x.origin == y.origin && x.text == y.text;
  });
}

}  // namespace

bool ObjectStore::Same(const api::Object& a, const api::Object& b) {
  return a.kind == b.kind && a.api_version == b.api_version && a.origin == b.origin &&
         a.file == b.file && SameMeta(a.meta, b.meta) && a.spec == b.spec &&
         a.messages == b.messages && a.rejected == b.rejected;
}

ObjectStore::ObjectStore(StoreOptions options, Consumer consumer)
    : options_(options), consumer_(std::move(consumer)) {
  thread_ = std::thread([this] { Run(); });
}

ObjectStore::~ObjectStore() { Stop(); }

void ObjectStore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void ObjectStore::ChangedLocked(api::Kind kind) {
  metrics_.changes.fetch_add(1, std::memory_order_relaxed);
  auto now = std::chrono::steady_clock::now();
  if (!dirty_) {
    dirty_ = true;
    first_ = now;
  }
  last_ = now;
  if (!EndpointKind(kind)) {
    routes_dirty_ = true;
  }
  cv_.notify_all();
}

void ObjectStore::PutLocked(api::Object object) {
  Key key = KeyOf(object);
  auto it = objects_.find(key);
  if (it != objects_.end() && Same(*it->second, object)) {
    metrics_.unchanged.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  api::Kind kind = object.kind;
  auto stored = std::make_shared<const api::Object>(std::move(object));
  if (it == objects_.end()) {
    objects_.emplace(std::move(key), std::move(stored));
  } else {
    it->second = std::move(stored);
  }
  ChangedLocked(kind);
}

void ObjectStore::EraseLocked(std::map<Key, std::shared_ptr<const api::Object>>::iterator it) {
  api::Kind kind = it->second->kind;
  objects_.erase(it);
  ChangedLocked(kind);
}

void ObjectStore::Replace(source::LoadResult all) {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<Key> present;
  for (auto& o : all.objects) {
    present.insert(KeyOf(o));
    PutLocked(std::move(o));
  }
  for (auto it = objects_.begin(); it != objects_.end();) {
    auto next = std::next(it);
    if (present.count(it->first) == 0) {
      EraseLocked(it);
    }
    it = next;
  }
  // What could not be read shows in the log, the status and skiffctl: a change to it is
  // a change (and the last good versions of a broken file's resources depend on it).
  if (!SameErrors(errors_, all.errors) || !SameErrors(warnings_, all.warnings) ||
      broken_files_ != all.broken_files) {
    errors_ = std::move(all.errors);
    warnings_ = std::move(all.warnings);
    broken_files_ = std::move(all.broken_files);
    ChangedLocked(api::Kind::kGateway);
  }
  files_ = all.files;
  ignored_ = all.ignored;
  metrics_.objects.store(objects_.size(), std::memory_order_relaxed);
  synced_ = true;
  if (!emitted_ && !dirty_) {
    ChangedLocked(api::Kind::kGateway);  // the first update goes out even when empty
  }
  cv_.notify_all();
}

void ObjectStore::ReplaceKind(api::Kind kind, std::vector<api::Object> objects,
                              const std::string& namespace_) {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<Key> present;
  for (auto& o : objects) {
    if (o.kind != kind || (!namespace_.empty() && o.meta.namespace_ != namespace_)) {
      continue;
    }
    present.insert(KeyOf(o));
    PutLocked(std::move(o));
  }
  int k = static_cast<int>(kind);
  for (auto it = objects_.lower_bound(Key{k, namespace_, ""});
       it != objects_.end() && std::get<0>(it->first) == k &&
       (namespace_.empty() || std::get<1>(it->first) == namespace_);) {
    auto next = std::next(it);
    if (present.count(it->first) == 0) {
      EraseLocked(it);
    }
    it = next;
  }
  metrics_.objects.store(objects_.size(), std::memory_order_relaxed);
}

void ObjectStore::Upsert(api::Object object) {
  std::lock_guard<std::mutex> lock(mu_);
  PutLocked(std::move(object));
  metrics_.objects.store(objects_.size(), std::memory_order_relaxed);
}

void ObjectStore::Delete(api::Kind kind, const std::string& namespace_, const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = objects_.find(Key{static_cast<int>(kind), namespace_, name});
  if (it != objects_.end()) {
    EraseLocked(it);
  }
  metrics_.objects.store(objects_.size(), std::memory_order_relaxed);
}

void ObjectStore::Synced() {
  std::lock_guard<std::mutex> lock(mu_);
  synced_ = true;
  if (!emitted_ && !dirty_) {
    ChangedLocked(api::Kind::kGateway);  // the first update goes out even when empty
  }
  cv_.notify_all();
}

void ObjectStore::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (!dirty_ || !synced_) {
      cv_.wait(lock);
      continue;
    }
    auto due = std::min(last_ + options_.holdoff, first_ + options_.max_wait);
    if (std::chrono::steady_clock::now() < due) {
      cv_.wait_until(lock, due);
      continue;
    }
    // Take the objects (shared, not copied, under the lock), then copy them outside it.
    std::vector<std::shared_ptr<const api::Object>> objects;
    objects.reserve(objects_.size());
    for (const auto& [key, o] : objects_) {
      objects.push_back(o);
    }
    StoreUpdate update;
    update.endpoints_only = emitted_ && !routes_dirty_;
    update.inputs.errors = errors_;
    update.inputs.warnings = warnings_;
    update.inputs.broken_files = broken_files_;
    update.inputs.files = files_;
    update.inputs.ignored = ignored_;
    dirty_ = false;
    routes_dirty_ = false;
    emitted_ = true;
    lock.unlock();
    update.inputs.objects.reserve(objects.size());
    for (const auto& o : objects) {
      update.inputs.objects.push_back(*o);
    }
    objects.clear();
    update.inputs = last_good_.Apply(std::move(update.inputs));
    metrics_.updates.fetch_add(1, std::memory_order_relaxed);
    if (update.endpoints_only) {
      metrics_.endpoint_updates.fetch_add(1, std::memory_order_relaxed);
    }
    consumer_(std::move(update));
    lock.lock();
  }
}

}  // namespace skiff::store

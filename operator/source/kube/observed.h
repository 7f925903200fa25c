#pragma once
// What the API server says of each Gateway, VirtualService and DestinationRule besides its
// spec: uid, generation, resourceVersion and status, as the reflectors last saw them. The
// status writer reads it (to keep lastTransitionTime, to skip writes already there, to name
// the object in Events); the translator never does.
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace skiff::kube {

struct Observed {
  std::string uid;
  int64_t generation = 0;
  std::string resource_version;
  nlohmann::json status;  // null when it has none
};

class ObservedObjects {
 public:
  // "Kind/namespace/name"
  static std::string Key(const std::string& kind, const std::string& ns, const std::string& name) {
    return kind + "/" + ns + "/" + name;
  }
  // Called (without the lock) when the status of an object that was already known changed:
  // someone wrote it, perhaps this replica.
  std::function<void(const std::string& key)> on_status_changed;

  void Set(const std::string& key, Observed o) {
    bool changed = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto [it, inserted] = objects_.try_emplace(key);
      changed = !inserted && it->second.status != o.status;
      it->second = std::move(o);
    }
    if (changed && on_status_changed) {
      on_status_changed(key);
    }
  }
  void Erase(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    objects_.erase(key);
  }
  // Every key of `kind` not in `keep` is erased (after a list).
  template <typename Set>
  void EraseKindExcept(const std::string& kind, const Set& keep) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string prefix = kind + "/";
    for (auto it = objects_.lower_bound(prefix);
         it != objects_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
      it = keep.count(it->first) > 0 ? std::next(it) : objects_.erase(it);
    }
  }
  [[nodiscard]] std::optional<Observed> Get(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = objects_.find(key);
    if (it == objects_.end()) {
      return std::nullopt;
    }
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, Observed> objects_;
};

}  // namespace skiff::kube

#include "operator/store/last_good.h"

#include <algorithm>
#include <set>

namespace skiff::store {

std::string ConfigError::Ref() const {
  return std::string(api::KindName(kind)) + " " + namespace_ + "/" + name;
}

source::LoadResult LastGood::Apply(source::LoadResult in) {
  ConfigStatus status;
  status.documents = in.errors;
  std::set<std::string> broken(in.broken_files.begin(), in.broken_files.end());
  std::set<Key> present;
  for (auto& o : in.objects) {
    Key key{static_cast<int>(o.kind), o.meta.namespace_, o.meta.name};
    present.insert(key);
    auto it = last_good_.find(key);
    if (o.Valid()) {
      if (it == last_good_.end()) {
        last_good_.emplace(key, o);
      } else if (!(it->second == o) || it->second.origin != o.origin || it->second.file != o.file) {
        it->second = o;  // most objects are unchanged from one input set to the next
      }
      continue;
    }
    ConfigError err;
    err.kind = o.kind;
    err.namespace_ = o.meta.namespace_;
    err.name = o.meta.name;
    err.origin = o.origin;
    api::Rejection rejected;
    rejected.origin = o.origin;
    for (const auto& m : o.messages) {
      if (m.level == api::Message::Level::kError) {
        err.errors.push_back(m.Format());
        rejected.errors.push_back(m);
      }
    }
    if (it != last_good_.end()) {
      // The invalid version is not served: its last valid version is, carrying the errors.
      err.serving_last_good = true;
      err.last_good_origin = it->second.origin;
      api::Object kept = it->second;
      kept.rejected = std::move(rejected);
      // What the current object says of itself (for the status writer: generation, ...).
      kept.meta.generation = o.meta.generation;
      kept.meta.resource_version = o.meta.resource_version;
      kept.meta.uid = o.meta.uid;
      o = std::move(kept);
    }
    status.resources.push_back(std::move(err));
  }
  // Gone from the input: deleted, unless its file could not be read or decoded now.
  for (auto it = last_good_.begin(); it != last_good_.end();) {
    if (present.count(it->first) > 0) {
      ++it;
      continue;
    }
    if (!it->second.file.empty() && broken.count(it->second.file) > 0) {
      status.kept_from_broken.push_back(it->second.Ref() + " (from " + it->second.file + ")");
      in.objects.push_back(it->second);
      ++it;
      continue;
    }
    it = last_good_.erase(it);
  }
  std::sort(status.resources.begin(), status.resources.end(),
            [](const ConfigError& a, const ConfigError& b) {
              return std::tie(a.kind, a.namespace_, a.name) <
                     std::tie(b.kind, b.namespace_, b.name);
            });
  std::lock_guard<std::mutex> lock(mu_);
  status.applies = status_.applies + 1;
  status_ = std::move(status);
  return in;
}

ConfigStatus LastGood::Status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

}  // namespace skiff::store

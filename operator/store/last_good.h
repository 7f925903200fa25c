#pragma once
// Last good version per resource. Between a source (files or the Kubernetes API) and the
// translator: when a resource that was valid becomes invalid, its last valid version is
// translated in its place, so a bad edit never changes traffic; its new errors are kept on
// that version (Object::rejected) so its status, the log and the metrics show them. Only
// deletion removes a resource's routes: a resource that is absent from the input is gone,
// unless it came from a file that cannot be decoded right now (a syntax error), whose
// resources all keep their last good version.
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "operator/source/source.h"

namespace skiff::store {

// A resource of the input with errors, as `skiffctl status` and the metrics show it.
struct ConfigError {
  api::Kind kind = api::Kind::kVirtualService;
  std::string namespace_;
  std::string name;
  std::string origin;               // where the invalid version is ("file document N", "kube")
  std::vector<std::string> errors;  // "path: text"
  bool serving_last_good = false;   // an earlier valid version is served in its place
  std::string last_good_origin;     // where that version came from
  [[nodiscard]] std::string Ref() const;
};

struct ConfigStatus {
  std::vector<ConfigError> resources;         // sorted by kind, namespace, name
  std::vector<api::DocumentError> documents;  // files or documents that did not decode
  std::vector<std::string> kept_from_broken;  // resources kept because their file broke
  uint64_t applies = 0;                       // input sets applied so far
};

class LastGood {
 public:
  // The objects to translate for this input set (and the bookkeeping for the next one).
  source::LoadResult Apply(source::LoadResult in);
  // What the last Apply found.
  [[nodiscard]] ConfigStatus Status() const;

 private:
  using Key = std::tuple<int, std::string, std::string>;  // kind, namespace, name
  std::map<Key, api::Object> last_good_;
  mutable std::mutex mu_;
  ConfigStatus status_;
};

}  // namespace skiff::store

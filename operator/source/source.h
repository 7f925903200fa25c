#pragma once
// What a source is: something that hands the object store typed objects. The file source
// (a directory of manifests) and the Kubernetes source (list + watch) emit the same
// api::Objects through the same Sink, so everything downstream is identical.
#include <string>
#include <vector>

#include "operator/api/decode.h"

namespace skiff::source {

// A set of objects as read from manifests (and what could not be read).
struct LoadResult {
  std::vector<api::Object> objects;
  std::vector<api::DocumentError> errors;    // unreadable files, malformed documents, duplicates
  std::vector<api::DocumentError> warnings;  // Istio kinds skiff does not serve yet
  int files = 0;
  int ignored = 0;  // objects of kinds skiff does not use (Deployment, ConfigMap, ...)
  // Files that could not be read, or with a document that could not be decoded (a syntax
  // error, an unknown kind): what they held before is not known to be gone.
  std::vector<std::string> broken_files;
};

// Where a source puts what it reads (the object store). Called from the source's threads.
class Sink {
 public:
  virtual ~Sink() = default;
  // Everything the source holds now (the file source, at every load): stored objects that
  // are not in it are gone (the store keeps the last good version of what a broken file
  // held). Also means the source is synced.
  virtual void Replace(LoadResult all) = 0;
  // Every object of one kind (a Kubernetes list): stored objects of that kind that are not
  // in it are gone. With `namespace_`, the list is of that namespace only (a kind watched
  // per namespace), and only that namespace's objects of the kind are replaced.
  virtual void ReplaceKind(api::Kind kind, std::vector<api::Object> objects,
                           const std::string& namespace_) = 0;
  void ReplaceKind(api::Kind kind, std::vector<api::Object> objects) {
    ReplaceKind(kind, std::move(objects), std::string());
  }
  // One object added or changed (a watch event).
  virtual void Upsert(api::Object object) = 0;
  // One object deleted (a watch event).
  virtual void Delete(api::Kind kind, const std::string& namespace_, const std::string& name) = 0;
  // Every kind was listed once: what the store holds is complete and may be translated.
  virtual void Synced() = 0;
};

class Source {
 public:
  virtual ~Source() = default;
  // Starts handing objects to the sink, on the source's own threads (the file source loads
  // once before it returns).
  virtual void Start() = 0;
  // Stops its threads; nothing reaches the sink after it returns.
  virtual void Stop() = 0;
};

}  // namespace skiff::source

#pragma once
// Reading a file or a directory of YAML/JSON manifests into decoded objects: the same
// objects the Kubernetes source produces, so everything downstream is identical.
#include <string>
#include <vector>

#include "operator/api/decode.h"

namespace skiff::source {

struct LoadResult {
  std::vector<api::Object> objects;
  std::vector<api::DocumentError> errors;  // unreadable files, malformed documents, duplicates
  int files = 0;
};

// `path` is a file or a directory (searched recursively for *.yaml, *.yml, *.json, in
// sorted order). Objects with the same kind/namespace/name as an earlier one are reported
// as errors and dropped.
LoadResult LoadPath(const std::string& path);

}  // namespace skiff::source

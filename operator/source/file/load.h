#pragma once
// Reading a file or a directory of YAML/JSON manifests into decoded objects: the same
// objects the Kubernetes source produces, so everything downstream is identical.
#include <istream>
#include <string>
#include <vector>

#include "operator/api/decode.h"
#include "operator/source/source.h"

namespace skiff::source {

// `path` is a file or a directory (searched recursively for *.yaml, *.yml, *.json, in
// sorted order). Objects with the same kind/namespace/name as an earlier one are reported
// as errors and dropped.
LoadResult LoadPath(const std::string& path);
// Several paths as one input; "-" reads `stdin_stream` (named "<stdin>" in messages).
LoadResult LoadPaths(const std::vector<std::string>& paths, std::istream* stdin_stream);

}  // namespace skiff::source

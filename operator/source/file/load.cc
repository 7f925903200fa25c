#include "operator/source/file/load.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "common/strings.h"

namespace skiff::source {

namespace fs = std::filesystem;

namespace {
bool IsManifest(const fs::path& p) {
  auto ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}
}  // namespace

namespace {

// The manifest files of `path` (itself, or a directory searched recursively, in sorted
// order), or "-" for standard input.
bool ListFiles(const std::string& path, std::vector<std::string>* files, LoadResult* result) {
  if (path == "-") {
    files->push_back(path);
    return true;
  }
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> found;
    for (auto it = fs::recursive_directory_iterator(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const auto& name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) {
          it.disable_recursion_pending();
        }
        continue;
      }
      if (it->is_regular_file() && IsManifest(it->path())) {
        found.push_back(it->path());
      }
    }
    if (ec) {
      result->errors.push_back({path, "cannot read directory: " + ec.message()});
      result->broken_files.push_back(path);
    }
    std::sort(found.begin(), found.end());
    for (const auto& f : found) {
      files->push_back(f.string());
    }
    return true;
  }
  if (fs::exists(path, ec)) {
    files->push_back(path);
    return true;
  }
  result->errors.push_back({path, "no such file or directory"});
  return false;
}

}  // namespace

LoadResult LoadPaths(const std::vector<std::string>& paths, std::istream* stdin_stream) {
  LoadResult result;
  std::vector<std::string> files;
  for (const auto& p : paths) {
    ListFiles(p, &files, &result);
  }
  std::map<std::tuple<int, std::string, std::string>, std::string> seen;
  for (const auto& f : files) {
    std::stringstream ss;
    std::string name = f;
    if (f == "-") {
      name = "<stdin>";
      if (stdin_stream == nullptr) {
        result.errors.push_back({name, "standard input is not available here"});
        continue;
      }
      ss << stdin_stream->rdbuf();
    } else {
      std::ifstream in(f, std::ios::binary);
      if (!in) {
        result.errors.push_back({f, "cannot read file"});
        result.broken_files.push_back(f);
        continue;
      }
      ss << in.rdbuf();
    }
    ++result.files;
    auto decoded = api::DecodeDocuments(ss.str(), name);
    if (!decoded.errors.empty()) {
      result.broken_files.push_back(name);
    }
    for (auto& e : decoded.errors) {
      result.errors.push_back(std::move(e));
    }
    for (auto& w : decoded.warnings) {
      result.warnings.push_back(std::move(w));
    }
    result.ignored += decoded.ignored;
    for (auto& o : decoded.objects) {
      auto key = std::make_tuple(static_cast<int>(o.kind), o.meta.namespace_, o.meta.name);
      auto [it, inserted] = seen.emplace(key, o.origin);
      if (!inserted) {
        result.errors.push_back({o.origin, o.Ref() + " is already defined in " + it->second +
                                               "; this copy is ignored"});
        continue;
      }
      result.objects.push_back(std::move(o));
    }
  }
  return result;
}

LoadResult LoadPath(const std::string& path) { return LoadPaths({path}, nullptr); }

}  // namespace skiff::source

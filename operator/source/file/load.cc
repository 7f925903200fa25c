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

LoadResult LoadPath(const std::string& path) {
  LoadResult result;
  std::vector<fs::path> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
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
        files.push_back(it->path());
      }
    }
    if (ec) {
      result.errors.push_back({path, "cannot read directory: " + ec.message()});
    }
    std::sort(files.begin(), files.end());
  } else if (fs::exists(path, ec)) {
    files.emplace_back(path);
  } else {
    result.errors.push_back({path, "no such file or directory"});
    return result;
  }
  std::map<std::tuple<int, std::string, std::string>, std::string> seen;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      result.errors.push_back({f.string(), "cannot read file"});
      continue;
    }
    ++result.files;
    std::stringstream ss;
    ss << in.rdbuf();
    auto decoded = api::DecodeDocuments(ss.str(), f.string());
    for (auto& e : decoded.errors) {
      result.errors.push_back(std::move(e));
    }
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

}  // namespace skiff::source

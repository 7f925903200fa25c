#pragma once
// Watches a directory of manifests by polling (size + mtime of every manifest file) and
// calls back with a fresh LoadResult whenever anything changed.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "operator/source/file/load.h"

namespace skiff::source {

class DirectoryWatcher {
 public:
  using Callback = std::function<void(LoadResult)>;
  DirectoryWatcher(std::string path, std::chrono::milliseconds interval, Callback callback);
  ~DirectoryWatcher();
  // Loads once synchronously (calling back), then watches on a thread.
  void Start();
  void Stop();

 private:
  std::map<std::string, std::pair<long long, long long>> Fingerprint() const;
  std::string path_;
  std::chrono::milliseconds interval_;
  Callback callback_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace skiff::source

#pragma once
// Watches a directory tree of manifests (or one file) and calls back with a fresh
// LoadResult whenever a manifest in it changed.
//
// Changes are noticed with inotify, on the directory and every subdirectory the loader
// reads (not hidden ones), including subdirectories created later: a file that is written
// and closed, renamed into place (an atomic save, or the ..data swap of a Kubernetes
// ConfigMap volume), deleted, or whose attributes changed is reloaded within milliseconds.
// A half-written file is not read: writes count when the file is closed. A deletion or a
// rename away waits for 10 ms of quiet first, so an editor that moves the old file aside
// before writing the new one does not make its resources vanish for a moment.
//
// Polling (size + mtime of every manifest, every `poll_interval`) is only the fallback:
// when inotify is not available, a directory cannot be watched (the inotify watch limit),
// the event queue overflowed, or the watched directory itself went away.
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
  DirectoryWatcher(std::string path, std::chrono::milliseconds poll_interval, Callback callback);
  ~DirectoryWatcher();
  DirectoryWatcher(const DirectoryWatcher&) = delete;
  DirectoryWatcher& operator=(const DirectoryWatcher&) = delete;
  // Starts watching, loads once synchronously (calling back), then watches on a thread.
  void Start();
  void Stop();
  // Whether the whole tree is watched with inotify now (false: polling).
  [[nodiscard]] bool watching() const { return !polling_.load(); }

 private:
  using Fingerprints = std::map<std::string, std::pair<long long, long long>>;
  [[nodiscard]] Fingerprints Fingerprint() const;
  void Run();
  // Watches `dir` and its subdirectories; false if one could not be watched.
  bool WatchTree(const std::string& dir);
  // Drops every watch and watches the tree again (after an overflow, or the root moved).
  void Rewatch();

  std::string path_;
  std::string dir_;   // the directory watched at the top: path_, or the parent of a file
  std::string file_;  // when path_ is a file: its name in dir_
  std::chrono::milliseconds poll_interval_;
  Callback callback_;
  int inotify_fd_ = -1;
  int wake_fd_ = -1;                    // an eventfd: Stop() wakes the thread
  std::map<int, std::string> watches_;  // watch descriptor -> directory
  int root_wd_ = -1;
  std::atomic<bool> polling_{true};
  bool warned_ = false;  // a watch failure was logged
  Fingerprints last_;
  std::thread thread_;
};

// The file source: a DirectoryWatcher whose loads replace the store's contents.
class FileSource final : public Source {
 public:
  FileSource(std::string path, std::chrono::milliseconds poll_interval, Sink* sink)
      : watcher_(std::move(path), poll_interval,
                 [sink](LoadResult r) { sink->Replace(std::move(r)); }) {}
  void Start() override { watcher_.Start(); }
  void Stop() override { watcher_.Stop(); }
  [[nodiscard]] bool watching() const { return watcher_.watching(); }

 private:
  DirectoryWatcher watcher_;
};

}  // namespace skiff::source

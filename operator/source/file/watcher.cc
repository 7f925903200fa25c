#include "operator/source/file/watcher.h"

#include <sys/stat.h>

#include <filesystem>

namespace skiff::source {

namespace fs = std::filesystem;

DirectoryWatcher::DirectoryWatcher(std::string path, std::chrono::milliseconds interval,
                                   Callback callback)
    : path_(std::move(path)), interval_(interval), callback_(std::move(callback)) {}

DirectoryWatcher::~DirectoryWatcher() { Stop(); }

std::map<std::string, std::pair<long long, long long>> DirectoryWatcher::Fingerprint() const {
  std::map<std::string, std::pair<long long, long long>> out;
  auto add = [&out](const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      out[p.string()] = {
          static_cast<long long>(st.st_size),
          static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec};
    }
  };
  std::error_code ec;
  if (fs::is_directory(path_, ec)) {
    for (auto it = fs::recursive_directory_iterator(path_, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      auto ext = it->path().extension().string();
      if (it->is_regular_file(ec) && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
        add(it->path());
      }
    }
  } else {
    add(path_);
  }
  return out;
}

void DirectoryWatcher::Start() {
  auto last = Fingerprint();
  callback_(LoadPath(path_));
  thread_ = std::thread([this, last]() mutable {
    while (!stop_) {
      auto deadline = std::chrono::steady_clock::now() + interval_;
      while (!stop_ && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (stop_) {
        break;
      }
      auto now = Fingerprint();
      if (now != last) {
        last = std::move(now);
        callback_(LoadPath(path_));
      }
    }
  });
}

void DirectoryWatcher::Stop() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace skiff::source

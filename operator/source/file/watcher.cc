#include "operator/source/file/watcher.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

namespace skiff::source {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                              IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// A deletion or a rename away is reloaded after this long without further events.
constexpr std::chrono::milliseconds kQuiet{10};
constexpr std::chrono::milliseconds kMaxQuietWait{200};

bool IsManifestName(std::string_view name) {
  auto ends = [name](std::string_view ext) {
    return name.size() > ext.size() && name.substr(name.size() - ext.size()) == ext;
  };
  return ends(".yaml") || ends(".yml") || ends(".json");
}

bool Hidden(std::string_view name) { return !name.empty() && name[0] == '.'; }

std::string ErrnoText(int e) { return std::error_code(e, std::generic_category()).message(); }

}  // namespace

DirectoryWatcher::DirectoryWatcher(std::string path, std::chrono::milliseconds poll_interval,
                                   Callback callback)
    : path_(std::move(path)), poll_interval_(poll_interval), callback_(std::move(callback)) {}

DirectoryWatcher::~DirectoryWatcher() { Stop(); }

DirectoryWatcher::Fingerprints DirectoryWatcher::Fingerprint() const {
  Fingerprints out;
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

bool DirectoryWatcher::WatchTree(const std::string& dir) {
  uint32_t mask = kDirMask | (dir == dir_ ? 0 : IN_DONT_FOLLOW);
  int wd = ::inotify_add_watch(inotify_fd_, dir.c_str(), mask);
  if (wd < 0) {
    int e = errno;
    if (!warned_) {  // once: with the watch limit reached, every further directory fails too
      warned_ = true;
      spdlog::warn("config: cannot watch {} with inotify ({}{}); polling every {} ms", dir,
                   ErrnoText(e), e == ENOSPC ? ": raise fs.inotify.max_user_watches" : "",
                   poll_interval_.count());
    }
    return false;
  }
  watches_[wd] = dir;
  if (dir == dir_) {
    root_wd_ = wd;
  }
  if (!file_.empty()) {
    return true;  // a file's directory: its subdirectories are not read
  }
  bool ok = true;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    // As the loader: no hidden names, no symbolic links to directories.
    if (!Hidden(it->path().filename().string()) && it->is_directory(ec) && !it->is_symlink(ec)) {
      ok = WatchTree(it->path().string()) && ok;
    }
  }
  return ok;
}

void DirectoryWatcher::Rewatch() {
  for (const auto& [wd, dir] : watches_) {
    ::inotify_rm_watch(inotify_fd_, wd);
  }
  watches_.clear();
  root_wd_ = -1;
  std::error_code ec;
  if (fs::is_directory(path_, ec)) {
    dir_ = path_;
    file_.clear();
  } else {
    fs::path p(path_);
    dir_ = p.has_parent_path() ? p.parent_path().string() : ".";
    file_ = p.filename().string();
  }
  bool exists = fs::is_directory(dir_, ec);
  if (!exists && !polling_) {
    spdlog::warn("config: {} is gone; polling every {} ms until it is back", dir_,
                 poll_interval_.count());
  } else if (!exists && inotify_fd_ >= 0) {
    spdlog::warn("config: {} does not exist; polling every {} ms until it does", dir_,
                 poll_interval_.count());
  }
  bool ok = inotify_fd_ >= 0 && exists && WatchTree(dir_);
  if (ok && polling_) {
    spdlog::info("config: watching {} with inotify ({} directories)", path_, watches_.size());
  }
  if (ok) {
    warned_ = false;
  }
  polling_ = !ok;
}

void DirectoryWatcher::Start() {
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    spdlog::warn("config: inotify is not available ({}); polling {} every {} ms", ErrnoText(errno),
                 path_, poll_interval_.count());
  }
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // Watch first, then load: a change made meanwhile is an event, not lost.
  Rewatch();
  if (polling_) {
    last_ = Fingerprint();
  }
  callback_(LoadPath(path_));
  thread_ = std::thread([this] { Run(); });
}

void DirectoryWatcher::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (::write(wake_fd_, &one, sizeof one) < 0) {
      spdlog::warn("config: waking the watcher: {}", ErrnoText(errno));
    }
    thread_.join();
  }
  if (inotify_fd_ >= 0) {
    ::close(inotify_fd_);
    inotify_fd_ = -1;
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
  watches_.clear();
}

void DirectoryWatcher::Run() {
  alignas(struct inotify_event) char buf[64 * 1024];
  while (true) {
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    int timeout = polling_ ? static_cast<int>(poll_interval_.count()) : -1;
    int n = ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, timeout);
    if (n < 0 && errno != EINTR) {
      spdlog::error("config: poll: {}", ErrnoText(errno));
      return;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      return;  // Stop()
    }
    bool reload = false;
    bool settle = false;   // a deletion: reload after a quiet moment
    bool rewatch = false;  // an overflow, or the top directory went away
    auto read_events = [&] {
      bool any = false;
      while (true) {
        ssize_t len = ::read(inotify_fd_, buf, sizeof buf);
        if (len <= 0) {
          return any;  // EAGAIN: nothing more now
        }
        any = true;
        for (char* p = buf; p < buf + len;) {
          const auto* ev = reinterpret_cast<const struct inotify_event*>(p);
          p += sizeof(struct inotify_event) + ev->len;
          if ((ev->mask & IN_Q_OVERFLOW) != 0) {
            rewatch = reload = true;
            continue;
          }
          auto it = watches_.find(ev->wd);
          if (it == watches_.end()) {
            continue;
          }
          bool root = ev->wd == root_wd_;
          if ((ev->mask & IN_IGNORED) != 0) {
            watches_.erase(it);
            if (root) {
              root_wd_ = -1;
              rewatch = reload = true;
            }
            continue;
          }
          if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0) {
            if (root) {
              rewatch = reload = true;  // the top directory went away or moved
            }
            continue;  // a subdirectory: its parent reports it
          }
          std::string name = ev->len > 0 ? std::string(ev->name) : std::string();
          std::string full = it->second + "/" + name;
          if (!file_.empty()) {
            if (name == file_) {
              if ((ev->mask & IN_ISDIR) != 0) {
                rewatch = reload = true;  // the file is a directory now
              } else if ((ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB | IN_CREATE)) != 0) {
                reload = true;
              } else {
                settle = true;
              }
            }
            continue;
          }
          if ((ev->mask & IN_ISDIR) != 0) {
            if (Hidden(name)) {
              continue;
            }
            if ((ev->mask & (IN_MOVED_FROM | IN_DELETE)) != 0) {
              // Its watches go (a moved directory would keep them, at another path).
              for (auto w = watches_.begin(); w != watches_.end();) {
                if (w->second == full || w->second.compare(0, full.size() + 1, full + "/") == 0) {
                  ::inotify_rm_watch(inotify_fd_, w->first);
                  w = watches_.erase(w);
                } else {
                  ++w;
                }
              }
              settle = true;
            }
            if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0) {
              // New: watch it, then read it (files may be in it already).
              if (!WatchTree(full) && !polling_) {
                polling_ = true;
                last_ = Fingerprint();
              }
              reload = true;
            }
            if ((ev->mask & IN_ATTRIB) != 0) {
              reload = true;  // perhaps readable or unreadable now
            }
            continue;
          }
          // ".." names: the atomic writer of Kubernetes volumes swaps "..data".
          if (!IsManifestName(name) && name.compare(0, 2, "..") != 0) {
            continue;
          }
          if ((ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB)) != 0) {
            reload = true;
          } else if ((ev->mask & (IN_MOVED_FROM | IN_DELETE)) != 0) {
            settle = true;
          } else if ((ev->mask & IN_CREATE) != 0) {
            // Complete at once only as a link (a new file counts when it is closed).
            struct stat st {};
            if (::lstat(full.c_str(), &st) == 0 &&
                (S_ISLNK(st.st_mode) || (S_ISREG(st.st_mode) && st.st_nlink > 1))) {
              reload = true;
            }
          }
        }
      }
    };
    if (inotify_fd_ >= 0 && (fds[1].revents & POLLIN) != 0) {
      read_events();
      if (settle) {
        // Wait until the tree is quiet for a moment (bounded): what moved away may be
        // about to be replaced.
        auto until = std::chrono::steady_clock::now() + kMaxQuietWait;
        while (std::chrono::steady_clock::now() < until) {
          pollfd more[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
          if (::poll(more, 2, static_cast<int>(kQuiet.count())) <= 0) {
            break;
          }
          if ((more[0].revents & POLLIN) != 0) {
            return;
          }
          read_events();
        }
        reload = true;
      }
    }
    if (rewatch) {
      Rewatch();
      if (polling_) {
        last_ = Fingerprint();
      }
    }
    if (polling_ && !reload) {
      if (root_wd_ < 0 && inotify_fd_ >= 0) {
        std::error_code ec;
        if (fs::exists(path_, ec)) {
          Rewatch();  // it is back: watch it again
          reload = true;
        }
      }
      auto now = Fingerprint();
      if (now != last_) {
        last_ = std::move(now);
        reload = true;
      }
    } else if (polling_) {
      last_ = Fingerprint();
    }
    if (reload) {
      callback_(LoadPath(path_));
    }
  }
}

}  // namespace skiff::source

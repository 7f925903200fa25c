// The file source's watcher on a real directory with real inotify. The poll interval is an
// hour, so whatever is noticed was noticed by inotify; waits are bounded (20 s).
#include "operator/source/file/watcher.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

namespace fs = std::filesystem;

namespace {

std::string Service(const std::string& name) {
  return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name +
         ", namespace: default}\nspec: {ports: [{name: http, port: 80}]}\n";
}

void WriteFile(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

// Written next to it and renamed into place, as editors and `kubectl cp` do.
void SaveAtomically(const fs::path& p, const std::string& text) {
  fs::path tmp = p.parent_path() / (".tmp-" + p.filename().string());
  WriteFile(tmp, text);
  fs::rename(tmp, p);
}

struct Loads {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::set<std::string>> got;  // the Service names of each load

  skiff::source::DirectoryWatcher::Callback Callback() {
    return [this](skiff::source::LoadResult r) {
      std::set<std::string> names;
      for (const auto& o : r.objects) {
        names.insert(o.meta.name);
      }
      std::lock_guard<std::mutex> lock(mu);
      got.push_back(std::move(names));
      cv.notify_all();
    };
  }
  // Waits until the last load is `want`.
  bool WaitFor(const std::set<std::string>& want) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20),
                       [&] { return !got.empty() && got.back() == want; });
  }
};

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/skiff-watch-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

constexpr std::chrono::hours kNoPoll{1};

}  // namespace

TEST_CASE("watcher: saved, rewritten and deleted files are noticed without polling") {
  TempDir dir;
  WriteFile(dir.path / "a.yaml", Service("a"));
  Loads loads;
  skiff::source::DirectoryWatcher watcher(dir.path.string(), kNoPoll, loads.Callback());
  watcher.Start();
  REQUIRE(loads.WaitFor({"a"}));  // the first load, before Start returns
  CHECK(watcher.watching());

  SaveAtomically(dir.path / "b.yaml", Service("b"));
  CHECK(loads.WaitFor({"a", "b"}));
  WriteFile(dir.path / "b.yaml", Service("b2"));  // in place: counts once closed
  CHECK(loads.WaitFor({"a", "b2"}));
  fs::remove(dir.path / "a.yaml");
  CHECK(loads.WaitFor({"b2"}));
  watcher.Stop();
}

TEST_CASE("watcher: subdirectories, new ones and ones moved in, are watched") {
  TempDir dir;
  TempDir outside;
  fs::create_directories(dir.path / "old" / "deep");
  Loads loads;
  skiff::source::DirectoryWatcher watcher(dir.path.string(), kNoPoll, loads.Callback());
  watcher.Start();
  REQUIRE(loads.WaitFor({}));

  SaveAtomically(dir.path / "old" / "deep" / "a.yaml", Service("a"));
  CHECK(loads.WaitFor({"a"}));
  fs::create_directories(dir.path / "new" / "sub");
  SaveAtomically(dir.path / "new" / "sub" / "b.yaml", Service("b"));
  CHECK(loads.WaitFor({"a", "b"}));
  // A later change inside the new directory is noticed too (its watch is in place).
  WriteFile(dir.path / "new" / "sub" / "b.yaml", Service("b2"));
  CHECK(loads.WaitFor({"a", "b2"}));
  // A directory with a file in it, moved into the tree.
  fs::create_directories(outside.path / "moved");
  WriteFile(outside.path / "moved" / "c.yaml", Service("c"));
  fs::rename(outside.path / "moved", dir.path / "moved");
  CHECK(loads.WaitFor({"a", "b2", "c"}));
  WriteFile(dir.path / "moved" / "c.yaml", Service("c2"));
  CHECK(loads.WaitFor({"a", "b2", "c2"}));
  // Moved out again: its files are gone, and changes there are not ours any more.
  fs::rename(dir.path / "moved", outside.path / "back");
  CHECK(loads.WaitFor({"a", "b2"}));
  fs::remove_all(dir.path / "new");
  CHECK(loads.WaitFor({"a"}));
  watcher.Stop();
}

TEST_CASE("watcher: a Kubernetes ConfigMap volume (the ..data symlink swap) is followed") {
  TempDir dir;
  // As kubelet's atomic writer lays it out: a timestamped directory, ..data pointing at it,
  // and the visible names pointing through ..data.
  fs::create_directories(dir.path / "..2024_01");
  WriteFile(dir.path / "..2024_01" / "config.yaml", Service("v1"));
  fs::create_directory_symlink("..2024_01", dir.path / "..data");
  fs::create_symlink("..data/config.yaml", dir.path / "config.yaml");
  Loads loads;
  skiff::source::DirectoryWatcher watcher(dir.path.string(), kNoPoll, loads.Callback());
  watcher.Start();
  REQUIRE(loads.WaitFor({"v1"}));

  fs::create_directories(dir.path / "..2024_02");
  WriteFile(dir.path / "..2024_02" / "config.yaml", Service("v2"));
  fs::create_directory_symlink("..2024_02", dir.path / "..data_tmp");
  fs::rename(dir.path / "..data_tmp", dir.path / "..data");
  CHECK(loads.WaitFor({"v2"}));
  watcher.Stop();
}

TEST_CASE("watcher: a directory that is not there yet (nor its parent) is polled, then watched") {
  TempDir parent;
  fs::path dir = parent.path / "missing" / "config";
  Loads loads;
  skiff::source::DirectoryWatcher watcher(dir.string(), std::chrono::milliseconds(50),
                                          loads.Callback());
  watcher.Start();
  REQUIRE(loads.WaitFor({}));
  CHECK_FALSE(watcher.watching());
  fs::create_directories(dir);
  WriteFile(dir / "a.yaml", Service("a"));
  CHECK(loads.WaitFor({"a"}));
  CHECK(watcher.watching());
  SaveAtomically(dir / "b.yaml", Service("b"));
  CHECK(loads.WaitFor({"a", "b"}));
  watcher.Stop();
}

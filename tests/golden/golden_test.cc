// Golden tests: each directory under tests/golden/ holds input manifests (input.yaml or
// input/), an optional group.json (role, labels, namespace and capture of the proxy group,
// and the mesh's outboundTrafficPolicy), and the
// expected snapshot.json, status.json and load-errors.txt. UPDATE_GOLDEN=1 rewrites the
// expected files instead of comparing; review the diff.
#include <google/protobuf/arena.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "operator/source/file/load.h"
#include "operator/translate/translate.h"

namespace fs = std::filesystem;

namespace {

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Check(const fs::path& expected_path, const std::string& actual, bool update) {
  if (update) {
    std::ofstream(expected_path, std::ios::binary) << actual;
    return;
  }
  INFO("expected file: " << expected_path.string() << " (UPDATE_GOLDEN=1 rewrites it)");
  REQUIRE(fs::exists(expected_path));
  CHECK(ReadFile(expected_path) == actual);
}

// The snapshot as JSON, built on the heap or on an arena (which must not matter).
std::string SnapshotJson(const skiff::translate::Translator& translator,
                         const skiff::translate::ProxyGroup& group, bool on_arena) {
  if (on_arena) {
    google::protobuf::Arena arena(skiff::translate::SnapshotArenaOptions());
    auto* snapshot = google::protobuf::Arena::CreateMessage<skiff::v1::Snapshot>(&arena);
    translator.Build(group, snapshot);
    return skiff::translate::SnapshotToJson(*snapshot);
  }
  skiff::v1::Snapshot snapshot;
  translator.Build(group, &snapshot);
  return skiff::translate::SnapshotToJson(snapshot);
}

void RunCase(const fs::path& dir) {
  bool update = std::getenv("UPDATE_GOLDEN") != nullptr;
  fs::path input = fs::exists(dir / "input") ? dir / "input" : dir / "input.yaml";
  REQUIRE(fs::exists(input));
  skiff::translate::ProxyGroup group;
  skiff::translate::MeshConfig mesh;
  group.labels = {{"istio", "ingressgateway"}};
  if (fs::exists(dir / "group.json")) {
    auto j = nlohmann::json::parse(ReadFile(dir / "group.json"));
    group.role = j.value("role", group.role);
    group.namespace_ = j.value("namespace", group.namespace_);
    group.capture = j.value("capture", false);
    std::string policy = j.value("outboundTrafficPolicy", "ALLOW_ANY");
    REQUIRE((policy == "ALLOW_ANY" || policy == "REGISTRY_ONLY"));
    if (policy == "REGISTRY_ONLY") {
      mesh.outbound_traffic_policy =
          skiff::translate::MeshConfig::OutboundTrafficPolicy::kRegistryOnly;
    }
    if (j.contains("labels")) {
      for (const auto& [key, value] : j["labels"].items()) {
        group.labels[key] = value.get<std::string>();
      }
    }
  }
  auto loaded = skiff::source::LoadPath(input.string());
  std::string errors;
  for (const auto& e : loaded.errors) {
    // Paths relative to the case directory, so the files do not depend on the checkout.
    std::string text = e.Format();
    std::string prefix = dir.string() + "/";
    for (size_t pos; (pos = text.find(prefix)) != std::string::npos;) {
      text.erase(pos, prefix.size());
    }
    errors += text + "\n";
  }
  skiff::translate::Translator translator(loaded.objects, mesh);
  std::string snapshot = SnapshotJson(translator, group, /*on_arena=*/false);
  Check(dir / "snapshot.json", snapshot, update);
  Check(dir / "status.json", skiff::translate::StatusesToJson(translator.Statuses()), update);
  Check(dir / "load-errors.txt", errors, update);
  // Translation is deterministic: a second run gives the same bytes, on an arena too.
  skiff::translate::Translator again(loaded.objects, mesh);
  CHECK(SnapshotJson(again, group, /*on_arena=*/true) == snapshot);
}

}  // namespace

TEST_CASE("golden") {
  const char* only = std::getenv("SKIFF_GOLDEN_CASE");
  int ran = 0;
  for (const auto& entry : fs::directory_iterator(SKIFF_GOLDEN_DIR)) {
    if (!entry.is_directory()) {
      continue;
    }
    std::string name = entry.path().filename().string();
    if (only != nullptr && name != only) {
      continue;
    }
    DYNAMIC_SECTION(name) { RunCase(entry.path()); }
    ++ran;
  }
  CHECK(ran > 0);
}

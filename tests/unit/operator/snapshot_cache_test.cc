// The snapshot cache: a new group is built on the cache's thread and announced; updates are
// built by the caller and published; an endpoint-only update keeps every other type (the
// same objects); the cache is bounded.
#include "operator/xds/snapshot_cache.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "operator/api/decode.h"

namespace {

using skiff::xds::SnapshotCache;

std::vector<skiff::api::Object> Objects(const std::string& prefix, int port) {
  return skiff::api::DecodeDocuments(
             "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
             "  selector: {istio: ingressgateway}\n  servers:\n"
             "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n"
             "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\n"
             "spec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - match: [{uri: {prefix: " +
                 prefix +
                 "}}]\n    route: [{destination: {host: svc}}]\n---\n"
                 "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n"
                 "spec: {ports: [{name: http, port: 80}]}\n---\n"
                 "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: svc-1, "
                 "labels: {kubernetes.io/service-name: svc}}\naddressType: IPv4\n"
                 "ports: [{name: http, port: " +
                 std::to_string(port) + "}]\nendpoints:\n- addresses: [10.0.0.1]\n",
             "test")
      .objects;
}

skiff::translate::ProxyGroup Gateway() {
  skiff::translate::ProxyGroup g;
  g.labels = {{"istio", "ingressgateway"}};
  return g;
}

size_t Index(const char* type) {
  for (size_t i = 0; i < skiff::xds::kTypeOrder.size(); ++i) {
    if (std::string_view(skiff::xds::kTypeOrder[i]) == type) {
      return i;
    }
  }
  return 0;
}

// Records the groups the builder announces.
struct Announced {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  bool WaitFor(int n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return count >= n; });
  }
};

}  // namespace

TEST_CASE("snapshot cache: a new group is built on the cache's thread, then announced") {
  skiff::xds::CacheMetrics metrics;
  SnapshotCache cache({}, &metrics);
  Announced announced;
  std::thread::id builder;
  cache.SetOnPublished([&](const skiff::translate::ProxyGroup&) {
    std::lock_guard<std::mutex> lock(announced.mu);
    builder = std::this_thread::get_id();
    ++announced.count;
    announced.cv.notify_all();
  });
  cache.Update(std::make_shared<skiff::translate::Translator>(Objects("/a", 8080)));
  CHECK(metrics.translations.load() == 0);  // no group yet: nothing built

  std::string error;
  auto entry = cache.Acquire(Gateway(), &error);
  REQUIRE(entry != nullptr);
  REQUIRE(announced.WaitFor(1));
  CHECK(builder != std::this_thread::get_id());
  auto first = SnapshotCache::Published(entry);
  REQUIRE(first != nullptr);
  CHECK(first->type(Index(skiff::xds::kRouteTableType)).resources.size() == 1);
  CHECK(metrics.translations.load() == 1);
  auto again = cache.Acquire(Gateway(), &error);  // a second proxy of the group shares it
  CHECK(again == entry);
  CHECK(metrics.translations.load() == 1);
  CHECK(cache.groups() == 1);

  // An update is built on the caller's thread and published before Update returns.
  cache.Update(std::make_shared<skiff::translate::Translator>(Objects("/b", 8080)));
  auto second = SnapshotCache::Published(entry);
  REQUIRE(second != first);
  CHECK(second->generation == cache.generation());
  CHECK(metrics.translations.load() == 2);
  CHECK(announced.count == 1);  // (the builder announces only what it built)
  cache.Release(entry);
  cache.Release(again);
  CHECK(cache.groups() == 0);
}

TEST_CASE("snapshot cache: endpoints alone keep every other type, the same objects") {
  skiff::xds::CacheMetrics metrics;
  SnapshotCache cache({}, &metrics);
  Announced announced;
  cache.SetOnPublished([&](const skiff::translate::ProxyGroup&) {
    std::lock_guard<std::mutex> lock(announced.mu);
    ++announced.count;
    announced.cv.notify_all();
  });
  cache.Update(std::make_shared<skiff::translate::Translator>(Objects("/a", 8080)));
  std::string error;
  auto entry = cache.Acquire(Gateway(), &error);
  REQUIRE(announced.WaitFor(1));
  auto before = SnapshotCache::Published(entry);
  REQUIRE(before != nullptr);

  cache.UpdateEndpoints(
      std::make_shared<skiff::translate::EndpointTranslator>(Objects("/a", 9090)));
  auto after = SnapshotCache::Published(entry);
  REQUIRE(after != before);
  CHECK(metrics.translations.load() == 1);  // no route translated
  CHECK(metrics.endpoint_translations.load() == 1);
  size_t eds = Index(skiff::xds::kEndpointsType);
  for (size_t i = 0; i < skiff::xds::kTypeOrder.size(); ++i) {
    INFO(skiff::xds::kTypeOrder[i]);
    if (i == eds) {
      CHECK(after->by_order[i] != before->by_order[i]);
      CHECK(after->type(i).version != before->type(i).version);
    } else {
      CHECK(after->by_order[i] == before->by_order[i]);  // the same object: same bytes
    }
  }
  // The new endpoints are those a full translation gives.
  auto full = skiff::translate::Translator(Objects("/a", 9090)).Build(Gateway());
  auto split = skiff::xds::SplitSnapshot(full);
  CHECK(skiff::xds::TypeVersion(split.at(skiff::xds::kEndpointsType)) == after->type(eds).version);

  // The same endpoints again: nothing new is published.
  cache.UpdateEndpoints(
      std::make_shared<skiff::translate::EndpointTranslator>(Objects("/a", 9090)));
  CHECK(SnapshotCache::Published(entry) == after);
  cache.Release(entry);
}

TEST_CASE("snapshot cache: a group beyond max_groups is refused, naming the flag") {
  skiff::xds::CacheMetrics metrics;
  skiff::xds::SnapshotCacheOptions options;
  options.max_groups = 1;
  SnapshotCache cache(options, &metrics);
  std::string error;
  auto one = cache.Acquire(Gateway(), &error);
  REQUIRE(one != nullptr);
  skiff::translate::ProxyGroup other = Gateway();
  other.namespace_ = "shop";
  CHECK(cache.Acquire(other, &error) == nullptr);
  CHECK(error.find("--max-proxy-groups") != std::string::npos);
  CHECK(metrics.refused.load() == 1);
  cache.Release(one);
  CHECK(cache.Acquire(other, &error) != nullptr);  // room again once the first is gone
}

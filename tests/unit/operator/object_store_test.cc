// The object store: no-op on equal objects, endpoint-only updates, the sync gate, deletion,
// hold-off batching, and the last good version on the way out.
#include "operator/store/object_store.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

namespace {

using skiff::store::ObjectStore;
using skiff::store::StoreUpdate;

skiff::api::Object One(const std::string& yaml) {
  auto decoded = skiff::api::DecodeDocuments(yaml, "test.yaml");
  REQUIRE(decoded.objects.size() == 1);
  return std::move(decoded.objects[0]);
}

std::string Vs(const std::string& host, const std::string& rv = "1",
               const std::string& timeout = "5s") {
  return "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
         "metadata: {name: web, namespace: shop, resourceVersion: \"" +
         rv + "\", generation: 1}\nspec:\n  hosts: [web]\n  http:\n  - timeout: " + timeout +
         "\n    route: [{destination: {host: " + host + "}}]\n";
}

std::string Slice(int port, const std::string& rv = "1") {
  return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, "
         "namespace: shop, resourceVersion: \"" +
         rv +
         "\", labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: "
         "http, port: " +
         std::to_string(port) + "}]\nendpoints:\n- addresses: [10.0.0.1]\n";
}

std::string Pod(const std::string& version) {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: {app: web, "
         "version: " +
         version + "}}\nstatus: {podIP: 10.0.0.1}\n";
}

// Collects the updates a store hands on.
struct Updates {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<StoreUpdate> got;

  ObjectStore::Consumer Consumer() {
    return [this](StoreUpdate u) {
      std::lock_guard<std::mutex> lock(mu);
      got.push_back(std::move(u));
      cv.notify_all();
    };
  }
  // Waits (at most 20 s) until `n` updates arrived.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return got.size() >= n; });
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return got.size();
  }
  StoreUpdate& At(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    return got.at(i);
  }
};

skiff::store::StoreOptions NoHoldoff() {
  skiff::store::StoreOptions o;
  o.holdoff = std::chrono::milliseconds(0);
  return o;
}

}  // namespace

TEST_CASE("store: an object equal but for its resourceVersion is the same object") {
  auto a = One(Vs("web-v1", "1"));
  auto b = One(Vs("web-v1", "2"));  // a status write: a new resourceVersion, nothing else
  CHECK(a.meta.resource_version != b.meta.resource_version);
  CHECK(ObjectStore::Same(a, b));
  CHECK_FALSE(ObjectStore::Same(a, One(Vs("web-v2", "1"))));
  auto labelled = a;
  labelled.meta.labels["x"] = "y";
  CHECK_FALSE(ObjectStore::Same(a, labelled));
  auto regenerated = a;
  regenerated.meta.generation = 2;
  CHECK_FALSE(ObjectStore::Same(a, regenerated));  // observedGeneration must follow
  auto moved = a;
  moved.origin = "other.yaml document 1";
  CHECK_FALSE(ObjectStore::Same(a, moved));  // its messages and status name the place
}

TEST_CASE(
    "store: nothing goes out before the sources are synced, then the first update even "
    "when empty") {
  Updates updates;
  ObjectStore store(NoHoldoff(), updates.Consumer());
  store.ReplaceKind(skiff::api::Kind::kVirtualService, {});
  store.Upsert(One(Vs("web-v1")));
  store.Synced();
  REQUIRE(updates.WaitFor(1));
  CHECK(updates.At(0).inputs.objects.size() == 1);
  CHECK_FALSE(updates.At(0).endpoints_only);  // the first update is never endpoints only

  Updates empty;
  ObjectStore none(NoHoldoff(), empty.Consumer());
  none.Synced();
  REQUIRE(empty.WaitFor(1));
  CHECK(empty.At(0).inputs.objects.empty());
}

TEST_CASE("store: a watch event equal to the stored object (a status write) is a no-op") {
  Updates updates;
  ObjectStore store(NoHoldoff(), updates.Consumer());
  store.Upsert(One(Vs("web-v1", "1")));
  store.Synced();
  REQUIRE(updates.WaitFor(1));
  store.Upsert(One(Vs("web-v1", "2")));  // the status echo
  store.Upsert(One(Vs("web-v1", "3")));
  store.ReplaceKind(skiff::api::Kind::kVirtualService, {One(Vs("web-v1", "4"))});  // a relist
  CHECK(store.metrics().unchanged.load() == 3);
  // A real change is the barrier: it comes after the no-ops and is the second update.
  store.Upsert(One(Vs("web-v2", "5")));
  REQUIRE(updates.WaitFor(2));
  CHECK(updates.Count() == 2);
  CHECK(updates.At(1)
            .inputs.objects.at(0)
            .As<skiff::api::VirtualService>()
            .http[0]
            .route[0]
            .destination.host == "web-v2");
  CHECK(store.metrics().updates.load() == 2);
}

TEST_CASE("store: EndpointSlice and Pod changes alone are endpoint-only updates") {
  Updates updates;
  ObjectStore store(NoHoldoff(), updates.Consumer());
  store.Replace({});
  REQUIRE(updates.WaitFor(1));
  store.Upsert(One(Vs("web")));
  REQUIRE(updates.WaitFor(2));
  CHECK_FALSE(updates.At(1).endpoints_only);
  store.Upsert(One(Slice(8080)));
  REQUIRE(updates.WaitFor(3));
  CHECK(updates.At(2).endpoints_only);
  CHECK(updates.At(2).inputs.objects.size() == 2);  // every object, not just the change
  store.Upsert(One(Pod("v1")));
  REQUIRE(updates.WaitFor(4));
  CHECK(updates.At(3).endpoints_only);
  store.Delete(skiff::api::Kind::kEndpointSlice, "shop", "web-1");
  REQUIRE(updates.WaitFor(5));
  CHECK(updates.At(4).endpoints_only);
  CHECK(updates.At(4).inputs.objects.size() == 2);
  store.Delete(skiff::api::Kind::kVirtualService, "shop", "web");
  REQUIRE(updates.WaitFor(6));
  CHECK_FALSE(updates.At(5).endpoints_only);
  CHECK(store.metrics().endpoint_updates.load() == 3);
}

TEST_CASE("store: Replace deletes what is absent, and a change of load errors is a change") {
  Updates updates;
  ObjectStore store(NoHoldoff(), updates.Consumer());
  skiff::source::LoadResult first;
  first.objects = {One(Vs("web")), One(Slice(8080))};
  store.Replace(first);
  REQUIRE(updates.WaitFor(1));
  skiff::source::LoadResult second;
  second.objects = {One(Slice(8080))};
  store.Replace(second);
  REQUIRE(updates.WaitFor(2));
  CHECK(updates.At(1).inputs.objects.size() == 1);
  CHECK_FALSE(updates.At(1).endpoints_only);
  store.Replace(second);  // the same again (a reload that found nothing new)
  skiff::source::LoadResult broken = second;
  broken.errors.push_back({"bad.yaml document 1", "line 1, column 1: no"});
  broken.broken_files.push_back("bad.yaml");
  store.Replace(broken);
  REQUIRE(updates.WaitFor(3));
  CHECK(updates.Count() == 3);
  CHECK(updates.At(2).inputs.errors.size() == 1);
  CHECK_FALSE(updates.At(2).endpoints_only);
}

TEST_CASE("store: the last good version goes out in place of an invalid one") {
  Updates updates;
  ObjectStore store(NoHoldoff(), updates.Consumer());
  store.Upsert(One(Vs("web-v1")));
  store.Synced();
  REQUIRE(updates.WaitFor(1));
  auto bad = One(Vs("web-v2", "2", "5x"));
  REQUIRE_FALSE(bad.Valid());
  store.Upsert(std::move(bad));
  REQUIRE(updates.WaitFor(2));
  const auto& served = updates.At(1).inputs.objects.at(0);
  CHECK(served.Valid());
  CHECK(served.As<skiff::api::VirtualService>().http[0].route[0].destination.host == "web-v1");
  REQUIRE(store.Status().resources.size() == 1);
  CHECK(store.Status().resources[0].serving_last_good);
}

TEST_CASE("store: changes within the hold-off go out as one update") {
  Updates updates;
  skiff::store::StoreOptions o;
  o.holdoff = std::chrono::milliseconds(300);
  o.max_wait = std::chrono::seconds(60);
  ObjectStore store(o, updates.Consumer());
  auto started = std::chrono::steady_clock::now();
  store.Upsert(One(Vs("web")));
  store.Upsert(One(Slice(8080)));
  store.Upsert(One(Pod("v1")));
  store.Synced();
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE(updates.WaitFor(1));
  CHECK(std::chrono::steady_clock::now() - started >= o.holdoff);
  if (took < o.holdoff) {  // (a machine that stalled longer than the hold-off proves nothing)
    CHECK(updates.At(0).inputs.objects.size() == 3);
  }
}

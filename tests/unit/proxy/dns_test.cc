// DNS names as endpoint addresses: the cache's resolver thread (a fake resolver here) with its
// refresh, change callback, failed lookups and forgotten names; Config::Build taking a name
// (no endpoints until it resolves, one per address after) and refusing what is no name.
#include "proxy/config/dns.h"

#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "proxy/config/config.h"

using skiff::proxy::DnsCache;

namespace {

// A resolver whose answers the test sets; counts lookups per name.
struct FakeDns {
  std::mutex mu;
  std::map<std::string, std::optional<std::vector<std::string>>> answers;
  std::map<std::string, int> lookups;
  DnsCache::Resolver Resolver() {
    return [this](const std::string& name) -> std::optional<std::vector<std::string>> {
      std::lock_guard<std::mutex> lock(mu);
      ++lookups[name];
      auto it = answers.find(name);
      return it == answers.end() ? std::nullopt : it->second;
    };
  }
  void Set(const std::string& name, std::optional<std::vector<std::string>> a) {
    std::lock_guard<std::mutex> lock(mu);
    answers[name] = std::move(a);
  }
  int Lookups(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu);
    return lookups[name];
  }
};

// Polls `fn` until it holds, for up to 20 s.
template <typename Fn>
bool Eventually(Fn fn) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fn()) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return fn();
}

std::vector<std::string> V(std::initializer_list<const char*> ips) {
  return {ips.begin(), ips.end()};
}

}  // namespace

TEST_CASE("dns cache: wanted names resolve, refresh, and changes are announced") {
  FakeDns dns;
  dns.Set("db.example", V({"10.0.0.1"}));
  DnsCache cache(dns.Resolver(), std::chrono::milliseconds(20));
  std::atomic<int> changes{0};
  cache.OnChange([&] { ++changes; });
  CHECK_FALSE(cache.Lookup("db.example").has_value());
  cache.Want({"db.example", "gone.example"});
  REQUIRE(Eventually([&] { return cache.Lookup("db.example") == V({"10.0.0.1"}); }));
  CHECK(Eventually([&] { return changes.load() == 1; }));
  CHECK_FALSE(cache.Lookup("gone.example").has_value());  // its lookups fail
  // The same answer again: no change announced; a new one: announced and served.
  REQUIRE(Eventually([&] { return dns.Lookups("db.example") >= 3; }));
  CHECK(changes.load() == 1);
  dns.Set("db.example", V({"10.0.0.1", "10.0.0.2"}));
  CHECK(Eventually([&] { return cache.Lookup("db.example") == V({"10.0.0.1", "10.0.0.2"}); }));
  CHECK(Eventually([&] { return changes.load() == 2; }));
  // A failed lookup keeps the last addresses.
  dns.Set("db.example", std::nullopt);
  int before = dns.Lookups("db.example");
  REQUIRE(Eventually([&] { return dns.Lookups("db.example") >= before + 2; }));
  CHECK(cache.Lookup("db.example") == V({"10.0.0.1", "10.0.0.2"}));
  // A name that no longer exists (an empty answer, as NXDOMAIN) has no addresses.
  dns.Set("db.example", std::vector<std::string>());
  CHECK(Eventually([&] {
    auto a = cache.Lookup("db.example");
    return a.has_value() && a->empty();
  }));
  // A name no longer wanted is forgotten and no longer looked up.
  cache.Want({});
  CHECK_FALSE(cache.Lookup("db.example").has_value());
  int after = dns.Lookups("db.example");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(dns.Lookups("db.example") <= after + 1);  // (at most the pass in progress)
  cache.OnChange(nullptr);
}

TEST_CASE("dns cache: the system resolver reads localhost from the hosts file, IPv4 only") {
  auto ips = DnsCache::SystemResolve("localhost");
  REQUIRE(ips.has_value());
  CHECK(std::find(ips->begin(), ips->end(), "127.0.0.1") != ips->end());
  for (const auto& ip : *ips) {
    CHECK(ip.find(':') == std::string::npos);
  }
}

TEST_CASE("config: a DNS name endpoint has no endpoints until it resolves; junk is refused") {
  auto build = [](const std::string& address, std::string* error, bool dns = true) {
    skiff::v1::Snapshot snap;
    std::string json = R"({"clusters":[{"name":"ext"}],
      "endpoints":[{"clusterName":"ext","endpoints":[{"address":")" +
                       address + R"(","port":443,"healthy":true}]}]})";
    REQUIRE(google::protobuf::util::JsonStringToMessage(json, &snap).ok());
    return skiff::proxy::Config::Build(std::move(snap), {}, 1, error, true, dns);
  };
  std::string error;
  // (Config::Build only reads the process's cache; nothing here asks it to resolve.)
  auto cfg = build("never-resolved.skiff.test", &error);
  INFO(error);
  REQUIRE(cfg != nullptr);
  CHECK(cfg->FindCluster("ext")->endpoints.empty());
  CHECK(cfg->dns_names() == std::set<std::string>{"never-resolved.skiff.test"});
  cfg = build("10.1.2.3", &error);
  REQUIRE(cfg != nullptr);
  CHECK(cfg->FindCluster("ext")->endpoints.size() == 1);
  CHECK(cfg->dns_names().empty());
  // Outside xDS (a bootstrap file: nothing would resolve it) a name is refused.
  CHECK(build("db.example", &error, /*dns=*/false) == nullptr);
  CHECK(error == "endpoints[ext].endpoints[0].address: \"db.example\" is not an IP address");
  for (const char* bad : {"bad_name.example", "-a.example", "a..example", "1.2.3.999", ""}) {
    error.clear();
    CHECK(build(bad, &error) == nullptr);
    CHECK(error == std::string("endpoints[ext].endpoints[0].address: \"") + bad +
                       "\" is not an IP address or a DNS name");
  }
}

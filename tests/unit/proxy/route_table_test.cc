#include "proxy/router/route_table.h"

#include <google/protobuf/util/json_util.h>

#include <catch2/catch.hpp>

#include "proxy/config/config.h"

using skiff::router::RouteTable;

namespace {

skiff::v1::RouteTable Table(const std::string& json) {
  skiff::v1::RouteTable t;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json, &t).ok());
  return t;
}

const skiff::router::Route* Match(const RouteTable& table, std::string_view host,
                                  std::string_view path, std::string_view method = "GET") {
  std::function<std::optional<std::string_view>(std::string_view)> no_headers =
      [](std::string_view) -> std::optional<std::string_view> { return std::nullopt; };
  skiff::router::RequestView req;
  req.method = method;
  req.path = path;
  req.scheme = "http";
  req.authority = host;
  req.header = &no_headers;
  const auto* vh = table.FindVirtualHost(host);
  if (vh == nullptr) {
    return nullptr;
  }
  for (const auto& r : vh->routes) {
    if (r.Matches(req)) {
      return &r;
    }
  }
  return nullptr;
}

}  // namespace

TEST_CASE("virtual hosts: exact, then longest wildcard, then *") {
  RouteTable t;
  std::string error;
  REQUIRE(t.Init(Table(R"({"name":"t","virtualHosts":[
    {"name":"exact","domains":["a.example.com","b.example.com:8080"]},
    {"name":"wild","domains":["*.example.com"]},
    {"name":"wilder","domains":["*.deep.example.com"]},
    {"name":"any","domains":["*"]}]})"),
                 &error));
  CHECK(t.FindVirtualHost("a.example.com")->name == "exact");
  CHECK(t.FindVirtualHost("A.Example.COM:80")->name == "exact");
  CHECK(t.FindVirtualHost("b.example.com:8080")->name == "exact");
  CHECK(t.FindVirtualHost("c.example.com")->name == "wild");
  CHECK(t.FindVirtualHost("x.deep.example.com")->name == "wilder");
  CHECK(t.FindVirtualHost("example.com")->name == "any");
  CHECK(t.FindVirtualHost("other.org")->name == "any");
}

TEST_CASE("routes: first match wins, prefix / exact / regex / method") {
  RouteTable t;
  std::string error;
  // The table points into its proto, which must outlive it (Config owns both).
  auto proto = Table(R"({"name":"t","virtualHosts":[{"name":"v","domains":["*"],"routes":[
    {"name":"exact","match":{"uri":{"exact":"/a"}},"directResponse":{"status":200}},
    {"name":"post","match":{"uri":{"prefix":"/a"},"method":{"exact":"POST"}},"directResponse":{"status":200}},
    {"name":"regex","match":{"uri":{"regex":"/a/[0-9]+"}},"directResponse":{"status":200}},
    {"name":"prefix","match":{"uri":{"prefix":"/a"}},"directResponse":{"status":200}}]}]})");
  REQUIRE(t.Init(proto, &error));
  CHECK(Match(t, "h", "/a")->proto->name() == "exact");
  CHECK(Match(t, "h", "/a/1", "POST")->proto->name() == "post");
  CHECK(Match(t, "h", "/a/12")->proto->name() == "regex");
  CHECK(Match(t, "h", "/a/12b")->proto->name() == "prefix");
  CHECK(Match(t, "h", "/b") == nullptr);
}

TEST_CASE("an invalid regex is rejected with its field path") {
  RouteTable t;
  std::string error;
  CHECK_FALSE(t.Init(Table(R"({"name":"t","virtualHosts":[{"name":"v","domains":["*"],"routes":[
    {"match":{"uri":{"regex":"(x"}},"directResponse":{"status":200}}]}]})"),
                     &error));
  CHECK(error.rfind("route_tables[t].virtual_hosts[0].routes[0].match.uri.regex: invalid RE2", 0) ==
        0);
}

TEST_CASE("Config rejects dangling references and keeps a message naming them") {
  skiff::v1::Snapshot snap;
  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({
    "listeners":[{"name":"l","address":"0.0.0.0","port":80,"routeTable":"missing"}]})",
                                                      &snap)
              .ok());
  std::string error;
  CHECK(skiff::proxy::Config::Build(snap, {}, 1, &error) == nullptr);
  CHECK(error == "listeners[l].route_table: route table \"missing\" does not exist");

  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({
    "routeTables":[{"name":"t","virtualHosts":[{"name":"v","domains":["*"],"routes":[
      {"route":{"clusters":[{"cluster":"nope","weight":1}]}}]}]}]})",
                                                      &snap)
              .ok());
  CHECK(skiff::proxy::Config::Build(snap, {}, 1, &error) == nullptr);
  CHECK(error ==
        "route_tables[t].virtual_hosts[0].routes[0].route.clusters: cluster \"nope\" does not "
        "exist");
}

TEST_CASE("Config applies the port map and keeps only healthy endpoints") {
  skiff::v1::Snapshot snap;
  REQUIRE(google::protobuf::util::JsonStringToMessage(R"({
    "listeners":[{"name":"l","address":"0.0.0.0","port":80,"routeTable":"t"}],
    "routeTables":[{"name":"t"}],
    "clusters":[{"name":"c"}],
    "endpoints":[{"clusterName":"c","endpoints":[
      {"address":"127.0.0.1","port":1,"healthy":true},{"address":"127.0.0.2","port":2}]}]})",
                                                      &snap)
              .ok());
  std::string error;
  auto cfg = skiff::proxy::Config::Build(snap, {{80, 18080}}, 7, &error);
  REQUIRE(cfg != nullptr);
  CHECK(cfg->listeners()[0].bind_port == 18080);
  CHECK(cfg->listeners()[0].port == 80);
  CHECK(cfg->FindCluster("c")->endpoints.size() == 1);
  CHECK(cfg->version() == 7);
}

// The pure request policies: CORS, redirects, header operations, rewrites.
#include <re2/re2.h>

#include <catch2/catch.hpp>

#include "proxy/policy/cors.h"
#include "proxy/policy/hash_key.h"
#include "proxy/policy/header_ops.h"
#include "proxy/policy/redirect.h"
#include "proxy/policy/rewrite.h"

using skiff::policy::UriMatchKind;

TEST_CASE("cors: preflight detection and the fields of its answer") {
  CHECK(skiff::policy::IsPreflight("OPTIONS", true));
  CHECK(!skiff::policy::IsPreflight("OPTIONS", false));
  CHECK(!skiff::policy::IsPreflight("GET", true));
  skiff::v1::CorsPolicy cors;
  cors.add_allow_methods("GET");
  cors.add_allow_methods("POST");
  cors.add_allow_headers("x-a");
  cors.mutable_max_age()->set_seconds(60);
  cors.set_allow_credentials(true);
  cors.add_expose_headers("x-b");
  CHECK(skiff::policy::PreflightFields(cors, "https://a") ==
        "access-control-allow-origin: https://a\r\naccess-control-allow-methods: GET,POST\r\n"
        "access-control-allow-headers: x-a\r\naccess-control-max-age: 60\r\n"
        "access-control-allow-credentials: true\r\n");
  std::string fields;
  skiff::policy::AppendCorsResponseFields(cors, "https://a", &fields);
  CHECK(fields ==
        "access-control-allow-origin: https://a\r\naccess-control-allow-credentials: true\r\n"
        "access-control-expose-headers: x-b\r\n");
}

TEST_CASE("redirect: scheme - authority - port and path as Istio's HTTPRedirect") {
  skiff::v1::Redirect r;
  r.set_uri("/new");
  CHECK(skiff::policy::RedirectLocation(r, "http", "a.example:8080", "/old", "q=1") ==
        "http://a.example:8080/new?q=1");
  r.set_authority("b.example");
  r.set_scheme("https");
  CHECK(skiff::policy::RedirectLocation(r, "http", "a.example:8080", "/old", "") ==
        "https://b.example/new");
  r.set_port(8443);
  r.clear_uri();
  CHECK(skiff::policy::RedirectLocation(r, "http", "a.example", "/old", "x=y") ==
        "https://b.example:8443/old?x=y");
  CHECK(skiff::policy::RedirectStatus(r) == 301);
  skiff::v1::Redirect p;
  p.set_prefix_rewrite("/v2/");
  CHECK(skiff::policy::RedirectLocation(p, "http", "a", "/v1/items", "x=1", "/v1/") ==
        "http://a/v2/items?x=1");
  r.set_response_code(307);
  CHECK(skiff::policy::RedirectStatus(r) == 307);
}

TEST_CASE("redirect: Gateway httpsRedirect keeps host and path and drops the default port") {
  skiff::v1::Redirect r;
  r.set_scheme("https");
  r.set_port(443);
  r.set_response_code(301);
  CHECK(skiff::policy::RedirectLocation(r, "http", "shop.example:80", "/api/catalog", "a=1") ==
        "https://shop.example/api/catalog?a=1");
  CHECK(skiff::policy::RedirectLocation(r, "http", "shop.example", "/", "") ==
        "https://shop.example/");
  r.set_port(18443);  // a remapped 443 (--port-map 443=18443)
  CHECK(skiff::policy::RedirectLocation(r, "http", "shop.example:18080", "/api/catalog", "") ==
        "https://shop.example:18443/api/catalog");
}

TEST_CASE("redirect: a scheme change drops the request's default port, as Envoy") {
  skiff::v1::Redirect r;
  r.set_scheme("https");
  CHECK(skiff::policy::RedirectLocation(r, "http", "shop.example:80", "/path", "q=1") ==
        "https://shop.example/path?q=1");
  CHECK(skiff::policy::RedirectLocation(r, "http", "shop.example:8080", "/path", "") ==
        "https://shop.example:8080/path");  // not a default port: kept
  r.set_scheme("http");
  CHECK(skiff::policy::RedirectLocation(r, "https", "[::1]:443", "/", "") == "http://[::1]/");
  skiff::v1::Redirect same;  // no scheme change: the final scheme's default port is left out
  same.set_uri("/new");
  CHECK(skiff::policy::RedirectLocation(same, "http", "shop.example:80", "/old", "") ==
        "http://shop.example/new");
  CHECK(skiff::policy::RedirectLocation(same, "http", "shop.example:443", "/old", "") ==
        "http://shop.example:443/new");
}

TEST_CASE("consistent hash keys: the cookie and the query parameter named, exactly") {
  using skiff::policy::CookieValue;
  CHECK(CookieValue("xuser=1; user=bob", "user") == std::optional<std::string_view>("bob"));
  CHECK(CookieValue("user=bob", "user") == std::optional<std::string_view>("bob"));
  CHECK(CookieValue("a=1;user=\"q v\"; b=2", "user") ==
        std::optional<std::string_view>("q v"));  // quotes stripped, as Envoy
  CHECK(CookieValue("users=1; auser=2", "user") == std::nullopt);
  CHECK(CookieValue("user", "user") == std::nullopt);
  CHECK(CookieValue("user=", "user") == std::optional<std::string_view>(""));
  using skiff::policy::QueryParameter;
  CHECK(QueryParameter("xu=1&u=bob", "u") == std::optional<std::string_view>("bob"));
  CHECK(QueryParameter("u=bob&x=1", "u") == std::optional<std::string_view>("bob"));
  CHECK(QueryParameter("xu=1", "u") == std::nullopt);
  CHECK(QueryParameter("", "u") == std::nullopt);
  CHECK(skiff::policy::HashCookieField("sess", "00ab", "/", 60) ==
        "sess=\"00ab\"; Max-Age=60; Path=/; HttpOnly");
  CHECK(skiff::policy::HashCookieField("sess", "00ab", "", 0) == "sess=\"00ab\"; HttpOnly");
}

TEST_CASE("header operations: overridden names and the appended fields") {
  skiff::v1::HeaderOperations ops;
  auto* set = ops.add_set();
  set->set_name("x-set");
  set->set_value("1");
  auto* add = ops.add_add();
  add->set_name("x-add");
  add->set_value("2");
  ops.add_remove("X-Gone");
  auto* auth = ops.add_set();
  auth->set_name(":authority");
  auth->set_value("new.example");
  CHECK(skiff::policy::Overridden("X-SET", &ops, nullptr));
  CHECK(skiff::policy::Overridden("x-gone", nullptr, &ops));
  CHECK(!skiff::policy::Overridden("x-add", &ops, nullptr));
  std::string fields;
  skiff::policy::AppendOps(&fields, &ops);
  CHECK(fields == "x-set: 1\r\nx-add: 2\r\n");  // pseudo-headers are not fields
  REQUIRE(skiff::policy::SetAuthority(&ops, nullptr) != nullptr);
  CHECK(*skiff::policy::SetAuthority(nullptr, &ops) == "new.example");
}

TEST_CASE("rewrite: the matched prefix - an exact path - a regex substitution") {
  skiff::v1::Rewrite rw;
  rw.set_uri("/v2/");
  CHECK(skiff::policy::RewritePath("/api/items", "?a=1", rw, UriMatchKind::kPrefix, "/api",
                                   nullptr) == "/v2/items?a=1");
  CHECK(skiff::policy::RewritePath("/api", "", rw, UriMatchKind::kExact, "/api", nullptr) ==
        "/v2/");
  rw.set_uri("/");
  CHECK(skiff::policy::RewritePath("/api/items", "", rw, UriMatchKind::kPrefix, "/api", nullptr) ==
        "/items");
  skiff::v1::Rewrite re;
  re.mutable_uri_regex()->set_pattern("^/service/([^/]+)(/.*)$");
  re.mutable_uri_regex()->set_substitution("\\2/instance/\\1");
  RE2 regex(re.uri_regex().pattern());
  CHECK(skiff::policy::RewritePath("/service/foo/v1/api", "", re, UriMatchKind::kNone, "",
                                   &regex) == "/v1/api/instance/foo");
}

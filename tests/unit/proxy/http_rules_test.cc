// Authorities, path normalization and header-field rules.
#include <catch2/catch.hpp>

#include "proxy/http/authority.h"
#include "proxy/http/headers.h"
#include "proxy/http/path.h"

using skiff::http::PathNormalization;

namespace {
std::string Norm(std::string_view path, PathNormalization mode = PathNormalization::kBase) {
  std::string out;
  return skiff::http::NormalizePath(path, mode, &out) ? out : std::string(path);
}
}  // namespace

TEST_CASE("authority: host - IP literal and port") {
  auto a = skiff::http::ParseAuthority("example.com:8080");
  REQUIRE(a);
  CHECK(a->host == "example.com");
  CHECK(*a->port == 8080);
  CHECK(skiff::http::ParseAuthority("[::1]:80")->host == "[::1]");
  CHECK(!skiff::http::ParseAuthority("example.com:")->port);
  CHECK(skiff::http::ParseAuthority(""));
  for (const char* bad :
       {"exa mple.com", "a:99999", "a:8o", "[::1", "[zz]", "a@b", "a/b", "a:1:2", "[::1]x"}) {
    INFO(bad);
    CHECK(!skiff::http::ParseAuthority(bad));
  }
}

TEST_CASE("path normalization: BASE - as Istio's default") {
  CHECK(Norm("/a/b") == "/a/b");
  CHECK(Norm("/./admin") == "/admin");
  CHECK(Norm("/x/../admin") == "/admin");
  CHECK(Norm("/%61dmin") == "/admin");
  CHECK(Norm("/%2e/admin") == "/admin");
  CHECK(Norm("/a/%2E%2E/admin") == "/admin");
  CHECK(Norm("/../../etc/passwd") == "/etc/passwd");
  CHECK(Norm("/a/b/..") == "/a/");
  CHECK(Norm("/a/.") == "/a/");
  CHECK(Norm("/c%7e%2fd") == "/c~%2Fd");  // unreserved decoded; %2F kept, hex upper-cased
  CHECK(Norm("/a%5Cb") == "/a%5Cb");
  CHECK(Norm("/a\\..\\b") == "/b");  // backslashes are slashes
  CHECK(Norm("//admin") == "//admin");
  CHECK(Norm("/%zz") == "/%zz");
  CHECK(Norm("/a/./b", PathNormalization::kNone) == "/a/./b");
}

TEST_CASE("path normalization: MERGE_SLASHES and DECODE_AND_MERGE_SLASHES") {
  CHECK(Norm("//admin", PathNormalization::kMergeSlashes) == "/admin");
  CHECK(Norm("/a//b///c/", PathNormalization::kMergeSlashes) == "/a/b/c/");
  CHECK(Norm("/a%2Fb", PathNormalization::kMergeSlashes) == "/a%2Fb");
  CHECK(Norm("/a%2F%2fb", PathNormalization::kDecodeAndMergeSlashes) == "/a/b");
  CHECK(Norm("/x/..%2Fadmin", PathNormalization::kDecodeAndMergeSlashes) == "/admin");
  CHECK(skiff::http::ParsePathNormalization("MERGE_SLASHES") == PathNormalization::kMergeSlashes);
  CHECK(!skiff::http::ParsePathNormalization("merge"));
}

TEST_CASE("header fields: classification - Connection tokens - config values") {
  using skiff::http::FieldKind;
  CHECK(skiff::http::ClassifyField("Host") == FieldKind::kHost);
  CHECK(skiff::http::ClassifyField("X-Forwarded-For") == FieldKind::kForwardedFor);
  CHECK(skiff::http::ClassifyField("TRANSFER-ENCODING") == FieldKind::kHopByHop);
  CHECK(skiff::http::ClassifyField("x-request-id") == FieldKind::kRequestId);
  CHECK(skiff::http::ClassifyField("Server") == FieldKind::kServer);
  CHECK(skiff::http::ClassifyField("x-request-ie") == FieldKind::kOther);
  CHECK(skiff::http::HasConnectionToken("close, X-Drop", "x-drop"));
  CHECK(!skiff::http::HasConnectionToken("close", "x-drop"));
  CHECK(skiff::http::IsProtectedFromConnection("Host"));
  CHECK(skiff::http::ValidFieldName("x-a"));
  CHECK(!skiff::http::ValidFieldName("x a"));
  CHECK(!skiff::http::ValidFieldName(""));
  CHECK(skiff::http::ValidFieldValue("a b"));
  CHECK(!skiff::http::ValidFieldValue("a\r\nb"));
  CHECK(!skiff::http::ValidFieldValue(std::string("a\0b", 3)));
  CHECK(skiff::http::ValidOriginForm("/a?b=c"));
  CHECK(!skiff::http::ValidOriginForm("a"));
  CHECK(!skiff::http::ValidOriginForm("/a b"));
}

// gRPC's wire rules the proxy applies (proxy/http/grpc): grpc-timeout, grpc-status in trailers,
// grpc-message encoding, and the HTTP-to-gRPC status mapping of local replies.
#include "proxy/http/grpc.h"

#include <catch2/catch.hpp>
#include <string>

using skiff::http::AppendGrpcMessage;
using skiff::http::GrpcStatusForHttp;
using skiff::http::GrpcStatusOf;
using skiff::http::ParseGrpcTimeout;
using std::chrono::milliseconds;

TEST_CASE("grpc-timeout: every unit, rounded up to milliseconds", "[grpc]") {
  CHECK(ParseGrpcTimeout("2H") == milliseconds(2 * 3600 * 1000));
  CHECK(ParseGrpcTimeout("3M") == milliseconds(3 * 60 * 1000));
  CHECK(ParseGrpcTimeout("5S") == milliseconds(5000));
  CHECK(ParseGrpcTimeout("250m") == milliseconds(250));
  CHECK(ParseGrpcTimeout("1500u") == milliseconds(2));  // 1.5 ms rounds up
  CHECK(ParseGrpcTimeout("1000u") == milliseconds(1));
  CHECK(ParseGrpcTimeout("1n") == milliseconds(1));  // never rounds down to "no time"
  CHECK(ParseGrpcTimeout("0m") == milliseconds(0));
  CHECK(ParseGrpcTimeout("99999999S") == milliseconds(99999999LL * 1000));  // 8 digits
}

TEST_CASE("grpc-timeout: malformed values are ignored", "[grpc]") {
  for (const char* bad : {"", "S", "10", "10s", "10x", "-1S", "1.5S", " 1S", "123456789S", "1 S"}) {
    INFO(bad);
    CHECK_FALSE(ParseGrpcTimeout(bad).has_value());
  }
}

TEST_CASE("grpc-status: read from trailer fields, any case, or -1", "[grpc]") {
  CHECK(GrpcStatusOf("grpc-status: 14\r\ngrpc-message: down\r\n") == 14);
  CHECK(GrpcStatusOf("x-a: 1\r\nGRPC-Status:0") == 0);
  CHECK(GrpcStatusOf("grpc-message: a\r\ngrpc-status:\t7\r\n") == 7);
  CHECK(GrpcStatusOf("") == -1);
  CHECK(GrpcStatusOf("grpc-message: grpc-status: 3\r\n") == -1);
  CHECK(GrpcStatusOf("grpc-status: ok\r\n") == -1);
  CHECK(GrpcStatusOf("grpc-statusx: 3\r\n") == -1);
}

TEST_CASE("grpc-message: percent-encodes outside printable ASCII and '%'", "[grpc]") {
  std::string out = "grpc-message: ";
  AppendGrpcMessage(&out, "no healthy upstream");
  CHECK(out == "grpc-message: no healthy upstream");
  out.clear();
  AppendGrpcMessage(&out, "50% off\r\n\xc3\xa9");
  CHECK(out == "50%25 off%0D%0A%C3%A9");
}

TEST_CASE("local replies to gRPC clients: Envoy's HTTP to gRPC status mapping", "[grpc]") {
  CHECK(GrpcStatusForHttp(400) == 13);  // INTERNAL
  CHECK(GrpcStatusForHttp(401) == 16);  // UNAUTHENTICATED
  CHECK(GrpcStatusForHttp(403) == 7);   // PERMISSION_DENIED
  CHECK(GrpcStatusForHttp(404) == 12);  // UNIMPLEMENTED
  for (int s : {429, 502, 503, 504}) {
    CHECK(GrpcStatusForHttp(s) == 14);  // UNAVAILABLE
  }
  CHECK(GrpcStatusForHttp(500) == 2);  // UNKNOWN
  CHECK(GrpcStatusForHttp(418) == 2);
}

#include <catch2/catch.hpp>

#include "proxy/capture/rules.h"

using skiff::capture::CaptureOptions;

namespace {
bool Has(const std::string& rules, const std::string& line) {
  return rules.find(line + "\n") != std::string::npos;
}
}  // namespace

TEST_CASE(
    "capture rules: outbound to 15001 and inbound to 15006; the proxy and loopback untouched") {
  CaptureOptions o;
  auto v4 = skiff::capture::RestoreInput(o, false);
  CHECK(Has(v4, "-A PREROUTING -p tcp -j SKIFF_INBOUND"));
  CHECK(Has(v4, "-A OUTPUT -p tcp -j SKIFF_OUTPUT"));
  CHECK(Has(v4, "-A SKIFF_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
  CHECK(Has(v4, "-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
  CHECK(Has(v4, "-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_OUTPUT -m owner --gid-owner 1337 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_OUTPUT -d 127.0.0.1/32 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_INBOUND -p tcp --dport 15021 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_INBOUND -p tcp --dport 15090 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_OUTPUT -j SKIFF_REDIRECT"));
  auto v6 = skiff::capture::RestoreInput(o, true);
  CHECK(Has(v6, "-A SKIFF_OUTPUT -o lo -s ::6/128 -j RETURN"));
  CHECK(Has(v6, "-A SKIFF_OUTPUT -d ::1/128 -j RETURN"));
  // The proxy's own rules come before the redirect of everything else.
  CHECK(v4.find("--uid-owner 1337 -j RETURN") < v4.find("-A SKIFF_OUTPUT -j SKIFF_REDIRECT"));
}

TEST_CASE("capture rules: Istio's annotations narrow what is captured") {
  CaptureOptions o;
  std::map<std::string, std::string> a{
      {"traffic.sidecar.istio.io/includeOutboundIPRanges", "10.96.0.0/12, fd00::/8"},
      {"traffic.sidecar.istio.io/excludeOutboundIPRanges", "10.96.0.1/32"},
      {"traffic.sidecar.istio.io/includeInboundPorts", "8080,9090"},
      {"traffic.sidecar.istio.io/excludeOutboundPorts", "3306"}};
  REQUIRE(!skiff::capture::ApplyAnnotations(a, &o));
  auto v4 = skiff::capture::RestoreInput(o, false);
  CHECK(Has(v4, "-A SKIFF_OUTPUT -d 10.96.0.0/12 -j SKIFF_REDIRECT"));
  CHECK(!Has(v4, "-A SKIFF_OUTPUT -d fd00::/8 -j SKIFF_REDIRECT"));  // IPv6 only in v6 rules
  CHECK(Has(v4, "-A SKIFF_OUTPUT -d 10.96.0.1/32 -j RETURN"));
  CHECK(Has(v4, "-A SKIFF_OUTPUT -p tcp --dport 3306 -j RETURN"));
  CHECK(!Has(v4, "-A SKIFF_OUTPUT -j SKIFF_REDIRECT"));
  CHECK(Has(v4, "-A SKIFF_INBOUND -p tcp --dport 8080 -j SKIFF_IN_REDIRECT"));
  CHECK(!Has(v4, "-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT"));
  CHECK(
      Has(skiff::capture::RestoreInput(o, true), "-A SKIFF_OUTPUT -d fd00::/8 -j SKIFF_REDIRECT"));
  std::map<std::string, std::string> bad{
      {"traffic.sidecar.istio.io/excludeInboundPorts", "80,http"}};
  auto err = skiff::capture::ApplyAnnotations(bad, &o);
  REQUIRE(err);
  CHECK(err->find("excludeInboundPorts") != std::string::npos);
  CHECK(err->find("\"http\"") != std::string::npos);
}

TEST_CASE("capture rules: the downward-API annotations file") {
  std::map<std::string, std::string> a;
  REQUIRE(!skiff::capture::ParseAnnotationsFile(
      "kubernetes.io/psp=\"x\"\ntraffic.sidecar.istio.io/excludeOutboundPorts=\"5432\"\n", &a));
  CHECK(a["traffic.sidecar.istio.io/excludeOutboundPorts"] == "5432");
  CHECK(skiff::capture::ParseAnnotationsFile("no equals sign\n", &a));
  std::vector<std::string> ranges;
  CHECK(skiff::capture::ParseRanges("10.0.0.0/33", &ranges));
  CHECK(!skiff::capture::ParseRanges("*,10.0.0.0/8,::1/128", &ranges));
  CHECK(ranges.size() == 3);
}

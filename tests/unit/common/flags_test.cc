#include "common/flags.h"

#include <catch2/catch.hpp>

using skiff::FlagSet;

TEST_CASE("FlagSet parses each kind of flag") {
  std::string s;
  int64_t n = 0;
  bool b = false;
  std::chrono::milliseconds d{0};
  std::vector<std::string> list;
  FlagSet f("prog", "test");
  f.AddString("name", &s, "a string");
  f.AddInt("count", &n, 1, 10, "an int");
  f.AddBool("verbose", &b, "a bool");
  f.AddDuration("wait", &d, "a duration");
  f.AddStringList("file,f", &list, "files");
  auto code =
      f.Parse({"--name", "x", "--count=3", "--verbose", "--wait", "1m", "-f", "a", "--file=b"});
  REQUIRE_FALSE(code.has_value());
  CHECK(s == "x");
  CHECK(n == 3);
  CHECK(b);
  CHECK(d == std::chrono::minutes(1));
  CHECK(list == std::vector<std::string>{"a", "b"});
  CHECK(f.WasSet("count"));
}

TEST_CASE("FlagSet rejects unknown flags and bad values with exit code 2") {
  int64_t n = 0;
  FlagSet f("prog", "test");
  f.AddInt("count", &n, 1, 10, "an int");
  CHECK(f.Parse({"--no-such-flag"}) == skiff::kExitUsage);
  FlagSet g("prog", "test");
  g.AddInt("count", &n, 1, 10, "an int");
  CHECK(g.Parse({"--count", "eleven"}) == skiff::kExitUsage);
  FlagSet h("prog", "test");
  h.AddInt("count", &n, 1, 10, "an int");
  CHECK(h.Parse({"--count", "11"}) == skiff::kExitUsage);
  FlagSet i("prog", "test");
  i.AddInt("count", &n, 1, 10, "an int");
  CHECK(i.Parse({"--count"}) == skiff::kExitUsage);
  FlagSet j("prog", "test");
  CHECK(j.Parse({"stray"}) == skiff::kExitUsage);
}

TEST_CASE("FlagSet --help and --version exit 0") {
  FlagSet f("prog", "test");
  CHECK(f.Parse({"--help"}) == 0);
  FlagSet g("prog", "test");
  CHECK(g.Parse({"--version"}) == 0);
  CHECK(f.Usage().find("--version") != std::string::npos);
}

#include "common/duration.h"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using skiff::FormatDuration;
using skiff::ParseDuration;

TEST_CASE("ParseDuration accepts Go duration syntax as Istio does") {
  CHECK(ParseDuration("2s") == 2s);
  CHECK(ParseDuration("0.5s") == 500ms);
  CHECK(ParseDuration("100ms") == 100ms);
  CHECK(ParseDuration("1m30s") == 90s);
  CHECK(ParseDuration("1h") == 1h);
  CHECK(ParseDuration("1.5h") == 90min);
  CHECK(ParseDuration("250us") == 250us);
  CHECK(ParseDuration("0") == 0s);
  CHECK(ParseDuration("-1s") == -1s);
}

TEST_CASE("ParseDuration rejects malformed durations") {
  for (const char* bad : {"", "2x", "2", "s", "1.s5", "ms", "1 s", "--1s", "1s2", "abc"}) {
    INFO(bad);
    CHECK_FALSE(ParseDuration(bad).has_value());
  }
}

TEST_CASE("FormatDuration prints protobuf JSON durations") {
  CHECK(FormatDuration(2s) == "2s");
  CHECK(FormatDuration(100ms) == "0.100s");
  CHECK(FormatDuration(1500ms) == "1.500s");
  CHECK(FormatDuration(-1s) == "-1s");
}

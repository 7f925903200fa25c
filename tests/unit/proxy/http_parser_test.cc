#include <catch2/catch.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/parser.h"

using skiff::http::BodyFraming;
using skiff::http::HeadLimits;
using skiff::http::ParseResult;
using skiff::http::ParseStatus;
using skiff::http::RequestParser;
using skiff::http::ResponseParser;
using skiff::http::Version;

namespace {

// The error status for a complete request head, 0 if it parses, -1 if incomplete.
int RequestStatus(std::string_view request, const HeadLimits& limits = HeadLimits{}) {
  RequestParser parser(limits);
  const ParseResult r = parser.Parse(request);
  if (r.status == ParseStatus::kDone) {
    return 0;
  }
  if (r.status == ParseStatus::kIncomplete) {
    return -1;
  }
  return r.error_status;
}

int ResponseStatus(std::string_view response, const HeadLimits& limits = HeadLimits{}) {
  ResponseParser parser(limits);
  const ParseResult r = parser.Parse(response);
  if (r.status == ParseStatus::kDone) {
    return 0;
  }
  if (r.status == ParseStatus::kIncomplete) {
    return -1;
  }
  return r.error_status;
}

// A GET with Host and the given extra field lines (each without CRLF).
std::string Get(const std::vector<std::string>& fields, std::string_view version = "HTTP/1.1") {
  std::string s = "GET /index.html " + std::string(version) + "\r\nHost: example.com\r\n";
  for (const std::string& f : fields) {
    s += f + "\r\n";
  }
  return s + "\r\n";
}

// Feeds `data` one byte at a time through a growing std::string (whose storage moves), as
// a connection would. Returns the final result and checks every earlier one is kIncomplete.
template <typename Parser>
ParseResult FeedBytewise(Parser& parser, std::string_view data, std::string* storage) {
  storage->clear();
  storage->shrink_to_fit();
  ParseResult r;
  for (size_t i = 0; i < data.size(); ++i) {
    storage->push_back(data[i]);
    r = parser.Parse(*storage);
    if (r.status != ParseStatus::kIncomplete) {
      INFO("stopped after " << i + 1 << " of " << data.size() << " bytes");
      return r;
    }
  }
  return r;
}

}  // namespace

TEST_CASE("parses a simple GET request into views of the buffer") {
  const std::string req =
      "GET /path?q=1 HTTP/1.1\r\n"
      "Host: example.com:8080\r\n"
      "User-Agent:  curl/8.0 \t\r\n"
      "Accept:*/*\r\n"
      "X-Empty:\r\n"
      "\r\n";
  RequestParser parser;
  const ParseResult r = parser.Parse(req);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == req.size());
  const auto& h = parser.head();
  CHECK(h.method == "GET");
  CHECK(h.target == "/path?q=1");
  CHECK(h.version == Version::kHttp11);
  CHECK(h.host == "example.com:8080");
  CHECK(h.has_host);
  CHECK(h.keep_alive);
  CHECK_FALSE(h.chunked);
  CHECK_FALSE(h.content_length.has_value());
  CHECK(h.Framing() == BodyFraming::kNone);
  REQUIRE(h.headers.size() == 4);
  CHECK(h.headers[0].name == "Host");
  CHECK(h.headers[1].name == "User-Agent");
  CHECK(h.headers[1].value == "curl/8.0");  // OWS on both sides trimmed
  CHECK(h.headers[2].value == "*/*");
  CHECK(h.headers[3].name == "X-Empty");
  CHECK(h.headers[3].value.empty());
  // Zero-copy: views point into the caller's buffer.
  CHECK(h.method.data() == req.data());
  CHECK(h.headers[1].value.data() == req.data() + req.find("curl"));
}

TEST_CASE("FindHeader is case-insensitive and returns the first match") {
  const std::string req = Get({"X-Thing: one", "x-thing: two", "Accept: a"});
  RequestParser parser;
  REQUIRE(parser.Parse(req).status == ParseStatus::kDone);
  const auto* h = parser.head().Find("X-THING");
  REQUIRE(h != nullptr);
  CHECK(h->value == "one");
  CHECK(parser.head().Find("accept")->value == "a");
  CHECK(parser.head().Find("accep") == nullptr);
  CHECK(parser.head().Find("missing") == nullptr);
  CHECK(skiff::http::EqualsIgnoreCase("Content-Length", "content-LENGTH"));
  CHECK_FALSE(skiff::http::EqualsIgnoreCase("Content-Length", "Content-Lengt"));
}

TEST_CASE("body framing of requests: none, Content-Length or chunked") {
  RequestParser parser;
  REQUIRE(parser.Parse(Get({"Content-Length: 0"})).status == ParseStatus::kDone);
  CHECK(parser.head().Framing() == BodyFraming::kContentLength);
  CHECK(parser.head().content_length == 0u);
  parser.Reset();
  REQUIRE(parser.Parse(Get({"Content-Length: 1234"})).status == ParseStatus::kDone);
  CHECK(parser.head().content_length == 1234u);
  parser.Reset();
  REQUIRE(parser.Parse(Get({"Transfer-Encoding: Chunked"})).status == ParseStatus::kDone);
  CHECK(parser.head().chunked);
  CHECK(parser.head().Framing() == BodyFraming::kChunked);
}

TEST_CASE("Content-Length together with Transfer-Encoding is rejected with 400") {
  CHECK(RequestStatus(Get({"Content-Length: 5", "Transfer-Encoding: chunked"})) == 400);
  CHECK(RequestStatus(Get({"Transfer-Encoding: chunked", "Content-Length: 5"})) == 400);
  CHECK(RequestStatus(Get({"Transfer-Encoding: chunked", "Content-Length: 0"})) == 400);
}

TEST_CASE("duplicate Content-Length with differing values is rejected with 400") {
  CHECK(RequestStatus(Get({"Content-Length: 5", "Content-Length: 6"})) == 400);
  CHECK(RequestStatus(Get({"Content-Length: 5, 6"})) == 400);
  CHECK(RequestStatus(Get({"Content-Length: 5,5", "Content-Length: 7"})) == 400);
}

TEST_CASE("identical repeated Content-Length values are accepted as one") {
  RequestParser parser;
  REQUIRE(parser.Parse(Get({"Content-Length: 42", "content-length: 42"})).status ==
          ParseStatus::kDone);
  CHECK(parser.head().content_length == 42u);
  parser.Reset();
  REQUIRE(parser.Parse(Get({"Content-Length: 42 , 42,42"})).status == ParseStatus::kDone);
  CHECK(parser.head().content_length == 42u);
  parser.Reset();
  REQUIRE(parser.Parse(Get({"Content-Length: 007"})).status == ParseStatus::kDone);
  CHECK(parser.head().content_length == 7u);
}

TEST_CASE("malformed Content-Length is rejected with 400") {
  for (const char* bad :
       {"", "abc", "+5", "-1", "5a", "0x5", "5 5", "1,,1", ",5", "5,", "1.0", "5;", "\"5\""}) {
    INFO("Content-Length: [" << bad << "]");
    CHECK(RequestStatus(Get({std::string("Content-Length: ") + bad})) == 400);
  }
}

TEST_CASE("Content-Length overflowing 64 bits is rejected with 400") {
  CHECK(RequestStatus(Get({"Content-Length: 18446744073709551616"})) == 400);
  CHECK(RequestStatus(Get({"Content-Length: 99999999999999999999999999"})) == 400);
  RequestParser parser;
  REQUIRE(parser.Parse(Get({"Content-Length: 18446744073709551615"})).status == ParseStatus::kDone);
  CHECK(parser.head().content_length == 18446744073709551615ull);
}

TEST_CASE("Transfer-Encoding other than exactly chunked is rejected with 501") {
  for (const char* te : {"gzip", "gzip, chunked", "chunked, gzip", "identity", "chunked;q=1",
                         "chunk", "x-chunked", "", "chunked, chunked"}) {
    INFO("Transfer-Encoding: [" << te << "]");
    CHECK(RequestStatus(Get({std::string("Transfer-Encoding: ") + te})) == 501);
  }
  CHECK(RequestStatus(Get({"Transfer-Encoding: CHUNKED"})) == 0);
  CHECK(RequestStatus(Get({"Transfer-Encoding:  chunked  "})) == 0);
}

TEST_CASE("Transfer-Encoding on HTTP/1.0 is rejected with 400") {
  CHECK(RequestStatus(Get({"Transfer-Encoding: chunked"}, "HTTP/1.0")) == 400);
  CHECK(RequestStatus(Get({"Transfer-Encoding: gzip"}, "HTTP/1.0")) == 400);
  CHECK(RequestStatus(Get({"Content-Length: 3"}, "HTTP/1.0")) == 0);
}

TEST_CASE("Transfer-Encoding chunked sent twice is rejected with 400") {
  CHECK(RequestStatus(Get({"Transfer-Encoding: chunked", "Transfer-Encoding: chunked"})) == 400);
}

TEST_CASE("invalid header name characters are rejected with 400") {
  for (const char* line : {"Fo\"o: x", "Fo(o: x", "Fo/o: x", "Fo@o: x", "Fo{o: x", "Fo\x01o: x",
                           "F\xc3\xb6o: x", ": x", "Foo x", "Foo", "Fo o: x"}) {
    INFO("field line [" << line << "]");
    CHECK(RequestStatus(Get({line})) == 400);
  }
  CHECK(RequestStatus(Get({"!#$%&'*+-.^_`|~09azAZ: x"})) == 0);
}

TEST_CASE("whitespace between header name and colon is rejected with 400") {
  CHECK(RequestStatus(Get({"Content-Length : 5"})) == 400);
  CHECK(RequestStatus(Get({"X-Foo\t: 5"})) == 400);
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost : example.com\r\n\r\n") == 400);
  RequestParser parser;
  const ParseResult r = parser.Parse(Get({"X-Foo : 5"}));
  CHECK(r.error_reason == "whitespace between header name and colon");
}

TEST_CASE("obs-fold (a line starting with SP or HTAB) is rejected with 400") {
  CHECK(RequestStatus(Get({"X-Foo: a", " continued"})) == 400);
  CHECK(RequestStatus(Get({"X-Foo: a", "\tcontinued"})) == 400);
  // Whitespace between the request line and the first field line.
  CHECK(RequestStatus("GET / HTTP/1.1\r\n Host: example.com\r\n\r\n") == 400);
  RequestParser parser;
  CHECK(parser.Parse(Get({"X-Foo: a", " b"})).error_reason ==
        "obs-fold or whitespace before a header name");
}

TEST_CASE("control bytes in header values are rejected with 400") {
  for (std::string bad : {std::string("a\0b", 3), std::string("a\x7f"), std::string("\x01"),
                          std::string("a\x1f"), std::string("a\x1b[0m"), std::string("a\x0b")}) {
    INFO("value with byte " << static_cast<int>(static_cast<unsigned char>(bad.back())));
    CHECK(RequestStatus(Get({"X-Foo: " + bad})) == 400);
  }
  // Long values take the 8-bytes-at-a-time path; a bad byte anywhere must be found.
  for (size_t pos = 0; pos < 40; ++pos) {
    std::string value(40, 'v');
    value[pos] = '\0';
    INFO("NUL at " << pos);
    CHECK(RequestStatus(Get({"X-Long: " + value + "v"})) == 400);
  }
  // HTAB inside a value and obs-text (bytes >= 0x80) are allowed.
  const std::string req = Get({"X-Foo: a\tb \xff\x80 c"});
  RequestParser parser;
  REQUIRE(parser.Parse(req).status == ParseStatus::kDone);
  CHECK(parser.head().Find("x-foo")->value == "a\tb \xff\x80 c");
  CHECK(RequestStatus(Get({"X-Foo: " + std::string(37, '\t') + "x"})) == 0);
}

TEST_CASE("bare LF as a line terminator is rejected with 400") {
  CHECK(RequestStatus("GET / HTTP/1.1\nHost: a\r\n\r\n") == 400);
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: a\n\r\n") == 400);
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: a\r\n\n") == 400);
  CHECK(RequestStatus("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
}

TEST_CASE("bare CR is rejected with 400") {
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n") == 400);
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n") == 400);
  CHECK(RequestStatus("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
  CHECK(RequestStatus("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n") == 400);
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n") == 400);
  RequestParser parser;
  CHECK(parser.Parse("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n").error_reason ==
        "bare CR in header value");
}

TEST_CASE("missing Host on HTTP/1.1 is rejected with 400") {
  CHECK(RequestStatus("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") == 400);
  // HTTP/1.0 does not require Host.
  RequestParser parser;
  REQUIRE(parser.Parse("GET / HTTP/1.0\r\n\r\n").status == ParseStatus::kDone);
  CHECK_FALSE(parser.head().has_host);
  CHECK(parser.head().host.empty());
  // An empty Host value is allowed (RFC 9112 3.2: no authority component).
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost:\r\n\r\n") == 0);
}

TEST_CASE("more than one Host header is rejected with 400") {
  CHECK(RequestStatus(Get({"Host: example.com"})) == 400);
  CHECK(RequestStatus(Get({"HOST: other.example"})) == 400);
  CHECK(RequestStatus(Get({"Host: a"}, "HTTP/1.0")) == 400);
}

TEST_CASE("a Host value with characters outside host[:port] is rejected with 400") {
  for (const char* host : {"a/b", "a@b", "a b", "a\\b", "a?b", "a#b", "\xc3\xa9t\xc3\xa9"}) {
    INFO("Host: [" << host << "]");
    CHECK(RequestStatus(std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n") == 400);
  }
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n") == 0);
  CHECK(RequestStatus("GET / HTTP/1.1\r\nHost: my-svc.ns.svc.cluster.local\r\n\r\n") == 0);
}

TEST_CASE("a header section larger than 60 KiB is rejected with 431") {
  const std::string prefix = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ";
  const size_t limit = size_t{60} * 1024;
  const std::string fits = prefix + std::string(limit - prefix.size() - 4, 'x') + "\r\n\r\n";
  REQUIRE(fits.size() == limit);
  RequestParser parser;
  const ParseResult ok = parser.Parse(fits);
  REQUIRE(ok.status == ParseStatus::kDone);
  CHECK(ok.consumed == limit);

  const std::string too_big = prefix + std::string(limit - prefix.size() - 3, 'x') + "\r\n\r\n";
  CHECK(RequestStatus(too_big) == 431);
  // Detected as soon as the limit is passed, without waiting for the end of the head.
  CHECK(RequestStatus(too_big.substr(0, limit + 1)) == 431);
  CHECK(RequestStatus(too_big.substr(0, limit - 1)) == -1);
}

TEST_CASE("the header section size limit is configurable") {
  HeadLimits limits;
  limits.max_head_bytes = 64;
  const std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(50, 'y') + "\r\n\r\n";
  REQUIRE(req.size() > 64);
  CHECK(RequestStatus(req, limits) == 431);
  limits.max_head_bytes = req.size();
  CHECK(RequestStatus(req, limits) == 0);
}

TEST_CASE("more than 100 header fields is rejected with 431") {
  std::vector<std::string> fields;
  fields.reserve(100);
  for (int i = 0; i < 99; ++i) {
    fields.push_back("X-" + std::to_string(i) + ": v");
  }
  RequestParser parser;
  REQUIRE(parser.Parse(Get(fields)).status == ParseStatus::kDone);  // Host + 99
  CHECK(parser.head().headers.size() == 100);
  fields.push_back("X-last: v");
  CHECK(RequestStatus(Get(fields)) == 431);
}

TEST_CASE("the header count limit is configurable") {
  HeadLimits limits;
  limits.max_headers = 2;
  CHECK(RequestStatus(Get({"A: 1"}), limits) == 0);
  CHECK(RequestStatus(Get({"A: 1", "B: 2"}), limits) == 431);
}

TEST_CASE("a request line longer than the head limit is rejected with 414") {
  HeadLimits limits;
  limits.max_head_bytes = 128;
  const std::string req = "GET /" + std::string(200, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  CHECK(RequestStatus(req, limits) == 414);
  CHECK(RequestStatus(req.substr(0, 129), limits) == 414);
}

TEST_CASE("a malformed request line is rejected with 400") {
  for (const char* line :
       {"GET/ HTTP/1.1", " GET / HTTP/1.1", "GET  / HTTP/1.1", "GET / HTTP/1.1 ", "GET /", "GET / ",
        "GET", "G@T / HTTP/1.1", "GET / HTTP/1.1 extra", "GET /a b HTTP/1.1", "GET / http/1.1",
        "GET / HTTP/1", "GET / HTTP/1.10", "GET\t/ HTTP/1.1", "GET /\x7f HTTP/1.1",
        "GET /\x01 HTTP/1.1", "GET / HTTP/1.1\t", "GET / HTTPS/1.1", "/ HTTP/1.1"}) {
    INFO("request line [" << line << "]");
    CHECK(RequestStatus(std::string(line) + "\r\nHost: a\r\n\r\n") == 400);
  }
  // A request target is a URI (RFC 9112 3.2): bytes >= 0x80 must be percent-encoded, and
  // raw ones are refused, as Envoy's HTTP/1 codec does (400).
  CHECK(RequestStatus("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
  CHECK(RequestStatus("GET /?q=\xff HTTP/1.1\r\nHost: a\r\n\r\n") == 400);
  CHECK(RequestStatus("GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
  CHECK(RequestStatus("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") == 0);
  CHECK(RequestStatus("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n") == 0);
}

TEST_CASE("HTTP versions other than 1.0 and 1.1 are rejected with 505") {
  for (const char* version : {"HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0", "HTTP/9.9"}) {
    INFO(version);
    CHECK(RequestStatus(std::string("GET / ") + version + "\r\nHost: a\r\n\r\n") == 505);
  }
  // The HTTP/2 prior-knowledge preface is answered with 505 as well.
  RequestParser parser;
  const ParseResult r = parser.Parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  CHECK(r.status == ParseStatus::kError);
  CHECK(r.error_status == 505);
}

TEST_CASE("empty lines before the request line are ignored") {
  const std::string req = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
  RequestParser parser;
  const ParseResult r = parser.Parse(req);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == req.size());
  CHECK(parser.head().method == "GET");
}

TEST_CASE("garbage before the request line is rejected without waiting for CRLF") {
  // A TLS ClientHello on the plaintext port.
  CHECK(RequestStatus(std::string("\x16\x03\x01\x02\x00", 5)) == 400);
  CHECK(RequestStatus(" GET") == 400);
  CHECK(RequestStatus("GE(") == 400);
  // A valid prefix waits for more.
  CHECK(RequestStatus("GET") == -1);
  CHECK(RequestStatus("GET /very/long/path?with=query") == -1);
  CHECK(RequestStatus("\r") == -1);
  CHECK(RequestStatus("\r\n\r") == -1);
}

TEST_CASE("a head fed one byte at a time gives the same result as fed whole") {
  const std::string req =
      "POST /api/v1/items?id=7 HTTP/1.1\r\n"
      "Host: shop.example\r\n"
      "Content-Type: application/json\r\n"
      "Content-Length: 17\r\n"
      "Connection: keep-alive, Upgrade\r\n"
      "Expect: 100-continue\r\n"
      "X-Padding: " +
      std::string(300, 'p') +
      "\r\n"
      "\r\n"
      "{\"name\":\"coffee\"}";
  RequestParser whole;
  const ParseResult w = whole.Parse(req);
  REQUIRE(w.status == ParseStatus::kDone);

  RequestParser bytewise;
  std::string storage;
  const ParseResult b = FeedBytewise(bytewise, req, &storage);
  REQUIRE(b.status == ParseStatus::kDone);
  CHECK(b.consumed == w.consumed);
  CHECK(b.consumed == req.find("{\"name\""));
  const auto& h = bytewise.head();
  CHECK(h.method == "POST");
  CHECK(h.target == "/api/v1/items?id=7");
  CHECK(h.host == "shop.example");
  CHECK(h.content_length == 17u);
  CHECK(h.expect_continue);
  CHECK(h.keep_alive);
  REQUIRE(h.headers.size() == whole.head().headers.size());
  for (size_t i = 0; i < h.headers.size(); ++i) {
    CHECK(h.headers[i].name == whole.head().headers[i].name);
    CHECK(h.headers[i].value == whole.head().headers[i].value);
    // The views refer to the latest buffer, not to an earlier (freed) one.
    CHECK(h.headers[i].name.data() >= storage.data());
    CHECK(h.headers[i].name.data() < storage.data() + storage.size());
  }
}

TEST_CASE("errors are found the same way when fed one byte at a time") {
  for (const std::string& bad :
       {Get({"Content-Length: 1", "Transfer-Encoding: chunked"}), Get({"X: a\x01"}),
        std::string("GET / HTTP/1.1\nHost: a\r\n\r\n"), Get({"Transfer-Encoding: gzip"}),
        std::string("GET / HTTP/2.0\r\nHost: a\r\n\r\n")}) {
    RequestParser whole;
    const ParseResult w = whole.Parse(bad);
    REQUIRE(w.status == ParseStatus::kError);
    RequestParser bytewise;
    std::string storage;
    const ParseResult b = FeedBytewise(bytewise, bad, &storage);
    CHECK(b.status == ParseStatus::kError);
    CHECK(b.error_status == w.error_status);
  }
}

TEST_CASE("a 60 KiB head fed one byte at a time is parsed") {
  std::vector<std::string> fields;
  fields.reserve(98);
  for (int i = 0; i < 98; ++i) {
    fields.push_back("X-Field-" + std::to_string(i) + ": " +
                     std::string(600, static_cast<char>('a' + i % 26)));
  }
  const std::string req = Get(fields);
  REQUIRE(req.size() > size_t{58} * 1024);
  REQUIRE(req.size() <= size_t{60} * 1024);
  RequestParser parser;
  std::string storage;
  const ParseResult r = FeedBytewise(parser, req, &storage);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == req.size());
  CHECK(parser.head().headers.size() == 99);
  CHECK(parser.head().headers.back().value == std::string(600, static_cast<char>('a' + 97 % 26)));
}

TEST_CASE("pipelined requests: each head reports the bytes it consumed") {
  const std::string first = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
  const std::string second = "GET /b HTTP/1.1\r\nHost: b\r\n\r\n";
  const std::string third = "GET /c HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
  const std::string wire = first + "hello" + second + third + "GET /d";

  RequestParser parser;
  std::string_view rest = wire;
  ParseResult r = parser.Parse(rest);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == first.size());
  CHECK(parser.head().target == "/a");
  rest.remove_prefix(r.consumed + *parser.head().content_length);

  parser.Reset();
  r = parser.Parse(rest);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == second.size());
  CHECK(parser.head().target == "/b");
  CHECK(parser.head().keep_alive);
  rest.remove_prefix(r.consumed);

  parser.Reset();
  r = parser.Parse(rest);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == third.size());
  CHECK(parser.head().target == "/c");
  CHECK_FALSE(parser.head().keep_alive);
  rest.remove_prefix(r.consumed);

  parser.Reset();
  CHECK(parser.Parse(rest).status == ParseStatus::kIncomplete);
}

TEST_CASE("HTTP/1.0 closes the connection unless Connection: keep-alive") {
  RequestParser parser;
  REQUIRE(parser.Parse("GET / HTTP/1.0\r\n\r\n").status == ParseStatus::kDone);
  CHECK(parser.head().version == Version::kHttp10);
  CHECK_FALSE(parser.head().keep_alive);

  for (const char* value : {"keep-alive", "Keep-Alive", "foo, KEEP-ALIVE ,bar"}) {
    INFO(value);
    parser.Reset();
    REQUIRE(
        parser.Parse(std::string("GET / HTTP/1.0\r\nConnection: ") + value + "\r\n\r\n").status ==
        ParseStatus::kDone);
    CHECK(parser.head().keep_alive);
  }
  parser.Reset();
  REQUIRE(parser.Parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").status ==
          ParseStatus::kDone);
  CHECK_FALSE(parser.head().keep_alive);
  parser.Reset();
  REQUIRE(parser.Parse("GET / HTTP/1.0\r\nConnection: keep-alived\r\n\r\n").status ==
          ParseStatus::kDone);
  CHECK_FALSE(parser.head().keep_alive);
}

TEST_CASE("HTTP/1.1 keeps the connection unless Connection: close") {
  CHECK(RequestStatus(Get({})) == 0);
  const auto keep_alive = [](const std::vector<std::string>& fields) {
    RequestParser parser;
    REQUIRE(parser.Parse(Get(fields)).status == ParseStatus::kDone);
    return parser.head().keep_alive;
  };
  CHECK(keep_alive({}));
  CHECK_FALSE(keep_alive({"Connection: close"}));
  CHECK_FALSE(keep_alive({"Connection: CLOSE"}));
  CHECK_FALSE(keep_alive({"Connection: upgrade,close"}));
  CHECK_FALSE(keep_alive({"Connection: upgrade", "Connection: close"}));
  CHECK(keep_alive({"Connection: closed"}));
  CHECK(keep_alive({"Connection: upgrade"}));
  CHECK(keep_alive({"X-Connection: close"}));
}

TEST_CASE("Expect: 100-continue is reported for HTTP/1.1 only") {
  RequestParser parser;
  REQUIRE(parser.Parse(Get({"Expect: 100-Continue", "Content-Length: 3"})).status ==
          ParseStatus::kDone);
  CHECK(parser.head().expect_continue);
  parser.Reset();
  REQUIRE(parser.Parse(Get({"Expect: 100-continue"}, "HTTP/1.0")).status == ParseStatus::kDone);
  CHECK_FALSE(parser.head().expect_continue);
  parser.Reset();
  REQUIRE(parser.Parse(Get({"Expect: something-else"})).status == ParseStatus::kDone);
  CHECK_FALSE(parser.head().expect_continue);
}

TEST_CASE("results are sticky until Reset") {
  RequestParser parser;
  const std::string bad = Get({"Content-Length: x"});
  const ParseResult r = parser.Parse(bad);
  REQUIRE(r.status == ParseStatus::kError);
  CHECK(parser.Parse(Get({})).status == ParseStatus::kError);
  parser.Reset();
  CHECK(parser.Parse(Get({})).status == ParseStatus::kDone);
  CHECK(parser.Parse("garbage").status == ParseStatus::kDone);
  parser.Reset();
  CHECK(parser.Parse("GET / HTTP/1.1\r\n").status == ParseStatus::kIncomplete);
}

// ---------------------------------------------------------------------------------------
// Response heads (upstream side)

TEST_CASE("response: parses the status line and headers") {
  const std::string resp =
      "HTTP/1.1 404 Not Found\r\n"
      "Content-Type: text/plain\r\n"
      "Content-Length: 9\r\n"
      "\r\n"
      "not found";
  ResponseParser parser;
  const ParseResult r = parser.Parse(resp);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == resp.size() - 9);
  const auto& h = parser.head();
  CHECK(h.version == Version::kHttp11);
  CHECK(h.status == 404);
  CHECK(h.reason == "Not Found");
  CHECK(h.content_length == 9u);
  CHECK(h.keep_alive);
  CHECK(h.Find("content-type")->value == "text/plain");
  CHECK_FALSE(h.IsInformational());
  CHECK(skiff::http::ResponseFraming("GET", h) == BodyFraming::kContentLength);
}

TEST_CASE("response: status line without reason phrase") {
  ResponseParser parser;
  REQUIRE(parser.Parse("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == ParseStatus::kDone);
  CHECK(parser.head().status == 200);
  CHECK(parser.head().reason.empty());
  parser.Reset();
  REQUIRE(parser.Parse("HTTP/1.1 200 \r\n\r\n").status == ParseStatus::kDone);
  CHECK(parser.head().reason.empty());
}

TEST_CASE("response: a malformed status line is rejected with 502") {
  for (const char* line :
       {"HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 abc OK", "HTTP/1.1  200 OK",
        "HTTP/1.1 099 Low", "HTTP/1.1 600 High", "HTTP/2.0 200 OK", "HTTP/1.1 200 O\x01K",
        "http/1.1 200 OK", "HTTP/1.1", "ICY 200 OK"}) {
    INFO("status line [" << line << "]");
    CHECK(ResponseStatus(std::string(line) + "\r\n\r\n") == 502);
  }
}

TEST_CASE("response: framing errors are rejected with 502") {
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n") == 502);
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n") == 502);
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 502);
  CHECK(ResponseStatus("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == 502);
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n") == 502);
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nX : a\r\n\r\n") == 502);
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n") == 502);
  HeadLimits limits;
  limits.max_headers = 1;
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", limits) == 502);
  limits = HeadLimits{};
  limits.max_head_bytes = 32;
  CHECK(ResponseStatus("HTTP/1.1 200 OK\r\nA: " + std::string(40, 'a') + "\r\n\r\n", limits) ==
        502);
}

TEST_CASE("response: body framing depends on the request method and status") {
  using skiff::http::ResponseFraming;
  using skiff::http::ResponseMayHaveBody;
  ResponseParser parser;
  REQUIRE(parser.Parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n").status ==
          ParseStatus::kDone);
  CHECK(ResponseFraming("GET", parser.head()) == BodyFraming::kContentLength);
  CHECK(ResponseFraming("HEAD", parser.head()) == BodyFraming::kNone);
  CHECK(ResponseFraming("CONNECT", parser.head()) == BodyFraming::kNone);

  parser.Reset();
  REQUIRE(parser.Parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").status ==
          ParseStatus::kDone);
  CHECK(ResponseFraming("POST", parser.head()) == BodyFraming::kChunked);

  parser.Reset();
  REQUIRE(parser.Parse("HTTP/1.1 200 OK\r\n\r\n").status == ParseStatus::kDone);
  CHECK(ResponseFraming("GET", parser.head()) == BodyFraming::kUntilClose);

  for (const char* status_line : {"HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified",
                                  "HTTP/1.1 100 Continue", "HTTP/1.1 103 Early Hints"}) {
    INFO(status_line);
    parser.Reset();
    REQUIRE(parser.Parse(std::string(status_line) + "\r\nContent-Length: 5\r\n\r\n").status ==
            ParseStatus::kDone);
    CHECK(ResponseFraming("GET", parser.head()) == BodyFraming::kNone);
  }
  CHECK(ResponseMayHaveBody("GET", 200));
  CHECK(ResponseMayHaveBody("CONNECT", 407));
  CHECK_FALSE(ResponseMayHaveBody("HEAD", 200));
  CHECK_FALSE(ResponseMayHaveBody("GET", 101));
}

TEST_CASE("response: a 1xx head is followed by the final response") {
  const std::string wire =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  ResponseParser parser;
  const ParseResult r = parser.Parse(wire);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(parser.head().IsInformational());
  CHECK(parser.head().status == 100);
  std::string_view rest(wire);
  rest.remove_prefix(r.consumed);
  parser.Reset();
  const ParseResult f = parser.Parse(rest);
  REQUIRE(f.status == ParseStatus::kDone);
  CHECK(parser.head().status == 201);
  CHECK_FALSE(parser.head().IsInformational());
  CHECK(rest.substr(f.consumed) == "ok");
}

TEST_CASE("response: HTTP/1.0 keep-alive semantics") {
  ResponseParser parser;
  REQUIRE(parser.Parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").status ==
          ParseStatus::kDone);
  CHECK_FALSE(parser.head().keep_alive);
  parser.Reset();
  REQUIRE(parser.Parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
              .status == ParseStatus::kDone);
  CHECK(parser.head().keep_alive);
  parser.Reset();
  REQUIRE(parser.Parse("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").status ==
          ParseStatus::kDone);
  CHECK_FALSE(parser.head().keep_alive);
}

TEST_CASE("response: fed one byte at a time") {
  const std::string resp =
      "HTTP/1.1 200 OK\r\nServer: upstream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
  ResponseParser parser;
  std::string storage;
  const ParseResult r = FeedBytewise(parser, resp, &storage);
  REQUIRE(r.status == ParseStatus::kDone);
  CHECK(r.consumed == resp.find("5\r\n"));
  CHECK(parser.head().chunked);
  CHECK(parser.head().Find("server")->value == "upstream");
}

#include "proxy/http/chunked.h"

#include <catch2/catch.hpp>
#include <string>
#include <string_view>

using skiff::http::ChunkedDecoder;
using skiff::http::ChunkedLimits;
using skiff::http::ChunkedResult;
using skiff::http::ChunkedStatus;

namespace {

struct Decoded {
  ChunkedStatus status = ChunkedStatus::kInProgress;
  std::string body;
  size_t consumed = 0;  // total input bytes used (on error: offset of the bad byte)
  std::string error;
};

// Feeds `input` in pieces of `piece` bytes (0 = all at once).
Decoded Decode(std::string_view input, size_t piece = 0,
               const ChunkedLimits& limits = ChunkedLimits{}) {
  ChunkedDecoder decoder(limits);
  Decoded out;
  size_t offset = 0;
  while (offset < input.size() && out.status == ChunkedStatus::kInProgress) {
    const size_t len = piece == 0 ? input.size() : std::min(piece, input.size() - offset);
    std::string_view in = input.substr(offset, len);
    offset += len;
    while (!in.empty()) {
      const ChunkedResult r = decoder.Decode(in);
      out.body.append(r.data);
      out.consumed += r.consumed;
      in.remove_prefix(r.consumed);
      if (r.status != ChunkedStatus::kInProgress) {
        out.status = r.status;
        break;
      }
    }
  }
  out.error = std::string(decoder.error());
  return out;
}

}  // namespace

TEST_CASE("chunked: decodes a body of several chunks") {
  const std::string body = "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
  const Decoded d = Decode(body);
  CHECK(d.status == ChunkedStatus::kDone);
  CHECK(d.body == "hello, world");
  CHECK(d.consumed == body.size());
  CHECK(d.error.empty());
}

TEST_CASE("chunked: an empty body is just the last chunk") {
  const Decoded d = Decode("0\r\n\r\n");
  CHECK(d.status == ChunkedStatus::kDone);
  CHECK(d.body.empty());
  CHECK(d.consumed == 5);
}

TEST_CASE("chunked: the same body whatever the split points") {
  const std::string body =
      "1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n3\r\n123\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t piece = 1; piece <= body.size(); ++piece) {
    INFO("pieces of " << piece);
    const Decoded d = Decode(body, piece);
    CHECK(d.status == ChunkedStatus::kDone);
    CHECK(d.body == "abcdefghijklmnopqrstuvwxyz123");
    CHECK(d.consumed == body.size());
  }
}

TEST_CASE("chunked: data is streamed as it arrives, as views into the input") {
  ChunkedDecoder decoder;
  const std::string first = "10\r\n0123456";  // a 16-byte chunk, 7 bytes of it so far
  ChunkedResult r = decoder.Decode(first);
  CHECK(r.status == ChunkedStatus::kInProgress);
  CHECK(r.data == "0123456");
  CHECK(r.data.data() == first.data() + 4);  // zero-copy
  CHECK(r.consumed == first.size());

  const std::string second = "789abcdef\r\n0\r\n\r\nNEXT";
  r = decoder.Decode(second);
  CHECK(r.status == ChunkedStatus::kInProgress);
  CHECK(r.data == "789abcdef");
  CHECK(r.consumed == 9);
  CHECK(decoder.body_bytes() == 16);
  r = decoder.Decode(std::string_view(second).substr(9));
  CHECK(r.status == ChunkedStatus::kDone);
  CHECK(r.data.empty());
  // Stops right after the final CRLF: the rest belongs to the next message.
  CHECK(r.consumed == std::string_view("\r\n0\r\n\r\n").size());
  CHECK(decoder.done());
}

TEST_CASE("chunked: stops at the end of the body so pipelined bytes are left") {
  const std::string body = "3\r\nabc\r\n0\r\n\r\n";
  const std::string wire = body + "GET / HTTP/1.1\r\n";
  ChunkedDecoder decoder;
  std::string_view in = wire;
  std::string got;
  for (;;) {
    const ChunkedResult r = decoder.Decode(in);
    REQUIRE(r.status != ChunkedStatus::kError);
    got.append(r.data);
    in.remove_prefix(r.consumed);
    if (r.status == ChunkedStatus::kDone) {
      break;
    }
  }
  CHECK(got == "abc");
  CHECK(in == "GET / HTTP/1.1\r\n");
}

TEST_CASE("chunked: hex sizes accept both cases and leading zeros") {
  CHECK(Decode("A\r\n0123456789\r\n0\r\n\r\n").body == "0123456789");
  CHECK(Decode("a\r\n0123456789\r\n0\r\n\r\n").body == "0123456789");
  CHECK(Decode("000b\r\n0123456789X\r\n000\r\n\r\n").body == "0123456789X");
  CHECK(Decode("000b\r\n0123456789X\r\n000\r\n\r\n").status == ChunkedStatus::kDone);
}

TEST_CASE("chunked: chunk extensions are ignored") {
  for (const char* line : {"5;name=value", "5;a;b=c", "5 ;a", "5\t; a = \"quoted ; x\"", "5;"}) {
    INFO(line);
    const Decoded d = Decode(std::string(line) + "\r\nhello\r\n0;last\r\n\r\n");
    CHECK(d.status == ChunkedStatus::kDone);
    CHECK(d.body == "hello");
  }
}

TEST_CASE("chunked: trailer fields are skipped") {
  const std::string body = "2\r\nhi\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n";
  const Decoded d = Decode(body);
  CHECK(d.status == ChunkedStatus::kDone);
  CHECK(d.body == "hi");
  CHECK(d.consumed == body.size());
}

TEST_CASE("chunked: invalid hex chunk sizes are rejected") {
  for (const char* bad : {"g\r\n", "\r\n", "-1\r\n", "0x5\r\n", "+5\r\n", " 5\r\n", "5 5\r\n",
                          "5z\r\n", ";ext\r\n", "5\r\r\n"}) {
    INFO("[" << bad << "]");
    const Decoded d = Decode(bad);
    CHECK(d.status == ChunkedStatus::kError);
    CHECK_FALSE(d.error.empty());
  }
}

TEST_CASE("chunked: a chunk size overflowing 64 bits is rejected") {
  const Decoded d = Decode("10000000000000000\r\n");  // 2^64
  CHECK(d.status == ChunkedStatus::kError);
  CHECK(d.error == "chunk size overflow");
  // The largest size is still accepted (and then waits for its data).
  const Decoded max = Decode("FFFFFFFFFFFFFFFF\r\nabc");
  CHECK(max.status == ChunkedStatus::kInProgress);
  CHECK(max.body == "abc");
  CHECK(Decode("0000000000000000000001\r\nx\r\n0\r\n\r\n").body == "x");
}

TEST_CASE("chunked: missing CRLF after chunk data is rejected") {
  for (const char* bad :
       {"5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello0\r\n\r\n"}) {
    INFO(bad);
    const Decoded d = Decode(bad);
    CHECK(d.status == ChunkedStatus::kError);
    CHECK(d.error == "missing CRLF after chunk data");
    CHECK(d.body == "hello");  // the data before the error was streamed already
    CHECK(d.consumed == 8);    // offset of the offending byte
  }
  const Decoded cr_only = Decode("5\r\nhello\rX0\r\n\r\n");
  CHECK(cr_only.status == ChunkedStatus::kError);
  CHECK(cr_only.error == "missing CRLF after chunk data");
  CHECK(cr_only.consumed == 9);
}

TEST_CASE("chunked: a bare LF or a bare CR in the framing is rejected") {
  CHECK(Decode("5\nhello\r\n0\r\n\r\n").status == ChunkedStatus::kError);
  CHECK(Decode("5\rhello\r\n0\r\n\r\n").status == ChunkedStatus::kError);
  CHECK(Decode("0\r\n\n").status == ChunkedStatus::kError);
  CHECK(Decode("0\r\nX: a\n\r\n").status == ChunkedStatus::kError);
  CHECK(Decode("0\r\nX: a\rb\r\n\r\n").status == ChunkedStatus::kError);
  CHECK(Decode("0\r\n\rX").status == ChunkedStatus::kError);
}

TEST_CASE("chunked: control bytes in extensions and trailers are rejected") {
  CHECK(Decode(std::string("5;a=") + '\0' + "\r\nhello\r\n0\r\n\r\n").error ==
        "invalid byte in chunk extension");
  CHECK(Decode("5;a=\x7f\r\nhello\r\n0\r\n\r\n").error == "invalid byte in chunk extension");
  CHECK(Decode("0\r\nX: \x01\r\n\r\n").error == "invalid byte in trailer section");
  CHECK(Decode("0\r\n folded\r\n\r\n").error == "obs-fold in trailer section");
}

TEST_CASE("chunked: size lines and trailers are bounded") {
  ChunkedLimits limits;
  limits.max_size_line_bytes = 16;
  CHECK(Decode("5;" + std::string(14, 'e') + "\r\nhello\r\n0\r\n\r\n", 0, limits).status ==
        ChunkedStatus::kDone);
  CHECK(Decode("5;" + std::string(15, 'e') + "\r\nhello\r\n0\r\n\r\n", 0, limits).error ==
        "chunk size line too long");
  CHECK(Decode(std::string(17, '0') + "5\r\n", 0, limits).error == "chunk size line too long");

  limits = ChunkedLimits{};
  limits.max_trailer_bytes = 12;  // field lines without their CRLFs
  CHECK(Decode("0\r\nX: 12345\r\nY: 1\r\n\r\n", 0, limits).status == ChunkedStatus::kDone);
  CHECK(Decode("0\r\nX: 12345\r\nY: 12\r\n\r\n", 0, limits).error == "trailer section too large");
  // The default limit stops an endless extension.
  CHECK(Decode("5;" + std::string(5000, 'e')).error == "chunk size line too long");

  // As many trailer fields as header fields (dropped ones count too).
  limits = ChunkedLimits{};
  limits.max_trailer_fields = 2;
  CHECK(Decode("0\r\nX: 1\r\nHost: h\r\n\r\n", 0, limits).status == ChunkedStatus::kDone);
  CHECK(Decode("0\r\nX: 1\r\nHost: h\r\nY: 2\r\n\r\n", 0, limits).error ==
        "too many trailer fields");
  std::string many = "0\r\n";
  for (int i = 0; i < 101; ++i) {
    many.append("x").append(std::to_string(i)).append(": v\r\n");
  }
  CHECK(Decode(many + "\r\n").error == "too many trailer fields");
}

TEST_CASE("chunked: done and error are sticky until Reset") {
  ChunkedDecoder decoder;
  REQUIRE(decoder.Decode("0\r\n\r\n").status == ChunkedStatus::kDone);
  ChunkedResult r = decoder.Decode("5\r\nhello\r\n");
  CHECK(r.status == ChunkedStatus::kDone);
  CHECK(r.consumed == 0);
  decoder.Reset();
  REQUIRE(decoder.Decode("zz").status == ChunkedStatus::kError);
  CHECK(decoder.failed());
  r = decoder.Decode("0\r\n\r\n");
  CHECK(r.status == ChunkedStatus::kError);
  CHECK(r.consumed == 0);
  decoder.Reset();
  CHECK_FALSE(decoder.failed());
  CHECK(decoder.error().empty());
  r = decoder.Decode("2\r\nok\r\n0\r\n\r\n");
  CHECK(r.data == "ok");
}

TEST_CASE("chunked: an incomplete body stays in progress") {
  for (const char* partial :
       {"5", "5\r", "5\r\nhel", "5\r\nhello", "5\r\nhello\r", "5\r\nhello\r\n0",
        "5\r\nhello\r\n0\r\n", "5\r\nhello\r\n0\r\nX: y\r\n", "5\r\nhello\r\n0\r\n\r"}) {
    INFO(partial);
    CHECK(Decode(partial).status == ChunkedStatus::kInProgress);
  }
}

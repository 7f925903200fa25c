// The HTTP/1.1 codecs over buffers, without sockets.
#include "proxy/http/http1_codec.h"

#include <catch2/catch.hpp>

using skiff::http::Http1ClientCodec;
using skiff::http::Http1ServerCodec;
using skiff::http::ResetReason;
using skiff::net::Buffer;

namespace {

// Records a request stream and answers with what the test sets.
class Stream : public skiff::http::RequestDecoder {
 public:
  void DecodeHead(const skiff::http::RequestHead& head, size_t, bool end) override {
    target = std::string(head.target);
    ended = end;
  }
  void DecodeBody(std::string_view data, bool end) override {
    body.append(data);
    ended = ended || end;
  }
  void DecodeTrailers(std::string_view fields) override {
    trailers = std::string(fields);
    ended = true;
  }
  void OnDownstreamReset(ResetReason r) override { reset = static_cast<int>(r) + 1; }
  void OnDownstreamWatermark(bool above) override { watermark = above; }
  std::string target, body, trailers;
  bool ended = false;
  bool watermark = false;
  int reset = 0;
};

class Connection : public skiff::http::ServerCodecCallbacks {
 public:
  Connection() : codec(*this, in, out, options) {}
  skiff::http::RequestDecoder& NewStream(skiff::http::ResponseEncoder& e) override {
    streams.emplace_back(std::make_unique<Stream>());
    encoder = &e;
    return *streams.back();
  }
  void OnHeadStarted() override {}
  void OnHeadComplete() override {}
  void OnStreamComplete(skiff::http::RequestDecoder& /*decoder*/) override { ++completed; }
  void OnProtocolError(int status) override { error = status; }
  void ScheduleDispatch() override { ++dispatches; }
  void OnOutput() override {}
  void Feed(std::string_view bytes) {
    in.Append(bytes);
    codec.Dispatch();
  }
  void Answer(std::string_view body) {
    skiff::http::ResponseHeaders h;
    h.status = 200;
    h.content_length = body.size();
    encoder->EncodeHead(h, body.empty());
    if (!body.empty()) {
      encoder->EncodeBody(body, true);
    }
  }
  skiff::http::ServerCodecOptions options;
  Buffer in, out;
  Http1ServerCodec codec;
  std::vector<std::unique_ptr<Stream>> streams;
  skiff::http::ResponseEncoder* encoder = nullptr;
  int completed = 0, error = 0, dispatches = 0;
};

}  // namespace

TEST_CASE("server codec: one stream at a time - pipelined requests wait their turn") {
  Connection c;
  c.Feed("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
  REQUIRE(c.streams.size() == 1);
  CHECK(c.streams[0]->target == "/1");
  c.Answer("one");
  CHECK(c.completed == 1);
  c.codec.Dispatch();
  REQUIRE(c.streams.size() == 2);
  CHECK(c.streams[1]->target == "/2");
  CHECK(std::string(c.out.view()).find("content-length: 3\r\n\r\none") != std::string::npos);
}

TEST_CASE("server codec: no new request is parsed while the client leaves its output unread") {
  Connection c;
  c.options.max_buffer_bytes = 64;
  std::string many;
  for (int i = 0; i < 10; ++i) {
    many += "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  }
  c.Feed(many);
  for (int i = 0; i < 10 && !c.streams.empty() && c.codec.stream_active(); ++i) {
    c.Answer(std::string(40, 'x'));
    c.codec.Dispatch();
  }
  // Two answers of 40 bytes plus heads exceed 64 bytes: parsing stopped, reading too.
  CHECK(c.streams.size() < 10);
  CHECK(!c.codec.WantsRead());
  size_t before = c.streams.size();
  c.out.Clear();  // the client read it all
  c.codec.OnOutputDrained();
  c.codec.Dispatch();
  CHECK(c.streams.size() > before);
}

TEST_CASE("server codec: chunked bodies are decoded - extensions dropped - trailers kept valid") {
  Connection c;
  c.Feed(
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n0\r\nX-T: v\r\nContent-Length: 9\r\n\r\n");
  REQUIRE(c.streams.size() == 1);
  CHECK(c.streams[0]->body == "hello");
  CHECK(c.streams[0]->trailers == "X-T: v\r\n");  // framing fields are not trailers
  CHECK(c.streams[0]->ended);
}

TEST_CASE("server codec: an invalid trailer resets the stream as a protocol error") {
  Connection c;
  c.Feed(
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nx\r\n0\r\nno colon\r\n\r\n");
  REQUIRE(c.streams.size() == 1);
  CHECK(c.streams[0]->reset == static_cast<int>(ResetReason::kProtocolError) + 1);
  CHECK(c.codec.close_after_flush());
}

TEST_CASE("server codec: a response before the whole request closes the connection") {
  Connection c;
  c.Feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12345");
  c.Answer("early");
  CHECK(std::string(c.out.view()).find("connection: close\r\n") != std::string::npos);
  CHECK(c.codec.close_after_flush());
}

TEST_CASE("server codec: framing of responses for HTTP/1.0 - HEAD and unknown lengths") {
  Connection c;
  c.Feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  skiff::http::ResponseHeaders h;
  h.status = 200;
  c.encoder->EncodeHead(h, false);
  c.encoder->EncodeBody("abc", false);
  c.encoder->EncodeBody("", true);
  CHECK(std::string(c.out.view()) ==
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
  Connection d;
  d.Feed("GET / HTTP/1.0\r\n\r\n");
  d.encoder->EncodeHead(h, false);
  d.encoder->EncodeBody("abc", true);
  CHECK(std::string(d.out.view()) == "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabc");
  Connection e;
  e.Feed("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
  h.content_length = 42;
  e.encoder->EncodeHead(h, true);
  CHECK(std::string(e.out.view()) == "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n");
}

namespace {
class Response : public skiff::http::ResponseDecoder {
 public:
  void DecodeResponseHead(const skiff::http::ResponseHead& head, bool end) override {
    status = head.status;
    ended = end;
  }
  void DecodeResponseBody(std::string_view data, bool end) override {
    body.append(data);
    ended = ended || end;
  }
  void DecodeResponseTrailers(std::string_view fields) override {
    trailers = std::string(fields);
    ended = true;
  }
  void OnUpstreamReset(ResetReason) override {}
  void OnUpstreamWatermark(bool) override {}
  int status = 0;
  std::string body, trailers;
  bool ended = false;
};
}  // namespace

TEST_CASE("server codec: a first line with no HTTP version closes without an answer") {
  Connection c;
  c.Feed("INVALID CONNECTION PREFACE\r\n\r\n");  // h2spec's invalid preface
  CHECK(c.streams.empty());
  CHECK(c.error == 400);
  CHECK(c.out.empty());
  CHECK(c.codec.close_after_flush());
}

TEST_CASE("server codec: a request line with a space in the target gets 400") {
  Connection c;
  c.Feed("GET http://exa mple.com/ HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(c.streams.empty());
  CHECK(c.error == 400);
  CHECK(c.out.view().substr(0, 12) == "HTTP/1.1 400");
}

TEST_CASE("client codec: request framing - and responses re-framed for the exchange") {
  Buffer out;
  Http1ClientCodec codec(out);
  skiff::http::RequestHeaders req{std::string("POST"),
                                  std::string("/p"),
                                  std::string("up:80"),
                                  std::string("x-a: 1\r\n"),
                                  true,
                                  std::nullopt,
                                  false};
  codec.EncodeHead(req, false);
  codec.EncodeBody("hi", true);
  CHECK(std::string(out.view()) ==
        "POST /p HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        "2\r\nhi\r\n0\r\n\r\n");
  Buffer in;
  in.Append(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
      "3;x=y\r\nabc\r\n0\r\nx-t: 1\r\n\r\n");
  Response r;
  CHECK(codec.Dispatch(in, r, false) == Http1ClientCodec::Status::kComplete);
  CHECK(r.status == 200);
  CHECK(r.body == "abc");
  CHECK(r.trailers == "x-t: 1\r\n");
  CHECK(codec.keep_alive());
}

TEST_CASE("client codec: a response cut short is a connection termination") {
  Buffer out;
  Http1ClientCodec codec(out);
  skiff::http::RequestHeaders req{std::string("GET"),
                                  std::string("/"),
                                  std::string("a"),
                                  std::string(),
                                  false,
                                  std::nullopt,
                                  false};
  codec.EncodeHead(req, true);
  Buffer in;
  in.Append("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
  Response r;
  CHECK(codec.Dispatch(in, r, true) == Http1ClientCodec::Status::kReset);
  CHECK(codec.error() == ResetReason::kConnectionTermination);
  Buffer garbage;
  garbage.Append("NOT HTTP\r\n\r\n");
  codec.Reset();
  CHECK(codec.Dispatch(garbage, r, false) == Http1ClientCodec::Status::kReset);
  CHECK(codec.error() == ResetReason::kProtocolError);
}

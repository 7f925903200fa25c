#pragma once
// HTTP/1.1 codecs over byte buffers (no sockets): the server side turns a client's bytes
// into request events for one stream at a time and writes responses with the right
// framing; the client side writes requests and turns an upstream's bytes into response
// events. Request and response bodies are re-framed, never forwarded raw: chunk
// extensions are dropped and trailers pass only as valid field lines.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/http/chunked.h"
#include "proxy/http/codec.h"
#include "proxy/http/parser.h"
#include "proxy/net/buffer.h"

namespace skiff::http {

// Appends one chunk ("<hex>\r\n<data>\r\n") to `out`; nothing for empty data.
void AppendChunk(net::Buffer* out, std::string_view data);
// Appends the last chunk, the trailer fields and the final CRLF.
void AppendLastChunk(net::Buffer* out, std::string_view trailer_fields);
// Appends an HTTP/1.1 request head for `head` (request line, Host, fields, framing).
void AppendRequestHead(const RequestHeaders& head, std::string* out);

class Http1ServerCodec final : public ServerCodec, public ResponseEncoder {
 public:
  // Reads requests from `in` and writes responses to `out`; the connection owns both
  // and moves bytes between them and the socket.
  Http1ServerCodec(ServerCodecCallbacks& callbacks, net::Buffer& in, net::Buffer& out,
                   const ServerCodecOptions& options);

  // Parses and delivers what `in` holds, as far as the current stream allows.
  void Dispatch() override;
  // The client closed the connection or it broke: the stream (if any) is reset.
  void OnConnectionClosed() override;
  // The connection wrote some of `out`: resumes what waited for the client to read.
  void OnOutputDrained() override;
  // Answers the head in progress with `status` (the header timeout's 408) and closes.
  void RejectHead(int status, std::string_view reason) override;
  // No more requests: the current response (if any) is the last, with Connection: close.
  void Drain() override;
  // Should the connection read from the socket now?
  [[nodiscard]] bool WantsRead() const override;
  // Close once `out` is written (after Connection: close, an error, a reset).
  [[nodiscard]] bool close_after_flush() const override { return close_; }
  [[nodiscard]] bool peer_done() const override { return peer_done_; }
  [[nodiscard]] bool abort_connection() const override { return abort_; }
  [[nodiscard]] bool stream_active() const override { return decoder_ != nullptr; }
  // Bytes of a request head have arrived but not the whole head.
  [[nodiscard]] bool head_in_progress() const override { return head_started_; }

  // ResponseEncoder
  void Encode100Continue() override;
  void EncodeHead(const ResponseHeaders& head, bool end_stream) override {
    if (decoder_ != nullptr && response_ == Response::kNone) {
      WriteHead(head, end_stream);
      AfterHead(end_stream);
    }
  }
  void EncodeBody(std::string_view data, bool end_stream) override;
  void EncodeTrailers(std::string_view fields) override;
  void StartTunnel() override;
  void ResetStream() override;
  void ReadDisable(bool disable) override;
  [[nodiscard]] bool response_started() const override { return response_ != Response::kNone; }
  [[nodiscard]] uint64_t head_bytes_written() const override { return head_bytes_; }
  [[nodiscard]] std::string_view protocol() const override {
    return http10_ ? "HTTP/1.0" : "HTTP/1.1";
  }

 private:
  enum class Request : uint8_t { kHead, kContentLength, kChunked, kComplete, kTunnel, kClosed };
  enum class Response : uint8_t { kNone, kContentLength, kChunked, kUntilClose, kNoBody, kDone };

  bool DispatchHead();
  void WriteHead(const ResponseHeaders& head, bool end_stream);
  void AfterHead(bool end_stream);
  void DispatchBody();
  void BodyError();
  void ResponseComplete();
  void FinishStream();
  void CheckWatermark();
  void WriteErrorResponse(int status, std::string_view reason);

  ServerCodecCallbacks& callbacks_;
  net::Buffer& in_;
  net::Buffer& out_;
  const ServerCodecOptions& options_;
  RequestParser parser_;
  ChunkedDecoder chunks_;
  RequestDecoder* decoder_ = nullptr;
  Request request_ = Request::kHead;
  Response response_ = Response::kNone;
  uint64_t request_remaining_ = 0;
  bool head_started_ = false;
  bool http10_ = false;
  bool keep_alive_ = true;
  bool head_method_ = false;
  bool expect_continue_ = false;
  bool continue_sent_ = false;
  bool close_ = false;
  bool abort_ = false;      // close with a reset (see abort_connection)
  bool peer_done_ = false;  // the response answers the client's last request, read whole
  bool read_disabled_ = false;
  bool above_watermark_ = false;
  bool dispatching_ = false;
  bool draining_ = false;
  bool served_ = false;  // a request head was parsed on this connection
  uint64_t head_bytes_ = 0;
};

class Http1ClientCodec {
 public:
  enum class Status : uint8_t {
    kNeedMore,  // the response is not complete yet
    kComplete,  // the response ended; keep_alive() says whether the connection may be reused
    kReset,     // the stream failed (error() says how) or was aborted from a callback
  };

  explicit Http1ClientCodec(net::Buffer& out) : out_(out) {}

  void EncodeHead(const RequestHeaders& head, bool end_stream);
  void EncodeBody(std::string_view data, bool end_stream);
  void EncodeTrailers(std::string_view fields);
  void StartTunnel() { tunnel_ = true; }

  // Parses the response bytes in `in` (consuming them) and delivers them to `decoder`.
  // `eof`: the upstream closed after these bytes.
  Status Dispatch(net::Buffer& in, ResponseDecoder& decoder, bool eof);
  // Called from a decoder callback to stop the current Dispatch (the stream was reset).
  void Abort() { aborted_ = true; }
  [[nodiscard]] ResetReason error() const { return error_; }
  [[nodiscard]] bool keep_alive() const { return keep_alive_ && request_complete_; }
  [[nodiscard]] bool request_complete() const { return request_complete_; }
  [[nodiscard]] bool response_started() const { return response_started_; }
  // Ready for the next request on the same connection.
  void Reset();

 private:
  enum class Body : uint8_t { kHead, kContentLength, kChunked, kUntilClose, kTunnel, kDone };
  Status Fail(ResetReason reason);

  net::Buffer& out_;
  ResponseParser parser_;
  ChunkedDecoder chunks_;
  Body body_ = Body::kHead;
  uint64_t remaining_ = 0;
  std::string method_;
  bool chunked_request_ = false;
  bool request_complete_ = false;
  bool response_started_ = false;
  bool keep_alive_ = false;
  bool tunnel_ = false;
  bool aborted_ = false;
  ResetReason error_ = ResetReason::kConnectionTermination;
};

}  // namespace skiff::http

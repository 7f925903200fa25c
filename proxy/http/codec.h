#pragma once
// The codec interfaces: what a request's Exchange sees of the client and of the upstream,
// independent of the wire protocol. HTTP/1.1 implements them today (http1_codec.h);
// HTTP/2 will be a second implementation of the same interfaces, with many streams per
// connection where HTTP/1 has one at a time.
//
//   client bytes -> ServerCodec -> RequestDecoder (the Exchange)     request events
//                   ServerCodec <- ResponseEncoder (per stream)      response out
//   Exchange -> ClientStream (per try, from the pool) -> upstream bytes
//   upstream bytes -> ClientStream -> ResponseDecoder (the try)      response events
//
// Heads arrive parsed (RequestHead / ResponseHead, views valid only during the call);
// what goes out is owned (RequestHeaders / ResponseHeaders), so a retry or a mirror can
// send a request again after the client's bytes are gone. Framing (Content-Length,
// chunked, close-delimited, 100-continue, keep-alive) is the codec's business.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/http/parser.h"

namespace skiff::http {

// A request as sent upstream. `fields` holds "name: value\r\n" lines without Host,
// framing and hop-by-hop fields.
struct RequestHeaders {
  std::string method;
  std::string path;       // origin-form, with the query
  std::string authority;  // the Host value
  std::string fields;
  bool has_body = false;
  std::optional<uint64_t> content_length;  // with has_body: known length; else chunked
  bool upgrade = false;  // `fields` has an Upgrade field: the codec adds "connection: upgrade"
};

// A response as sent to the client. `fields` as above (no framing fields).
struct ResponseHeaders {
  int status = 200;
  std::string_view reason;  // empty: the standard phrase
  std::string fields;
  // The body's length when known. For a HEAD request, the length the body would have.
  std::optional<uint64_t> content_length;
  bool upgrade = false;  // a 101 with an Upgrade field in `fields`
};

enum class ResetReason {
  kConnectFailure,         // the upstream connection could not be made
  kConnectTimeout,         // ... in time
  kConnectionTermination,  // closed or reset before the response was complete
  kProtocolError,          // invalid framing or syntax from the peer
  kOverflow,               // a connection limit refused the stream
  kLocalReset,             // this side gave up (timeout, client gone)
  kRemoteReset,            // the peer reset the stream (HTTP/2 RST_STREAM), not refusing it
};

// ---- downstream ----------------------------------------------------------------------

// The Exchange side of one request stream.
class RequestDecoder {
 public:
  virtual ~RequestDecoder() = default;
  // The request head; `end_stream` when no body follows.
  virtual void DecodeHead(const RequestHead& head, size_t head_bytes, bool end_stream) = 0;
  // Body bytes (decoded: never chunk framing); `end_stream` with the last ones.
  virtual void DecodeBody(std::string_view data, bool end_stream) = 0;
  // Trailer fields ("name: value\r\n" lines) of a chunked body; ends the request.
  virtual void DecodeTrailers(std::string_view fields) = 0;
  // The stream cannot go on: the client closed, or its body was malformed
  // (kProtocolError). After this the encoder only takes a local reply, if no response
  // started, and nothing else.
  virtual void OnDownstreamReset(ResetReason reason) = 0;
  // The client's output went above / back below the connection's buffer limit.
  virtual void OnDownstreamWatermark(bool above) = 0;
};

// The codec side of one request stream: the response goes out through it.
class ResponseEncoder {
 public:
  virtual ~ResponseEncoder() = default;
  virtual void Encode100Continue() = 0;
  // The final response head (or a 101); `end_stream` when no body follows.
  virtual void EncodeHead(const ResponseHeaders& head, bool end_stream) = 0;
  virtual void EncodeBody(std::string_view data, bool end_stream) = 0;
  // Trailer fields; ends the response.
  virtual void EncodeTrailers(std::string_view fields) = 0;
  // After a 101: bytes pass both ways unframed until either side closes.
  virtual void StartTunnel() = 0;
  // Aborts the stream: for HTTP/1 the connection closes (a truncated response if one
  // started). No more calls to the decoder follow.
  virtual void ResetStream() = 0;
  // Stops (or resumes) delivering the request body, for back-pressure.
  virtual void ReadDisable(bool disable) = 0;
  [[nodiscard]] virtual bool response_started() const = 0;
  // Bytes of the last response head written (for telemetry).
  [[nodiscard]] virtual uint64_t head_bytes_written() const = 0;
  // The client's protocol, for access logs ("HTTP/1.1").
  [[nodiscard]] virtual std::string_view protocol() const = 0;
};

// ---- upstream ------------------------------------------------------------------------

// The try side of one upstream stream.
class ResponseDecoder {
 public:
  virtual ~ResponseDecoder() = default;
  // The final response head (1xx other than 101 are dropped by the codec).
  virtual void DecodeResponseHead(const ResponseHead& head, bool end_stream) = 0;
  virtual void DecodeResponseBody(std::string_view data, bool end_stream) = 0;
  virtual void DecodeResponseTrailers(std::string_view fields) = 0;
  // The stream failed; `reason` says how. The stream is gone after this call.
  virtual void OnUpstreamReset(ResetReason reason) = 0;
  // The upstream's output went above / back below the buffer limit.
  virtual void OnUpstreamWatermark(bool above) = 0;
};

// One request on an upstream connection, handed out by a connection pool.
class ClientStream {
 public:
  virtual ~ClientStream() = default;
  virtual void SetDecoder(ResponseDecoder* decoder) = 0;
  virtual void EncodeHead(const RequestHeaders& head, bool end_stream) = 0;
  virtual void EncodeBody(std::string_view data, bool end_stream) = 0;
  virtual void EncodeTrailers(std::string_view fields) = 0;
  virtual void StartTunnel() = 0;
  // Stops (or resumes) reading the response, for back-pressure.
  virtual void ReadDisable(bool disable) = 0;
  // Abandons the stream; its connection is closed, never reused. No decoder calls follow.
  virtual void Reset() = 0;
  // Bytes of this request written to the socket so far: 0 means the upstream cannot
  // have seen any of it, so it may be sent again on another connection.
  [[nodiscard]] virtual uint64_t bytes_sent() const = 0;
  // The connection served an earlier request (it came from the idle pool).
  [[nodiscard]] virtual bool reused() const = 0;
};

// ---- server connections --------------------------------------------------------------

struct Http2Options {
  uint32_t max_concurrent_streams = 100;        // SETTINGS_MAX_CONCURRENT_STREAMS
  uint32_t initial_stream_window = 256 * 1024;  // SETTINGS_INITIAL_WINDOW_SIZE
  uint32_t initial_connection_window = 1024 * 1024;
  size_t stream_buffer_bytes = 64 * 1024;  // response bytes queued per stream before back-pressure
  // Rapid reset (CVE-2023-44487): the connection is closed once the client has reset at
  // least this many streams before their response ended, and they are at least half of
  // its streams (Envoy's premature-reset rule).
  uint32_t premature_reset_min = 100;
};

struct ServerCodecOptions {
  size_t max_buffer_bytes = 256 * 1024;  // output above this: stop taking new requests
  HeadLimits head_limits;
  std::string server_name = "skiff";  // in the codec's own error responses
  Http2Options http2;
};

// What the connection does for its server codec.
class ServerCodecCallbacks {
 public:
  virtual ~ServerCodecCallbacks() = default;
  // A request head arrived: the connection creates the stream's decoder (an Exchange).
  virtual RequestDecoder& NewStream(ResponseEncoder& encoder) = 0;
  // The first bytes of a request head arrived / the head is complete (header timeout).
  virtual void OnHeadStarted() = 0;
  virtual void OnHeadComplete() = 0;
  // The stream of `decoder` ended (response complete, or reset); the decoder is no longer
  // used. Never called from inside one of that decoder's calls into its encoder... except
  // for HTTP/1, where the connection keeps the decoder alive until the next stream.
  virtual void OnStreamComplete(RequestDecoder& decoder) = 0;
  // A head could not be parsed; the codec wrote the error response (`status`) and the
  // connection closes after it.
  virtual void OnProtocolError(int status) = 0;
  // Input may be deliverable (or readable) again: call Dispatch() after the current turn
  // and update the read interest.
  virtual void ScheduleDispatch() = 0;
  // Response bytes were queued (write them out after this turn).
  virtual void OnOutput() = 0;
};

// The server side of one client connection, whatever its protocol: it reads the
// connection's input buffer, starts a stream (an Exchange) per request, and writes what
// the streams answer to the output buffer. HTTP/1.1 has one stream at a time; HTTP/2
// many.
class ServerCodec {
 public:
  virtual ~ServerCodec() = default;
  // Parses and delivers what the input holds, as far as the streams allow.
  virtual void Dispatch() = 0;
  // The client closed the connection or it broke: every stream is reset.
  virtual void OnConnectionClosed() = 0;
  // The connection wrote some of the output: resumes what waited for the client to read.
  virtual void OnOutputDrained() = 0;
  // Moves what the codec holds for the wire into the output buffer, up to its bound
  // (HTTP/2 frames; HTTP/1 writes the buffer directly).
  virtual void PrepareOutput() {}
  // The header timeout fired with a head in progress: HTTP/1 answers `status` (408);
  // HTTP/2 ends the connection.
  virtual void RejectHead(int status, std::string_view reason) = 0;
  // No more requests: the current ones finish, then the connection closes.
  virtual void Drain() = 0;
  [[nodiscard]] virtual bool WantsRead() const = 0;
  // Close once the output is written.
  [[nodiscard]] virtual bool close_after_flush() const = 0;
  // The client will send nothing more (HTTP/1: its last request, `Connection: close` or
  // HTTP/1.0, was read whole): closing cannot cut off input, so no lingering close.
  [[nodiscard]] virtual bool peer_done() const { return false; }
  // A response was cut off whose end only the close marks (HTTP/1 without a length): the
  // connection ends with a reset, so that the client does not take it as complete.
  [[nodiscard]] virtual bool abort_connection() const { return false; }
  // Some stream is running.
  [[nodiscard]] virtual bool stream_active() const = 0;
  // Bytes of a request head have arrived but not the whole head.
  [[nodiscard]] virtual bool head_in_progress() const = 0;
};

}  // namespace skiff::http

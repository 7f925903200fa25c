#pragma once
// HTTP/2 over byte buffers (no sockets), on nghttp2: the server side turns a client
// connection's frames into one request stream (an Exchange) per HTTP/2 stream and writes
// their responses as frames. nghttp2 does the framing, HPACK and the protocol's rules
// (RFC 9113 message validation included); this codec adds what a proxy needs on top:
// bounded buffers per stream and per connection with flow control as the back-pressure
// (a window is reopened only when the exchange took the bytes), a header list limit,
// graceful GOAWAY, and defences against the known HTTP/2 attacks: rapid reset
// (CVE-2023-44487), CONTINUATION floods (CVE-2024-27316 / -28182), HPACK bombs, control
// frame floods and zero-window stalls. Each is counted in Http2Stats.
#include <nghttp2/nghttp2.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "proxy/http/codec.h"
#include "proxy/net/buffer.h"

struct nghttp2_session;

namespace skiff::http {

// Envoy's http2.* counter names.
struct Http2Stats {
  std::atomic<uint64_t> streams_total{0};
  std::atomic<uint64_t> rx_reset{0};             // streams the client reset
  std::atomic<uint64_t> tx_reset{0};             // streams this side reset
  std::atomic<uint64_t> header_overflow{0};      // header list above the limit: stream reset
  std::atomic<uint64_t> rx_messaging_error{0};   // invalid frames or messages (stream errors)
  std::atomic<uint64_t> premature_reset{0};      // rapid reset: connections closed
  std::atomic<uint64_t> flood{0};                // control or CONTINUATION floods: closed
  std::atomic<uint64_t> connection_error{0};     // other connection errors (GOAWAY sent)
  std::atomic<uint64_t> goaway_sent{0};          // graceful drains
  std::atomic<uint64_t> flow_control_paused{0};  // streams whose window stopped the body
};

// Adds to *nv the fields of "name: value\r\n" lines (the codec interfaces' form), dropping
// HTTP/1 connection-specific fields, which HTTP/2 forbids (te: trailers stays), and
// content-length (each caller sets its own from the framing). Names are lower-cased into
// *names, which is cleared and reserved here so that the pointers into it stay valid;
// values point into `fields`. Both must outlive the submit call; no allocation once
// *names and *nv have grown.
void FieldsToNv(std::string_view fields, std::string* names, std::vector<nghttp2_nv>* nv);

// Submits "name: value\r\n" lines as the trailers of stream `id` (the server's response or
// a client's request); for the rare path, so its scratch is local.
void SubmitTrailers(nghttp2_session* session, int32_t id, std::string_view fields);

// A name/value pair for nghttp2 pointing into `name` and `value` (which must outlive the
// submit call), for both the server codec and the upstream HTTP/2 connections.
inline nghttp2_nv Http2Nv(std::string_view name, std::string_view value) {
  nghttp2_nv nv;
  nv.name = reinterpret_cast<uint8_t*>(const_cast<char*>(name.data()));
  nv.namelen = name.size();
  nv.value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data()));
  nv.valuelen = value.size();
  nv.flags = NGHTTP2_NV_FLAG_NONE;
  return nv;
}

class Http2ServerCodec;

// One HTTP/2 stream of the server side: the response goes out through it.
class Http2ServerStream final : public ResponseEncoder {
 public:
  Http2ServerStream(Http2ServerCodec& codec, int32_t id) : codec_(&codec), id_(id) {}
  // A closed stream made new for stream `id` of `codec`, keeping the memory of its strings
  // and buffer (every member below goes back to its initial value).
  void Reuse(Http2ServerCodec& codec, int32_t id);

  void Encode100Continue() override;
  void EncodeHead(const ResponseHeaders& head, bool end_stream) override;
  void EncodeBody(std::string_view data, bool end_stream) override;
  void EncodeTrailers(std::string_view fields) override;
  void StartTunnel() override {}  // no upgrade over HTTP/2
  void ResetStream() override;
  void ReadDisable(bool disable) override;
  [[nodiscard]] bool response_started() const override { return response_ != Response::kNone; }
  [[nodiscard]] uint64_t head_bytes_written() const override { return head_bytes_; }
  [[nodiscard]] std::string_view protocol() const override { return "HTTP/2"; }

 private:
  friend class Http2ServerCodec;
  friend struct Http2ServerCallbacks;
  enum class Response : uint8_t { kNone, kBody, kDone };

  bool Closed() const;
  void Resume();
  void CheckWatermark();

  Http2ServerCodec* codec_;
  int32_t id_;
  RequestDecoder* decoder_ = nullptr;

  // The request as it arrives.
  std::string method_, path_, authority_, scheme_, host_, cookie_;
  std::string names_;                                       // field names and values, back to back
  std::vector<std::pair<uint32_t, uint32_t>> field_spans_;  // (name length, value length)
  std::string trailers_;                                    // "name: value\r\n" lines
  size_t header_bytes_ = 0;
  bool in_trailers_ = false;
  bool head_pending_ = false;  // counted in the codec's heads in progress
  bool expect_continue_ = false;
  bool overflow_ = false;
  bool request_complete_ = false;
  // Request body the exchange did not take yet (it paused the stream); bounded by the
  // stream's flow-control window, which reopens only as it is delivered.
  std::string pending_in_;
  bool pending_end_ = false;
  bool pending_trailers_ = false;
  bool read_disabled_ = false;
  bool rx_reset_ = false;  // the client reset it

  // The response.
  Response response_ = Response::kNone;
  net::Buffer out_body_;
  bool out_eof_ = false;
  bool out_trailers_ = false;
  std::string out_trailer_fields_;
  bool deferred_ = false;  // nghttp2 waits for body bytes
  bool above_watermark_ = false;
  bool reset_by_us_ = false;
  uint64_t head_bytes_ = 0;
};

class Http2ServerCodec final : public ServerCodec {
 public:
  // Reads frames from `in` and writes frames to `out`; the connection owns both.
  Http2ServerCodec(ServerCodecCallbacks& callbacks, net::Buffer& in, net::Buffer& out,
                   const ServerCodecOptions& options, Http2Stats& stats);
  ~Http2ServerCodec() override;
  Http2ServerCodec(const Http2ServerCodec&) = delete;
  Http2ServerCodec& operator=(const Http2ServerCodec&) = delete;

  void Dispatch() override;
  void OnConnectionClosed() override;
  void OnOutputDrained() override;
  void PrepareOutput() override;
  void RejectHead(int status, std::string_view reason) override;
  void Drain() override;
  [[nodiscard]] bool WantsRead() const override;
  [[nodiscard]] bool close_after_flush() const override { return close_; }
  [[nodiscard]] bool stream_active() const override { return active_ > 0; }
  [[nodiscard]] bool head_in_progress() const override { return heads_in_progress_ > 0; }

  // For tests and /stats.
  [[nodiscard]] size_t streams() const { return streams_.size(); }

 private:
  friend class Http2ServerStream;
  friend struct Http2ServerCallbacks;

  Http2ServerStream* Find(int32_t id);
  void DeliverHead(Http2ServerStream& s, bool end_stream);
  void DeliverPending(Http2ServerStream& s);
  void DeliverResumed();
  void StreamClosed(Http2ServerStream& s, uint32_t error_code);
  void Fatal(int lib_error);
  // After the session ended: resets the streams it will never close.
  void EndOrphanedStreams();
  void ResetRunningStreams();
  void Terminate(uint32_t error_code);
  void LocalReply(Http2ServerStream& s, int status);
  void Wake();

  ServerCodecCallbacks& callbacks_;
  net::Buffer& in_;
  net::Buffer& out_;
  const ServerCodecOptions& options_;
  Http2Stats& stats_;
  nghttp2_session* session_ = nullptr;
  // Scratch for a response head's fields (names lower-cased), reused by every stream.
  std::vector<nghttp2_nv> nv_;
  std::string nv_names_;
  std::unordered_map<int32_t, std::unique_ptr<Http2ServerStream>> streams_;
  std::vector<int32_t> resumed_;  // streams whose exchange asked for their body again
  uint32_t active_ = 0;           // streams with an exchange
  uint32_t heads_in_progress_ = 0;
  uint64_t streams_started_ = 0;
  uint64_t premature_resets_ = 0;
  int32_t max_stream_id_ = 0;  // the highest client stream id seen
  // Flood limits on frames that carry nothing (Envoy's defaults): consecutive empty
  // DATA / HEADERS / CONTINUATION frames without END_STREAM, and PRIORITY frames.
  uint32_t consecutive_empty_frames_ = 0;
  uint64_t priority_frames_ = 0;
  uint64_t streams_opened_ = 0;
  std::array<int32_t, 256> opened_{};  // the latest client stream ids used
  size_t opened_next_ = 0;
  bool close_ = false;
  bool draining_ = false;
  bool terminated_ = false;
  bool dead_ = false;  // the connection is gone
};

}  // namespace skiff::http

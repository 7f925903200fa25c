#pragma once
// An HTTP/2 connection to one endpoint (h2c, or h2 over TLS with ALPN): many requests at
// once, each an Http2UpstreamStream the pool hands to a try. nghttp2 does the framing;
// flow control follows the tries (a stream's window reopens only as its try takes the
// bytes), request bodies wait in bounded per-stream buffers.
//
// A stream the upstream refused (REFUSED_STREAM, or above the last stream id of its
// GOAWAY) was never processed: it fails with nothing sent, from a "reused" connection, so
// the exchange sends it again on another connection without counting a retry.
#include <nghttp2/nghttp2.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "proxy/http/codec.h"
#include "proxy/net/buffer.h"
#include "proxy/net/dispatcher.h"
#include "proxy/net/transport.h"
#include "proxy/upstream/cluster.h"

namespace skiff::upstream {

class HttpConnectionPool;
class Http2UpstreamConnection;

class Http2UpstreamStream final : public http::ClientStream {
 public:
  explicit Http2UpstreamStream(Http2UpstreamConnection& conn) : conn_(conn) {}

  void SetDecoder(http::ResponseDecoder* decoder) override { decoder_ = decoder; }
  void EncodeHead(const http::RequestHeaders& head, bool end_stream) override;
  void EncodeBody(std::string_view data, bool end_stream) override;
  void EncodeTrailers(std::string_view fields) override;
  void StartTunnel() override {}  // no upgrades over HTTP/2
  void ReadDisable(bool disable) override;
  void Reset() override;
  [[nodiscard]] uint64_t bytes_sent() const override { return refused_ ? 0 : bytes_sent_; }
  [[nodiscard]] bool reused() const override { return refused_ || reused_; }

 private:
  friend class Http2UpstreamConnection;
  friend struct Http2ClientCallbacks;

  void Resume();
  void CheckWatermark();
  void DeliverPending();

  Http2UpstreamConnection& conn_;
  http::ResponseDecoder* decoder_ = nullptr;
  int32_t id_ = -1;  // -1 until submitted
  bool reused_ = false;
  bool refused_ = false;
  bool done_ = false;  // no more decoder calls: the response ended, failed or was reset
  uint64_t bytes_sent_ = 0;

  // The request body waiting for the upstream's window.
  net::Buffer out_body_;
  bool request_ended_ = false;  // the exchange gave all of the request
  bool request_sent_ = false;   // ... and it went out (END_STREAM)
  bool has_trailers_ = false;
  std::string trailer_fields_;
  bool deferred_ = false;
  bool above_watermark_ = false;

  // The response as it arrives.
  int status_ = 0;
  bool head_done_ = false;
  bool in_trailers_ = false;
  size_t header_bytes_ = 0;
  bool overflow_ = false;
  std::string names_;
  std::vector<std::pair<uint32_t, uint32_t>> spans_;
  std::string trailers_;
  // Response body the try did not take yet (it paused): bounded by the stream window.
  std::string pending_in_;
  bool pending_end_ = false;
  bool pending_trailers_ = false;
  bool peer_closed_ = false;  // nghttp2 closed it (whole response) while its tail waits here
  bool read_disabled_ = false;
};

class Http2UpstreamConnection final : public net::IoHandler {
 public:
  Http2UpstreamConnection(HttpConnectionPool& pool, std::unique_ptr<net::Transport> transport,
                          std::string key, std::shared_ptr<ClusterState> cluster, bool secure);
  ~Http2UpstreamConnection() override;
  Http2UpstreamConnection(const Http2UpstreamConnection&) = delete;
  Http2UpstreamConnection& operator=(const Http2UpstreamConnection&) = delete;

  void OnEvents(uint32_t events) override;

  // A new stream (the request goes out once the try encodes its head).
  Http2UpstreamStream* NewStream();
  // Whether another stream fits: not closing, below the stream limits.
  [[nodiscard]] bool Available() const;

  [[nodiscard]] const std::string& key() const { return key_; }
  [[nodiscard]] size_t active() const { return active_; }

 private:
  friend class HttpConnectionPool;
  friend class Http2UpstreamStream;
  friend struct Http2ClientCallbacks;

  Http2UpstreamStream* Find(int32_t id);
  void Submit(Http2UpstreamStream& s, const http::RequestHeaders& head, bool end_stream);
  void OnReadable();
  // Frames from nghttp2 into out_, then to the socket.
  void Pump();
  void UpdateInterest();
  void Wake();
  // The stream gives no more decoder calls; freed when nghttp2 is done with it too.
  void Finish(Http2UpstreamStream& s);
  void StreamClosed(int32_t id, uint32_t error_code);
  // Every stream fails with `reason`; the connection closes.
  void Fail(http::ResetReason reason);
  void Collect();

  HttpConnectionPool& pool_;
  std::unique_ptr<net::Transport> transport_;
  std::string key_;
  std::shared_ptr<ClusterState> cluster_;
  bool secure_;
  bool counted_ = true;
  nghttp2_session* session_ = nullptr;
  // Scratch for a request head's fields (names lower-cased), reused by every stream.
  std::vector<nghttp2_nv> nv_;
  std::string nv_names_;
  net::Buffer in_;
  net::Buffer out_;
  std::vector<std::unique_ptr<Http2UpstreamStream>> streams_;  // live, by creation
  std::unordered_map<int32_t, Http2UpstreamStream*> by_id_;
  net::Timer timer_;  // connect timeout, then idle timeout while no stream runs
  std::chrono::milliseconds connect_timeout_{10000};
  uint32_t interest_ = 0;
  size_t active_ = 0;            // streams handed out and not finished
  uint32_t started_ = 0;         // streams ever handed out
  uint32_t max_requests_ = 0;    // then no new streams; 0 = no limit
  uint32_t max_streams_ = 0;     // the cluster's limit; 0 = the upstream's only
  int32_t goaway_last_id_ = -1;  // set: GOAWAY received
  bool connected_ = false;
  bool securing_ = false;  // TCP connected, TLS handshake not done: the connect timer runs
  bool dead_ = false;
  bool collect_scheduled_ = false;
  bool pumping_ = false;
};

}  // namespace skiff::upstream

#include "proxy/upstream/http2_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "proxy/http/http2_codec.h"
#include "proxy/upstream/connection_pool.h"

namespace skiff::upstream {

namespace {

constexpr size_t kRecvChunk = 16 * 1024;
constexpr uint32_t kStreamWindow = 256 * 1024;
constexpr int32_t kConnectionWindow = 1024 * 1024;
constexpr size_t kStreamBufferBytes = 256 * 1024;  // request body waiting per stream
constexpr size_t kMaxResponseHeaderBytes = 60 * 1024;
constexpr size_t kMaxResponseHeaders = 200;

}  // namespace

// ---- nghttp2 callbacks -------------------------------------------------------------------

struct Http2ClientCallbacks {
  static Http2UpstreamConnection& Conn(void* user_data) {
    return *static_cast<Http2UpstreamConnection*>(user_data);
  }

  static int OnBeginHeaders(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                            void* user_data) {
    Http2UpstreamStream* s = Conn(user_data).Find(frame->hd.stream_id);
    if (s == nullptr || frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    if (s->head_done_) {
      s->in_trailers_ = true;
      s->trailers_.clear();
    } else {
      // The first head, or the final one after a 1xx.
      s->status_ = 0;
      s->names_.clear();
      s->spans_.clear();
      s->header_bytes_ = 0;
    }
    return 0;
  }

  static int OnHeader(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                      const uint8_t* name_p, size_t namelen, const uint8_t* value_p,
                      size_t valuelen, uint8_t /*flags*/, void* user_data) {
    Http2UpstreamStream* s = Conn(user_data).Find(frame->hd.stream_id);
    if (s == nullptr || frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    std::string_view name(reinterpret_cast<const char*>(name_p), namelen);
    std::string_view value(reinterpret_cast<const char*>(value_p), valuelen);
    s->header_bytes_ += namelen + valuelen + 32;
    if (s->header_bytes_ > kMaxResponseHeaderBytes || s->spans_.size() >= kMaxResponseHeaders) {
      s->overflow_ = true;
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // the stream is reset
    }
    if (s->in_trailers_) {
      s->trailers_.append(name);
      s->trailers_.append(": ");
      s->trailers_.append(value);
      s->trailers_.append("\r\n");
      return 0;
    }
    if (name == ":status") {
      int v = 0;
      auto r = std::from_chars(value.data(), value.data() + value.size(), v);
      s->status_ = r.ec == std::errc() && r.ptr == value.data() + value.size() ? v : 0;
      return 0;
    }
    if (!name.empty() && name.front() == ':') {
      return 0;
    }
    s->names_.append(name);
    s->names_.append(value);
    s->spans_.emplace_back(static_cast<uint32_t>(namelen), static_cast<uint32_t>(valuelen));
    return 0;
  }

  static int OnFrameRecv(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                         void* user_data) {
    auto& c = Conn(user_data);
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        Http2UpstreamStream* s = c.Find(frame->hd.stream_id);
        if (s == nullptr || s->done_) {
          return 0;
        }
        if (s->in_trailers_) {
          s->in_trailers_ = false;
          if (s->read_disabled_ || !s->pending_in_.empty()) {
            s->pending_trailers_ = true;
          } else {
            http::ResponseDecoder* d = s->decoder_;
            c.Finish(*s);
            if (d != nullptr) {
              d->DecodeResponseTrailers(s->trailers_);
            }
          }
          return 0;
        }
        if (s->status_ >= 100 && s->status_ < 200) {
          return 0;  // 100-continue and other interim heads are not relayed
        }
        if (s->status_ < 200 || s->status_ > 599) {  // RFC 9110 15: 100..599
          nghttp2_submit_rst_stream(c.session_, NGHTTP2_FLAG_NONE, s->id_, NGHTTP2_PROTOCOL_ERROR);
          s->overflow_ = true;  // reported as a protocol error when the stream closes
          return 0;
        }
        s->head_done_ = true;
        http::ResponseHead head;
        head.version = http::Version::kHttp2;
        head.status = s->status_;
        head.keep_alive = true;
        head.headers.reserve(s->spans_.size());
        size_t off = 0;
        for (auto [nl, vl] : s->spans_) {
          std::string_view name(s->names_.data() + off, nl);
          std::string_view value(s->names_.data() + off + nl, vl);
          off += nl + vl;
          if (name == "content-length") {
            uint64_t v = 0;
            auto r = std::from_chars(value.data(), value.data() + value.size(), v);
            if (r.ec == std::errc() && r.ptr == value.data() + value.size()) {
              head.content_length = v;
            }
            continue;  // framing is the codecs' business
          }
          head.headers.push_back(http::Header{name, value});
        }
        http::ResponseDecoder* d = s->decoder_;
        if (end_stream) {
          c.Finish(*s);
        }
        if (d != nullptr) {
          d->DecodeResponseHead(head, end_stream);
        }
        return 0;
      }
      case NGHTTP2_DATA: {
        Http2UpstreamStream* s = c.Find(frame->hd.stream_id);
        if (s == nullptr || s->done_ || !end_stream) {
          return 0;
        }
        if (s->read_disabled_ || !s->pending_in_.empty()) {
          s->pending_end_ = true;
          return 0;
        }
        http::ResponseDecoder* d = s->decoder_;
        c.Finish(*s);
        if (d != nullptr) {
          d->DecodeResponseBody({}, true);
        }
        return 0;
      }
      case NGHTTP2_GOAWAY:
        c.goaway_last_id_ = frame->goaway.last_stream_id;
        return 0;
      default:
        return 0;
    }
  }

  static int OnDataChunk(nghttp2_session* session, uint8_t /*flags*/, int32_t stream_id,
                         const uint8_t* data, size_t len, void* user_data) {
    Http2UpstreamStream* s = Conn(user_data).Find(stream_id);
    std::string_view chunk(reinterpret_cast<const char*>(data), len);
    if (s == nullptr || s->done_ || s->decoder_ == nullptr) {
      nghttp2_session_consume(session, stream_id, len);
      return 0;
    }
    if (s->read_disabled_ || !s->pending_in_.empty()) {
      s->pending_in_.append(chunk);  // unacknowledged: the window shrinks by as much
      return 0;
    }
    s->decoder_->DecodeResponseBody(chunk, false);
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }

  static int OnStreamClose(nghttp2_session* /*session*/, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    Conn(user_data).StreamClosed(stream_id, error_code);
    return 0;
  }

  static int OnFrameSend(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                         void* user_data) {
    auto& c = Conn(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
      return 0;
    }
    Http2UpstreamStream* s = c.Find(frame->hd.stream_id);
    if (s == nullptr) {
      return 0;
    }
    s->bytes_sent_ += frame->hd.length + 9;
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      s->request_sent_ = true;
    }
    return 0;
  }

  static ssize_t ReadBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* /*user_data*/) {
    auto* s = static_cast<Http2UpstreamStream*>(source->ptr);
    size_t n = std::min(length, s->out_body_.size());
    if (n > 0) {
      std::memcpy(buf, s->out_body_.view().data(), n);
      s->out_body_.Consume(n);
    }
    if (s->out_body_.empty() && s->request_ended_) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (s->has_trailers_) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        http::SubmitTrailers(session, stream_id, s->trailer_fields_);
      }
    } else if (n == 0) {
      s->deferred_ = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    s->CheckWatermark();
    return static_cast<ssize_t>(n);
  }

  static nghttp2_session_callbacks* Make() {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnDataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, OnFrameSend);
    return cb;
  }
  static nghttp2_session_callbacks* Get() {
    static nghttp2_session_callbacks* callbacks = Make();
    return callbacks;
  }
};

// ---- Http2UpstreamStream -----------------------------------------------------------------

void Http2UpstreamStream::EncodeHead(const http::RequestHeaders& head, bool end_stream) {
  if (done_ || id_ >= 0) {
    return;
  }
  request_ended_ = end_stream;
  conn_.Submit(*this, head, end_stream);
}

void Http2UpstreamStream::EncodeBody(std::string_view data, bool end_stream) {
  if (done_ || request_ended_) {
    return;
  }
  out_body_.Append(data);
  request_ended_ = end_stream;
  Resume();
  CheckWatermark();
}

void Http2UpstreamStream::EncodeTrailers(std::string_view fields) {
  if (done_ || request_ended_) {
    return;
  }
  trailer_fields_.assign(fields);
  has_trailers_ = !fields.empty();
  request_ended_ = true;
  Resume();
}

void Http2UpstreamStream::Resume() {
  if (deferred_ && id_ >= 0 && conn_.session_ != nullptr) {
    deferred_ = false;
    nghttp2_session_resume_data(conn_.session_, id_);
  }
  conn_.Wake();
}

void Http2UpstreamStream::CheckWatermark() {
  if (!above_watermark_ && out_body_.size() > kStreamBufferBytes) {
    above_watermark_ = true;
    if (decoder_ != nullptr && !done_) {
      decoder_->OnUpstreamWatermark(true);
    }
  } else if (above_watermark_ && out_body_.size() <= kStreamBufferBytes / 2) {
    above_watermark_ = false;
    if (decoder_ != nullptr && !done_) {
      decoder_->OnUpstreamWatermark(false);
    }
  }
}

void Http2UpstreamStream::ReadDisable(bool disable) {
  if (read_disabled_ == disable) {
    return;
  }
  read_disabled_ = disable;
  if (!disable && id_ >= 0 && (!pending_in_.empty() || pending_end_ || pending_trailers_)) {
    Http2UpstreamConnection* conn = &conn_;
    const int32_t id = id_;
    // Deferred callbacks run in order: the connection is deleted only after this one.
    conn->pool_.dispatcher().Defer([conn, id] {
      Http2UpstreamStream* s = conn->dead_ ? nullptr : conn->Find(id);
      if (s != nullptr && !s->done_) {
        s->DeliverPending();
        conn->Wake();
      }
    });
  }
}

void Http2UpstreamStream::DeliverPending() {
  if (read_disabled_ || done_ || decoder_ == nullptr) {
    return;
  }
  if (!pending_in_.empty()) {
    std::string data;
    data.swap(pending_in_);
    const bool closed = peer_closed_;  // the session forgot the stream: connection window only
    decoder_->DecodeResponseBody(data, false);
    if (conn_.session_ != nullptr && id_ >= 0 && !conn_.dead_) {
      if (closed) {
        nghttp2_session_consume_connection(conn_.session_, data.size());
      } else {
        nghttp2_session_consume(conn_.session_, id_, data.size());
      }
    }
    if (done_ || read_disabled_ || decoder_ == nullptr) {
      return;
    }
  }
  http::ResponseDecoder* d = decoder_;
  if (pending_end_) {
    pending_end_ = false;
    conn_.Finish(*this);
    d->DecodeResponseBody({}, true);
  } else if (pending_trailers_) {
    pending_trailers_ = false;
    conn_.Finish(*this);
    d->DecodeResponseTrailers(trailers_);
  }
}

void Http2UpstreamStream::Reset() {
  if (done_) {
    return;
  }
  decoder_ = nullptr;
  if (id_ >= 0 && conn_.session_ != nullptr && !conn_.dead_ && !peer_closed_) {
    nghttp2_submit_rst_stream(conn_.session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
  }
  conn_.Finish(*this);
  conn_.Wake();
}

// ---- Http2UpstreamConnection -------------------------------------------------------------

Http2UpstreamConnection::Http2UpstreamConnection(HttpConnectionPool& pool,
                                                 std::unique_ptr<net::Transport> transport,
                                                 std::string key,
                                                 std::shared_ptr<ClusterState> cluster, bool secure)
    : pool_(pool),
      transport_(std::move(transport)),
      key_(std::move(key)),
      cluster_(std::move(cluster)),
      secure_(secure) {
  cluster_->cx_active.fetch_add(1, std::memory_order_relaxed);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  nghttp2_session_client_new2(&session_, Http2ClientCallbacks::Get(), this, opt);
  nghttp2_option_del(opt);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxResponseHeaderBytes)},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
}

Http2UpstreamConnection::~Http2UpstreamConnection() {
  timer_.Cancel();
  if (counted_) {
    cluster_->cx_active.fetch_sub(1, std::memory_order_relaxed);
  }
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
  }
}

Http2UpstreamStream* Http2UpstreamConnection::Find(int32_t id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

bool Http2UpstreamConnection::Available() const {
  if (dead_ || goaway_last_id_ >= 0 || session_ == nullptr) {
    return false;
  }
  if (max_requests_ != 0 && started_ >= max_requests_) {
    return false;
  }
  uint32_t limit =
      nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  if (max_streams_ != 0) {
    limit = std::min(limit, max_streams_);
  }
  // Stream ids are 31 bits: a connection that used them all takes no more.
  return active_ < limit && nghttp2_session_get_next_stream_id(session_) < (1U << 31) - 2;
}

Http2UpstreamStream* Http2UpstreamConnection::NewStream() {
  streams_.push_back(std::make_unique<Http2UpstreamStream>(*this));
  Http2UpstreamStream* s = streams_.back().get();
  s->reused_ = started_ > 0;
  ++started_;
  ++active_;
  timer_.Cancel();  // the idle timer, if it ran (the connect timer is armed again below)
  if (!connected_) {
    pool_.ArmConnectTimer(this);
  }
  return s;
}

void Http2UpstreamConnection::Submit(Http2UpstreamStream& s, const http::RequestHeaders& head,
                                     bool end_stream) {
  char length[24];
  std::string_view length_view;
  if (head.has_body && head.content_length) {
    auto l = std::to_chars(length, length + sizeof length, *head.content_length);
    length_view = std::string_view(length, static_cast<size_t>(l.ptr - length));
  }
  // The connection's scratch: nghttp2 copies the fields before submit returns.
  std::vector<nghttp2_nv>& nv = nv_;
  nv.clear();
  nv.push_back(http::Http2Nv(":method", head.method));
  nv.push_back(http::Http2Nv(":scheme", secure_ ? "https" : "http"));
  nv.push_back(http::Http2Nv(":authority", head.authority));
  nv.push_back(http::Http2Nv(":path", head.path.empty() ? std::string_view("/") : head.path));
  http::FieldsToNv(head.fields, &nv_names_, &nv);
  if (!length_view.empty()) {
    nv.push_back(http::Http2Nv("content-length", length_view));
  }
  nghttp2_data_provider provider;
  provider.source.ptr = &s;
  provider.read_callback = Http2ClientCallbacks::ReadBody;
  int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                      end_stream ? nullptr : &provider, &s);
  if (id < 0) {
    // No stream ids left, or the session is closing: the request was never sent.
    s.refused_ = true;
    Http2UpstreamStream* sp = &s;
    pool_.dispatcher().Defer([this, sp] {
      if (dead_ || sp->done_) {
        return;
      }
      http::ResponseDecoder* d = sp->decoder_;
      Finish(*sp);
      if (d != nullptr) {
        d->OnUpstreamReset(http::ResetReason::kConnectionTermination);
      }
    });
    return;
  }
  s.id_ = id;
  by_id_[id] = &s;
  Wake();
}

void Http2UpstreamConnection::Wake() {
  if (pumping_ || dead_) {
    return;  // OnEvents pumps once the callbacks are done
  }
  Pump();
}

void Http2UpstreamConnection::Pump() {
  if (dead_ || session_ == nullptr) {
    return;
  }
  while (out_.size() < pool_.options().max_buffer_bytes) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      Fail(http::ResetReason::kProtocolError);
      return;
    }
    if (n == 0) {
      break;
    }
    out_.Append(std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)));
  }
  if (connected_ && (!out_.empty() || transport_->wants_write())) {
    if (transport_->Write(&out_) < 0) {
      Fail(http::ResetReason::kConnectionTermination);
      return;
    }
  }
  if (nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0 &&
      out_.empty()) {
    Fail(http::ResetReason::kConnectionTermination);  // GOAWAY'd and finished
    return;
  }
  UpdateInterest();
}

void Http2UpstreamConnection::UpdateInterest() {
  if (dead_) {
    return;
  }
  bool want_write = !connected_ || !out_.empty() || transport_->wants_write();
  uint32_t ev = EPOLLRDHUP | EPOLLIN | (want_write ? uint32_t{EPOLLOUT} : 0u);
  if (ev != interest_) {
    interest_ = ev;
    pool_.dispatcher().Modify(transport_->fd(), ev, this);
  }
}

void Http2UpstreamConnection::OnEvents(uint32_t events) {
  if (dead_) {
    return;
  }
  if (!connected_) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(transport_->fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0 || (events & (EPOLLERR | EPOLLHUP)) != 0) {
      pool_.stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      Fail(http::ResetReason::kConnectFailure);
      return;
    }
    if ((events & EPOLLOUT) == 0) {
      return;
    }
    connected_ = true;
    // Over TLS the connect timeout also covers the handshake (as Envoy's): the timer stays
    // until it is done.
    securing_ = !transport_->handshake_done();
    if (!securing_) {
      timer_.Cancel();
      pool_.ArmIdleTimer(this);
    }
  }
  pumping_ = true;
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    OnReadable();
  }
  pumping_ = false;
  if (!dead_) {
    Pump();
  }
  if (!dead_ && securing_ && transport_->handshake_done()) {
    securing_ = false;
    timer_.Cancel();
    pool_.ArmIdleTimer(this);
  }
}

void Http2UpstreamConnection::OnReadable() {
  bool eof = false;
  for (int i = 0; i < 8 && !dead_; ++i) {
    bool filled = false;
    ssize_t n = transport_->Read(&in_, &filled);
    if (n == -1) {
      break;
    }
    if (n == -2 && started_ <= 1 && in_.empty() && !by_id_.empty() &&
        std::all_of(by_id_.begin(), by_id_.end(),
                    [](const auto& p) { return p.second->bytes_sent_ == 0; })) {
      pool_.stats().upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      cluster_->upstream_cx_connect_fail.fetch_add(1, std::memory_order_relaxed);
      Fail(http::ResetReason::kConnectFailure);
      return;
    }
    if (n <= 0) {
      eof = true;
    }
    while (!in_.empty() && !dead_) {
      std::string_view v = in_.view();
      size_t len = std::min(v.size(), kRecvChunk);
      ssize_t used =
          nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(v.data()), len);
      if (used < 0) {
        Fail(http::ResetReason::kProtocolError);
        return;
      }
      in_.Consume(static_cast<size_t>(used));
    }
    if (eof || !filled) {
      break;
    }
  }
  if (eof && !dead_) {
    Fail(http::ResetReason::kConnectionTermination);
  }
}

void Http2UpstreamConnection::Finish(Http2UpstreamStream& s) {
  if (s.done_) {
    return;
  }
  s.done_ = true;
  s.decoder_ = nullptr;
  if (s.peer_closed_) {
    // Closed by the session already: what it still holds goes back to the connection's
    // window, and the stream can be collected.
    s.peer_closed_ = false;
    if (!s.pending_in_.empty() && session_ != nullptr && !dead_) {
      nghttp2_session_consume_connection(session_, s.pending_in_.size());
    }
    s.pending_in_.clear();
    by_id_.erase(s.id_);
  }
  if (s.id_ >= 0 && !s.request_sent_ && session_ != nullptr && !dead_ &&
      nghttp2_session_get_stream_user_data(session_, s.id_) != nullptr) {
    // The response ended before the request: the rest of it is not wanted.
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id_, NGHTTP2_CANCEL);
  }
  --active_;
  if (active_ == 0 && connected_ && !dead_) {
    pool_.ArmIdleTimer(this);
  }
  pool_.OnHttp2StreamDone(this);
  if (!collect_scheduled_) {
    collect_scheduled_ = true;
    pool_.dispatcher().Defer([this] {
      collect_scheduled_ = false;
      Collect();
    });
  }
}

void Http2UpstreamConnection::Collect() {
  if (dead_) {
    return;  // the connection goes with all of its streams
  }
  std::erase_if(streams_, [this](const std::unique_ptr<Http2UpstreamStream>& s) {
    return s->done_ && (s->id_ < 0 || by_id_.count(s->id_) == 0);
  });
}

void Http2UpstreamConnection::StreamClosed(int32_t id, uint32_t error_code) {
  Http2UpstreamStream* s = Find(id);
  if (s == nullptr) {
    return;
  }
  if (!s->done_ && error_code == NGHTTP2_NO_ERROR && (s->pending_end_ || s->pending_trailers_)) {
    // The response is whole, but its tail waits for the client to read (the stream is
    // read-disabled): nghttp2 is done with the stream, we are not. It stays findable by id
    // until DeliverPending hands the rest over; Finish then lets it go.
    s->peer_closed_ = true;
    return;
  }
  by_id_.erase(id);
  if (!s->pending_in_.empty()) {
    nghttp2_session_consume_connection(session_, s->pending_in_.size());
    s->pending_in_.clear();
  }
  if (s->done_) {
    if (!collect_scheduled_) {
      collect_scheduled_ = true;
      pool_.dispatcher().Defer([this] {
        collect_scheduled_ = false;
        Collect();
      });
    }
    return;
  }
  http::ResetReason reason = http::ResetReason::kConnectionTermination;
  if (s->overflow_) {
    reason = http::ResetReason::kProtocolError;
  } else if (error_code == NGHTTP2_REFUSED_STREAM && !s->head_done_) {
    s->refused_ = true;  // never processed: safe to send again
  } else if (error_code != NGHTTP2_NO_ERROR && error_code != NGHTTP2_REFUSED_STREAM) {
    reason = http::ResetReason::kRemoteReset;  // Envoy's "remote reset" (UR)
  }
  http::ResponseDecoder* d = s->decoder_;
  Finish(*s);
  if (d != nullptr) {
    d->OnUpstreamReset(reason);
  }
}

void Http2UpstreamConnection::Fail(http::ResetReason reason) {
  if (dead_) {
    return;
  }
  // Unavailable before anyone hears of it: a try that starts again gets another connection.
  dead_ = true;
  std::vector<Http2UpstreamStream*> failing;
  for (auto& s : streams_) {
    if (!s->done_) {
      failing.push_back(s.get());
    }
  }
  for (auto* s : failing) {
    if (reason == http::ResetReason::kConnectionTermination && s->id_ > goaway_last_id_ &&
        goaway_last_id_ >= 0) {
      s->refused_ = true;  // above the GOAWAY's last stream: not processed
    }
    http::ResponseDecoder* d = s->decoder_;
    s->done_ = true;
    s->decoder_ = nullptr;
    --active_;
    if (d != nullptr) {
      d->OnUpstreamReset(reason);
    }
  }
  pool_.DestroyHttp2(this);
}

}  // namespace skiff::upstream

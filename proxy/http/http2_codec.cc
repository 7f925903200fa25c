#include "proxy/http/http2_codec.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "proxy/http/authority.h"
#include "proxy/http/headers.h"

namespace skiff::http {

namespace {

// Closed streams kept per thread (each worker is one) for the next stream of any of its
// connections: an HTTP/2 burst of a hundred streams then allocates nothing for them.
// At most kSpareStreams wait; each keeps a response buffer and its strings' memory.
constexpr size_t kSpareStreams = 128;
constexpr size_t kKeepStringBytes = 4096;  // larger strings are freed, not kept

std::vector<std::unique_ptr<Http2ServerStream>>& SpareStreams() {
  thread_local std::vector<std::unique_ptr<Http2ServerStream>> spare;
  return spare;
}

std::unique_ptr<Http2ServerStream> TakeSpareStream(Http2ServerCodec& codec, int32_t id) {
  auto& spare = SpareStreams();
  if (spare.empty()) {
    return std::make_unique<Http2ServerStream>(codec, id);
  }
  std::unique_ptr<Http2ServerStream> s = std::move(spare.back());
  spare.pop_back();
  s->Reuse(codec, id);
  return s;
}

void GiveSpareStream(std::unique_ptr<Http2ServerStream> s) {
  auto& spare = SpareStreams();
  if (spare.size() < kSpareStreams) {
    spare.push_back(std::move(s));
  }
}

void ClearKeepingSmall(std::string& s) {
  if (s.capacity() > kKeepStringBytes) {
    std::string().swap(s);
  } else {
    s.clear();
  }
}

}  // namespace

void Http2ServerStream::Reuse(Http2ServerCodec& codec, int32_t id) {
  codec_ = &codec;
  id_ = id;
  decoder_ = nullptr;
  for (std::string* str : {&method_, &path_, &authority_, &scheme_, &host_, &cookie_, &names_,
                           &trailers_, &pending_in_, &out_trailer_fields_}) {
    ClearKeepingSmall(*str);
  }
  field_spans_.clear();
  header_bytes_ = 0;
  in_trailers_ = false;
  head_pending_ = false;
  expect_continue_ = false;
  overflow_ = false;
  request_complete_ = false;
  pending_end_ = false;
  pending_trailers_ = false;
  read_disabled_ = false;
  rx_reset_ = false;
  response_ = Response::kNone;
  if (out_body_.capacity() > 16 * 1024) {
    out_body_.Release();  // grown for a large response: not kept
  } else {
    out_body_.Clear();
  }
  out_eof_ = false;
  out_trailers_ = false;
  deferred_ = false;
  above_watermark_ = false;
  reset_by_us_ = false;
  head_bytes_ = 0;
}

namespace {

constexpr size_t kRecvChunk = 16 * 1024;  // frames handed to nghttp2 at a time

bool IsConnectionSpecific(std::string_view lower) {
  return lower == "connection" || lower == "keep-alive" || lower == "proxy-connection" ||
         lower == "transfer-encoding" || lower == "upgrade" || lower == "te" || lower == "host" ||
         lower == "http2-settings";
}

}  // namespace

void FieldsToNv(std::string_view fields, std::string* names, std::vector<nghttp2_nv>* nv) {
  names->clear();
  names->reserve(fields.size());  // the names are shorter than the lines
  while (!fields.empty()) {
    size_t eol = fields.find("\r\n");
    std::string_view line = fields.substr(0, eol);
    fields = eol == std::string_view::npos ? std::string_view() : fields.substr(eol + 2);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      continue;
    }
    const size_t at = names->size();
    names->append(line.data(), colon);  // within the reserve: no reallocation
    char* lower = names->data() + at;
    for (size_t i = 0; i < colon; ++i) {
      lower[i] = static_cast<char>(lower[i] | ((lower[i] >= 'A' && lower[i] <= 'Z') ? 0x20 : 0));
    }
    std::string_view name(lower, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
      value.remove_prefix(1);
    }
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
      value.remove_suffix(1);
    }
    if ((IsConnectionSpecific(name) && !(name == "te" && value == "trailers")) ||
        name == "content-length") {
      names->resize(at);
      continue;
    }
    nv->push_back(Http2Nv(name, value));
  }
}

void SubmitTrailers(nghttp2_session* session, int32_t id, std::string_view fields) {
  std::string names;
  std::vector<nghttp2_nv> nv;
  FieldsToNv(fields, &names, &nv);
  nghttp2_submit_trailer(session, id, nv.data(), nv.size());
}

// ---- nghttp2 callbacks -------------------------------------------------------------------

struct Http2ServerCallbacks {
  static Http2ServerCodec& Codec(void* user_data) {
    return *static_cast<Http2ServerCodec*>(user_data);
  }

  // A second consecutive frame that carries nothing, or more than this many PRIORITY frames
  // per opened stream (+1), is a flood (Envoy's max_consecutive_inbound_frames_with_empty_
  // payload and max_inbound_priority_frames_per_stream defaults).
  static constexpr uint32_t kMaxConsecutiveEmptyFrames = 1;
  static constexpr uint64_t kMaxPriorityFramesPerStream = 100;

  static void Flood(nghttp2_session* session, Http2ServerCodec& c) {
    if (!c.terminated_) {
      c.stats_.flood.fetch_add(1, std::memory_order_relaxed);
      nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
      c.terminated_ = true;
    }
  }

  static int OnBeginFrame(nghttp2_session* session, const nghttp2_frame_hd* hd, void* user_data) {
    auto& c = Codec(user_data);
    if (hd->type == NGHTTP2_DATA || hd->type == NGHTTP2_HEADERS ||
        hd->type == NGHTTP2_CONTINUATION) {
      if (hd->length == 0 && (hd->flags & NGHTTP2_FLAG_END_STREAM) == 0) {
        if (++c.consecutive_empty_frames_ > kMaxConsecutiveEmptyFrames) {
          Flood(session, c);
          return 0;
        }
      } else {
        c.consecutive_empty_frames_ = 0;
      }
    } else if (hd->type == NGHTTP2_PRIORITY) {
      if (++c.priority_frames_ > kMaxPriorityFramesPerStream * (1 + c.streams_opened_)) {
        Flood(session, c);
        return 0;
      }
    }
    if (hd->type != NGHTTP2_HEADERS || (hd->stream_id & 1) == 0) {
      return 0;
    }
    if (hd->stream_id > c.max_stream_id_) {
      ++c.streams_opened_;
      c.max_stream_id_ = hd->stream_id;
      c.opened_[c.opened_next_++ % c.opened_.size()] = hd->stream_id;
      return 0;
    }
    // A lower stream id than one already used: fine for a stream that exists or was
    // opened (trailers, or a race with our RST_STREAM), but one never used was closed
    // implicitly by the higher one (RFC 9113 5.1.1): a connection error.
    if (c.Find(hd->stream_id) != nullptr ||
        std::find(c.opened_.begin(), c.opened_.end(), hd->stream_id) != c.opened_.end()) {
      return 0;
    }
    c.stats_.rx_messaging_error.fetch_add(1, std::memory_order_relaxed);
    nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
    c.terminated_ = true;
    return 0;
  }

  static int OnBeginHeaders(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                            void* user_data) {
    auto& c = Codec(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      auto stream = TakeSpareStream(c, frame->hd.stream_id);
      nghttp2_session_set_stream_user_data(c.session_, frame->hd.stream_id, stream.get());
      c.streams_[frame->hd.stream_id] = std::move(stream);
      if (c.active_ == 0 && c.heads_in_progress_ == 0) {
        c.callbacks_.OnHeadStarted();  // the header timeout, while no stream runs
      }
      ++c.heads_in_progress_;
      c.streams_[frame->hd.stream_id]->head_pending_ = true;
    } else if (auto* s = c.Find(frame->hd.stream_id); s != nullptr) {
      s->in_trailers_ = true;  // trailers (HCAT_HEADERS)
      s->trailers_.clear();
    }
    return 0;
  }

  static int OnHeader(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                      const uint8_t* name_p, size_t namelen, const uint8_t* value_p,
                      size_t valuelen, uint8_t /*flags*/, void* user_data) {
    auto& c = Codec(user_data);
    Http2ServerStream* s = c.Find(frame->hd.stream_id);
    if (s == nullptr || frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    std::string_view name(reinterpret_cast<const char*>(name_p), namelen);
    std::string_view value(reinterpret_cast<const char*>(value_p), valuelen);
    // RFC 9113 6.5.2: the size of a field is its name and value plus 32.
    s->header_bytes_ += namelen + valuelen + 32;
    if (s->header_bytes_ > c.options_.head_limits.max_head_bytes ||
        s->field_spans_.size() >= c.options_.head_limits.max_headers) {
      if (!s->overflow_) {
        s->overflow_ = true;
        c.stats_.header_overflow.fetch_add(1, std::memory_order_relaxed);
      }
      // nghttp2 resets the stream (and keeps decoding the block for HPACK's state).
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (s->in_trailers_) {
      s->trailers_.append(name);
      s->trailers_.append(": ");
      s->trailers_.append(value);
      s->trailers_.append("\r\n");
      return 0;
    }
    if (!name.empty() && name.front() == ':') {
      if (name == ":method") {
        s->method_.assign(value);
      } else if (name == ":path") {
        s->path_.assign(value);
      } else if (name == ":authority") {
        s->authority_.assign(value);
      } else if (name == ":scheme") {
        s->scheme_.assign(value);
      }
      return 0;
    }
    if (name == "cookie") {
      // RFC 9113 8.2.3: crumbs are joined for HTTP/1.1.
      if (!s->cookie_.empty()) {
        s->cookie_.append("; ");
      }
      s->cookie_.append(value);
      return 0;
    }
    if (name == "host") {
      s->host_.assign(value);
    } else if (name == "expect" && EqualsIgnoreCase(value, "100-continue")) {
      s->expect_continue_ = true;
    }
    s->names_.append(name);
    s->names_.append(value);
    s->field_spans_.emplace_back(static_cast<uint32_t>(namelen), static_cast<uint32_t>(valuelen));
    return 0;
  }

  static int OnFrameRecv(nghttp2_session* /*session*/, const nghttp2_frame* frame,
                         void* user_data) {
    auto& c = Codec(user_data);
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        Http2ServerStream* s = c.Find(frame->hd.stream_id);
        if (s == nullptr) {
          return 0;
        }
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          if (s->head_pending_) {
            s->head_pending_ = false;
            --c.heads_in_progress_;
          }
          if (end_stream) {
            s->request_complete_ = true;
          }
          c.DeliverHead(*s, end_stream);
        } else if (s->in_trailers_ && end_stream) {
          s->in_trailers_ = false;
          s->request_complete_ = true;
          if (s->decoder_ != nullptr) {
            if (s->read_disabled_ || !s->pending_in_.empty()) {
              s->pending_trailers_ = true;
            } else {
              s->decoder_->DecodeTrailers(s->trailers_);
            }
          }
        }
        return 0;
      }
      case NGHTTP2_DATA: {
        Http2ServerStream* s = c.Find(frame->hd.stream_id);
        if (s == nullptr || !end_stream) {
          return 0;
        }
        s->request_complete_ = true;
        if (s->decoder_ != nullptr) {
          if (s->read_disabled_ || !s->pending_in_.empty()) {
            s->pending_end_ = true;
          } else {
            s->decoder_->DecodeBody({}, true);
          }
        }
        return 0;
      }
      case NGHTTP2_RST_STREAM:
        if (Http2ServerStream* s = c.Find(frame->hd.stream_id); s != nullptr) {
          s->rx_reset_ = true;
        }
        c.stats_.rx_reset.fetch_add(1, std::memory_order_relaxed);
        return 0;
      default:
        return 0;
    }
  }

  static int OnDataChunk(nghttp2_session* session, uint8_t /*flags*/, int32_t stream_id,
                         const uint8_t* data, size_t len, void* user_data) {
    auto& c = Codec(user_data);
    Http2ServerStream* s = c.Find(stream_id);
    std::string_view chunk(reinterpret_cast<const char*>(data), len);
    if (s == nullptr || s->decoder_ == nullptr) {
      nghttp2_session_consume(session, stream_id, len);  // nobody wants it
      return 0;
    }
    if (s->read_disabled_ || !s->pending_in_.empty()) {
      // Held, unacknowledged: the client's window for the stream shrinks by as much.
      if (s->pending_in_.empty()) {
        c.stats_.flow_control_paused.fetch_add(1, std::memory_order_relaxed);
      }
      s->pending_in_.append(chunk);
      return 0;
    }
    s->decoder_->DecodeBody(chunk, false);
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }

  static int OnStreamClose(nghttp2_session* /*session*/, int32_t stream_id, uint32_t error_code,
                           void* user_data) {
    auto& c = Codec(user_data);
    if (Http2ServerStream* s = c.Find(stream_id); s != nullptr) {
      c.StreamClosed(*s, error_code);
    }
    return 0;
  }

  static int OnFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    auto& c = Codec(user_data);
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      Http2ServerStream* s = c.Find(frame->hd.stream_id);
      if (s != nullptr && !s->request_complete_) {
        // The response is complete before the request: the rest of it is not wanted
        // (RFC 9113 8.1, as Envoy does).
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
      }
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      c.terminated_ = true;
    }
    return 0;
  }

  static int OnInvalidFrame(nghttp2_session* /*session*/, const nghttp2_frame* /*frame*/,
                            int /*lib_error_code*/, void* user_data) {
    Codec(user_data).stats_.rx_messaging_error.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }

  static ssize_t ReadBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* /*user_data*/) {
    auto* s = static_cast<Http2ServerStream*>(source->ptr);
    size_t n = std::min(length, s->out_body_.size());
    if (n > 0) {
      std::memcpy(buf, s->out_body_.view().data(), n);
      s->out_body_.Consume(n);
    }
    if (s->out_body_.empty() && s->out_eof_) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      s->response_ = Http2ServerStream::Response::kDone;
      if (s->out_trailers_) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        SubmitTrailers(session, stream_id, s->out_trailer_fields_);
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
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, OnBeginFrame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, OnFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnDataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, OnFrameSend);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, OnInvalidFrame);
    return cb;
  }
  static nghttp2_session_callbacks* Get() {
    static nghttp2_session_callbacks* callbacks = Make();
    return callbacks;
  }
};

// ---- Http2ServerStream -------------------------------------------------------------------

bool Http2ServerStream::Closed() const {
  return codec_->dead_ || reset_by_us_ || codec_->session_ == nullptr;
}

void Http2ServerStream::Encode100Continue() {
  if (Closed() || response_ != Response::kNone) {
    return;
  }
  nghttp2_nv nv = Http2Nv(":status", "100");
  nghttp2_submit_headers(codec_->session_, NGHTTP2_FLAG_NONE, id_, nullptr, &nv, 1, nullptr);
  codec_->Wake();
}

void Http2ServerStream::EncodeHead(const ResponseHeaders& head, bool end_stream) {
  if (Closed() || response_ != Response::kNone) {
    return;
  }
  char status[4];
  int code = std::clamp(head.status, 100, 999);
  auto r = std::to_chars(status, status + sizeof status, code);
  char length[24];
  std::string_view length_view;
  if (head.content_length && code != 204 && code != 304 && code >= 200) {
    auto l = std::to_chars(length, length + sizeof length, *head.content_length);
    length_view = std::string_view(length, static_cast<size_t>(l.ptr - length));
  }
  // The codec's scratch: nghttp2 copies the fields before submit returns.
  std::vector<nghttp2_nv>& nv = codec_->nv_;
  nv.clear();
  nv.push_back(Http2Nv(":status", std::string_view(status, static_cast<size_t>(r.ptr - status))));
  FieldsToNv(head.fields, &codec_->nv_names_, &nv);
  head_bytes_ = 0;
  for (const auto& f : nv) {
    head_bytes_ += f.namelen + f.valuelen + 4;
  }
  head_bytes_ -= 4;  // ":status" and its code count without a separator
  if (!length_view.empty()) {
    nv.push_back(Http2Nv("content-length", length_view));
    head_bytes_ += 16 + length_view.size();
  }
  if (end_stream) {
    response_ = Response::kDone;
    nghttp2_submit_response(codec_->session_, id_, nv.data(), nv.size(), nullptr);
  } else {
    response_ = Response::kBody;
    nghttp2_data_provider provider;
    provider.source.ptr = this;
    provider.read_callback = Http2ServerCallbacks::ReadBody;
    nghttp2_submit_response(codec_->session_, id_, nv.data(), nv.size(), &provider);
  }
  codec_->Wake();
}

void Http2ServerStream::EncodeBody(std::string_view data, bool end_stream) {
  if (Closed() || response_ != Response::kBody || out_eof_) {
    return;
  }
  out_body_.Append(data);
  if (end_stream) {
    out_eof_ = true;
  }
  Resume();
  CheckWatermark();
}

void Http2ServerStream::EncodeTrailers(std::string_view fields) {
  if (Closed() || response_ != Response::kBody || out_eof_) {
    return;
  }
  out_trailer_fields_.assign(fields);
  out_trailers_ = !fields.empty();
  out_eof_ = true;
  Resume();
}

void Http2ServerStream::Resume() {
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(codec_->session_, id_);
  }
  codec_->Wake();
}

void Http2ServerStream::CheckWatermark() {
  const size_t limit = codec_->options_.http2.stream_buffer_bytes;
  if (!above_watermark_ && out_body_.size() > limit) {
    above_watermark_ = true;
    if (decoder_ != nullptr) {
      decoder_->OnDownstreamWatermark(true);
    }
  } else if (above_watermark_ && out_body_.size() <= limit / 2) {
    above_watermark_ = false;
    if (decoder_ != nullptr) {
      decoder_->OnDownstreamWatermark(false);
    }
  }
}

void Http2ServerStream::ResetStream() {
  if (Closed()) {
    return;
  }
  reset_by_us_ = true;
  codec_->stats_.tx_reset.fetch_add(1, std::memory_order_relaxed);
  nghttp2_submit_rst_stream(codec_->session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_INTERNAL_ERROR);
  codec_->Wake();
}

void Http2ServerStream::ReadDisable(bool disable) {
  if (read_disabled_ == disable) {
    return;
  }
  read_disabled_ = disable;
  if (!disable && (!pending_in_.empty() || pending_end_ || pending_trailers_)) {
    codec_->resumed_.push_back(id_);
    codec_->callbacks_.ScheduleDispatch();
  }
}

// ---- Http2ServerCodec --------------------------------------------------------------------

Http2ServerCodec::Http2ServerCodec(ServerCodecCallbacks& callbacks, net::Buffer& in,
                                   net::Buffer& out, const ServerCodecOptions& options,
                                   Http2Stats& stats)
    : callbacks_(callbacks), in_(in), out_(out), options_(options), stats_(stats) {
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Windows reopen only as the exchanges take the bytes: flow control is back-pressure.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  nghttp2_session_server_new2(&session_, Http2ServerCallbacks::Get(), this, opt);
  nghttp2_option_del(opt);
  const Http2Options& h2 = options_.http2;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h2.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h2.initial_stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<uint32_t>(options_.head_limits.max_head_bytes)},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  if (h2.initial_connection_window > 65535) {
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                          static_cast<int32_t>(h2.initial_connection_window));
  }
}

Http2ServerCodec::~Http2ServerCodec() {
  dead_ = true;
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
    session_ = nullptr;
  }
}

Http2ServerStream* Http2ServerCodec::Find(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Http2ServerCodec::Wake() { callbacks_.OnOutput(); }

bool Http2ServerCodec::WantsRead() const {
  return !close_ && !dead_ && out_.size() <= options_.max_buffer_bytes &&
         in_.size() < options_.max_buffer_bytes;
}

void Http2ServerCodec::Dispatch() {
  if (dead_ || close_) {
    return;
  }
  DeliverResumed();
  // Frames in pieces, answering between them: control frames (PING, SETTINGS) are
  // acknowledged as they come rather than piling up; input waits while the client does
  // not read its output.
  while (!in_.empty() && !close_ && out_.size() <= options_.max_buffer_bytes) {
    std::string_view v = in_.view();
    size_t n = std::min(v.size(), kRecvChunk);
    ssize_t used =
        nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(v.data()), n);
    if (used < 0) {
      Fatal(static_cast<int>(used));
      in_.Clear();
      return;
    }
    in_.Consume(static_cast<size_t>(used));
    PrepareOutput();
  }
  if (nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0) {
    close_ = true;
  }
  EndOrphanedStreams();
}

void Http2ServerCodec::PrepareOutput() {
  if (dead_ || session_ == nullptr) {
    return;
  }
  while (out_.size() < options_.max_buffer_bytes) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      Fatal(static_cast<int>(n));
      return;
    }
    if (n == 0) {
      break;
    }
    out_.Append(std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)));
  }
  if (nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0) {
    close_ = true;
  }
  EndOrphanedStreams();
}

void Http2ServerCodec::OnOutputDrained() {
  if (!close_ && !in_.empty()) {
    callbacks_.ScheduleDispatch();  // input waited for the client to read
  }
}

void Http2ServerCodec::Fatal(int lib_error) {
  if (lib_error == NGHTTP2_ERR_FLOODED) {
    stats_.flood.fetch_add(1, std::memory_order_relaxed);
  } else {
    stats_.connection_error.fetch_add(1, std::memory_order_relaxed);
  }
  // nghttp2 queued a GOAWAY for protocol errors it found; send what it has, then close.
  const uint8_t* data = nullptr;
  for (int i = 0; i < 16; ++i) {
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) {
      break;
    }
    out_.Append(std::string_view(reinterpret_cast<const char*>(data), static_cast<size_t>(n)));
  }
  close_ = true;
  EndOrphanedStreams();
}

void Http2ServerCodec::Terminate(uint32_t error_code) {
  if (terminated_) {
    return;
  }
  terminated_ = true;
  nghttp2_session_terminate_session(session_, error_code);
  Wake();
}

void Http2ServerCodec::DeliverHead(Http2ServerStream& s, bool end_stream) {
  if (s.overflow_) {
    return;
  }
  RequestHead head;
  head.method = s.method_;
  head.target = s.path_;
  head.version = Version::kHttp2;
  head.keep_alive = true;
  head.expect_continue = s.expect_continue_;
  // RFC 9113 8.3.1: :authority rather than Host.
  if (!s.authority_.empty()) {
    head.host = s.authority_;
    head.has_host = true;
  } else if (!s.host_.empty()) {
    head.host = s.host_;
    head.has_host = true;
  }
  head.headers.reserve(s.field_spans_.size() + 1);
  size_t off = 0;
  for (auto [nl, vl] : s.field_spans_) {
    std::string_view name(s.names_.data() + off, nl);
    std::string_view value(s.names_.data() + off + nl, vl);
    off += nl + vl;
    if (name == "content-length") {
      uint64_t v = 0;
      auto r = std::from_chars(value.data(), value.data() + value.size(), v);
      if (r.ec == std::errc() && r.ptr == value.data() + value.size()) {
        head.content_length = v;
      }
    }
    head.headers.push_back(Header{name, value});
  }
  if (!s.cookie_.empty()) {
    head.headers.push_back(Header{"cookie", s.cookie_});
  }
  if (!head.has_host || !ParseAuthority(head.host)) {
    // No :authority and no Host, or one that is not host [":" port] (userinfo, a port
    // above 65535, bad bytes): refused as HTTP/1.1's Host is (RFC 9113 8.3.1).
    LocalReply(s, 400);
    return;
  }
  if (draining_ && terminated_) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id_, NGHTTP2_REFUSED_STREAM);
    return;
  }
  ++active_;
  ++streams_started_;
  stats_.streams_total.fetch_add(1, std::memory_order_relaxed);
  callbacks_.OnHeadComplete();
  s.decoder_ = &callbacks_.NewStream(s);
  s.decoder_->DecodeHead(head, s.header_bytes_, end_stream);
  // The request's strings stay for the stream's life (the exchange copied what it keeps).
}

void Http2ServerCodec::LocalReply(Http2ServerStream& s, int status) {
  char code[4];
  auto r = std::to_chars(code, code + sizeof code, status);
  nghttp2_nv nv[] = {Http2Nv(":status", std::string_view(code, static_cast<size_t>(r.ptr - code))),
                     Http2Nv("content-length", "0")};
  s.response_ = Http2ServerStream::Response::kDone;
  nghttp2_submit_response(session_, s.id_, nv, 2, nullptr);
  Wake();
}

void Http2ServerCodec::DeliverResumed() {
  // Streams resumed may be paused again, reset or closed while delivering.
  std::vector<int32_t> ids;
  ids.swap(resumed_);
  for (int32_t id : ids) {
    if (Http2ServerStream* s = Find(id); s != nullptr && s->decoder_ != nullptr) {
      DeliverPending(*s);
    }
  }
}

void Http2ServerCodec::DeliverPending(Http2ServerStream& s) {
  if (s.read_disabled_) {
    return;
  }
  const int32_t id = s.id_;
  if (!s.pending_in_.empty()) {
    std::string data;
    data.swap(s.pending_in_);
    s.decoder_->DecodeBody(data, false);
    nghttp2_session_consume(session_, id, data.size());
    Wake();
    Http2ServerStream* again = Find(id);
    if (again == nullptr || again->decoder_ == nullptr || again->read_disabled_) {
      return;
    }
  }
  if (s.pending_end_) {
    s.pending_end_ = false;
    s.decoder_->DecodeBody({}, true);
  } else if (s.pending_trailers_) {
    s.pending_trailers_ = false;
    s.decoder_->DecodeTrailers(s.trailers_);
  }
}

void Http2ServerCodec::StreamClosed(Http2ServerStream& s, uint32_t error_code) {
  const int32_t id = s.id_;
  if (!s.pending_in_.empty()) {
    // Held bytes of a stream that is gone: the connection's window gets them back.
    nghttp2_session_consume_connection(session_, s.pending_in_.size());
    s.pending_in_.clear();
  }
  if (RequestDecoder* d = s.decoder_; d != nullptr) {
    s.decoder_ = nullptr;
    const bool finished = s.response_ == Http2ServerStream::Response::kDone && s.out_body_.empty();
    if (!finished && !s.reset_by_us_) {
      // Cancelled by the client (RST_STREAM), or reset by the session for the client's
      // stream error (MadeYouReset: e.g. a WINDOW_UPDATE that overflows the window).
      if (s.rx_reset_ || error_code != NGHTTP2_NO_ERROR) {
        ++premature_resets_;
      }
      d->OnDownstreamReset(ResetReason::kConnectionTermination);
    }
    --active_;
    callbacks_.OnStreamComplete(*d);
  }
  if (s.head_pending_) {
    s.head_pending_ = false;
    --heads_in_progress_;  // reset while its head was arriving
  }
  if (auto it = streams_.find(id); it != streams_.end()) {
    // Kept for the worker's next stream rather than freed (nothing holds it now: its
    // exchange has been retired).
    GiveSpareStream(std::move(it->second));
    streams_.erase(it);
  }
  if (premature_resets_ >= options_.http2.premature_reset_min &&
      premature_resets_ * 2 >= streams_started_ && !terminated_) {
    // Rapid reset: most streams are cancelled by the client before their response.
    stats_.premature_reset.fetch_add(1, std::memory_order_relaxed);
    Terminate(NGHTTP2_ENHANCE_YOUR_CALM);
    close_ = true;
  }
  if (draining_ && active_ == 0) {
    Terminate(NGHTTP2_NO_ERROR);
  }
}

void Http2ServerCodec::OnConnectionClosed() {
  if (dead_) {
    return;
  }
  dead_ = true;
  close_ = true;
  ResetRunningStreams();
}

void Http2ServerCodec::EndOrphanedStreams() {
  // A terminated session (a connection error, a flood, rapid reset, a head timeout) reads
  // nothing more and closes none of its streams: the running ones are reset here, or the
  // connection would wait on them for ever.
  if (close_ && active_ > 0) {
    ResetRunningStreams();
  }
}

void Http2ServerCodec::ResetRunningStreams() {
  // Every running stream is reset; none of them will call the session again.
  std::vector<int32_t> ids;
  ids.reserve(streams_.size());
  for (auto& [id, s] : streams_) {
    ids.push_back(id);
  }
  for (int32_t id : ids) {
    Http2ServerStream* s = Find(id);
    if (s == nullptr || s->decoder_ == nullptr) {
      continue;
    }
    RequestDecoder* d = s->decoder_;
    s->decoder_ = nullptr;
    const bool finished =
        s->response_ == Http2ServerStream::Response::kDone && s->out_body_.empty();
    if (!finished && !s->reset_by_us_) {
      d->OnDownstreamReset(ResetReason::kConnectionTermination);
    }
    --active_;
    callbacks_.OnStreamComplete(*d);
  }
}

void Http2ServerCodec::RejectHead(int /*status*/, std::string_view /*reason*/) {
  // A head that did not arrive in time: the connection ends.
  Terminate(NGHTTP2_NO_ERROR);
  close_ = true;
  EndOrphanedStreams();
}

void Http2ServerCodec::Drain() {
  if (draining_ || dead_) {
    return;
  }
  draining_ = true;
  stats_.goaway_sent.fetch_add(1, std::memory_order_relaxed);
  if (active_ == 0) {
    Terminate(NGHTTP2_NO_ERROR);
  } else {
    nghttp2_submit_shutdown_notice(session_);  // the final GOAWAY once they are done
    Wake();
  }
}

}  // namespace skiff::http

#include "proxy/http/http1_codec.h"

#include <charconv>

#include "proxy/http/headers.h"

namespace skiff::http {

namespace {

void AppendNumber(std::string* out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out->append(buf, static_cast<size_t>(end - buf));
}

}  // namespace

void AppendChunk(net::Buffer* out, std::string_view data) {
  if (data.empty()) {
    return;
  }
  char size[24];
  auto [end, ec] = std::to_chars(size, size + sizeof size - 2, data.size(), 16);
  (void)ec;
  *end++ = '\r';
  *end++ = '\n';
  out->Append(std::string_view(size, static_cast<size_t>(end - size)));
  out->Append(data);
  out->Append("\r\n");
}

void AppendLastChunk(net::Buffer* out, std::string_view trailer_fields) {
  out->Append("0\r\n");
  out->Append(trailer_fields);
  out->Append("\r\n");
}

// ---- server --------------------------------------------------------------------------

Http1ServerCodec::Http1ServerCodec(ServerCodecCallbacks& callbacks, net::Buffer& in,
                                   net::Buffer& out, const ServerCodecOptions& options)
    : callbacks_(callbacks), in_(in), out_(out), options_(options), parser_(options.head_limits) {}

void Http1ServerCodec::Dispatch() {
  if (dispatching_) {
    return;  // called from inside a callback: the loop below goes on
  }
  dispatching_ = true;
  while (true) {
    Request before = request_;
    if (request_ == Request::kHead) {
      if (!DispatchHead()) {
        break;
      }
      continue;
    }
    if (request_ == Request::kContentLength || request_ == Request::kChunked ||
        request_ == Request::kTunnel) {
      DispatchBody();
      if (request_ == before) {
        break;  // no progress possible until more input, or until reads are enabled again
      }
      continue;
    }
    break;  // kComplete (pipelined bytes wait for the response) or kClosed
  }
  dispatching_ = false;
}

namespace {

// Whether the first line of `in` holds "HTTP/" somewhere.
bool HasHttpVersion(std::string_view in) {
  size_t eol = in.find('\n');
  return in.substr(0, eol).find("HTTP/") != std::string_view::npos;
}

}  // namespace

bool Http1ServerCodec::DispatchHead() {
  if (decoder_ != nullptr || close_ || in_.empty()) {
    return false;
  }
  // Bounded memory: a client that does not read its responses gets no more of them.
  if (out_.size() > options_.max_buffer_bytes) {
    return false;
  }
  ParseResult r = parser_.Parse(in_.view());
  if (r.status == ParseStatus::kIncomplete) {
    if (!head_started_) {
      head_started_ = true;
      callbacks_.OnHeadStarted();
    }
    return false;
  }
  head_started_ = false;
  if (r.status == ParseStatus::kError) {
    if (!served_ && r.error_reason == kMalformedVersion && !HasHttpVersion(in_.view())) {
      // The connection's first line names no HTTP version at all: not HTTP/1 (nor the
      // HTTP/2 preface), closed without an answer the client could not read anyway.
      close_ = true;
      request_ = Request::kClosed;
      in_.Clear();
      callbacks_.OnProtocolError(r.error_status);
      return false;
    }
    WriteErrorResponse(r.error_status, r.error_reason);
    close_ = true;
    request_ = Request::kClosed;
    callbacks_.OnProtocolError(r.error_status);
    return false;
  }
  callbacks_.OnHeadComplete();
  served_ = true;
  const RequestHead& head = parser_.head();
  http10_ = head.version == Version::kHttp10;
  keep_alive_ = head.keep_alive;
  peer_done_ = false;
  head_method_ = head.method == "HEAD";
  expect_continue_ = head.expect_continue;
  continue_sent_ = false;
  response_ = Response::kNone;
  read_disabled_ = false;
  bool end_stream = false;
  if (head.chunked) {
    request_ = Request::kChunked;
    chunks_.Reset();
  } else if (head.content_length && *head.content_length > 0) {
    request_ = Request::kContentLength;
    request_remaining_ = *head.content_length;
  } else {
    request_ = Request::kComplete;
    end_stream = true;
  }
  // Consume never moves or frees bytes, so the head's views stay valid during the call;
  // nothing reads into in_ before it returns.
  in_.Consume(r.consumed);
  decoder_ = &callbacks_.NewStream(*this);
  decoder_->DecodeHead(head, r.consumed, end_stream);
  parser_.Reset();
  return true;
}

void Http1ServerCodec::DispatchBody() {
  while (decoder_ != nullptr && !read_disabled_ && !in_.empty()) {
    if (request_ == Request::kTunnel) {
      std::string_view data = in_.view();
      in_.Clear();  // the bytes stay where they are during the call
      decoder_->DecodeBody(data, false);
      return;
    }
    if (request_ == Request::kContentLength) {
      size_t take = static_cast<size_t>(std::min<uint64_t>(request_remaining_, in_.size()));
      std::string_view data = in_.view().substr(0, take);
      in_.Consume(take);
      request_remaining_ -= take;
      bool end = request_remaining_ == 0;
      if (end) {
        request_ = Request::kComplete;
      }
      decoder_->DecodeBody(data, end);
      if (end) {
        return;
      }
      continue;
    }
    if (request_ != Request::kChunked) {
      return;
    }
    ChunkedResult r = chunks_.Decode(in_.view());
    if (r.status == ChunkedStatus::kError) {
      BodyError();
      return;
    }
    in_.Consume(r.consumed);
    bool done = r.status == ChunkedStatus::kDone;
    if (done) {
      request_ = Request::kComplete;
    }
    if (done && !chunks_.trailers().empty()) {
      if (!r.data.empty()) {
        decoder_->DecodeBody(r.data, false);
      }
      if (decoder_ != nullptr) {
        decoder_->DecodeTrailers(chunks_.trailers());
      }
    } else if (!r.data.empty() || done) {
      decoder_->DecodeBody(r.data, done);
    }
    if (done) {
      return;
    }
  }
}

void Http1ServerCodec::BodyError() {
  request_ = Request::kClosed;
  close_ = true;
  RequestDecoder* d = decoder_;
  d->OnDownstreamReset(ResetReason::kProtocolError);
  if (decoder_ == d) {
    ResetStream();  // the exchange must end the stream; make sure it has
  }
}

void Http1ServerCodec::Encode100Continue() {
  if (decoder_ != nullptr && expect_continue_ && !continue_sent_ && response_ == Response::kNone &&
      !http10_) {
    continue_sent_ = true;
    out_.Append("HTTP/1.1 100 Continue\r\n\r\n");
    callbacks_.OnOutput();
  }
}

void Http1ServerCodec::WriteHead(const ResponseHeaders& head, bool end_stream) {
  std::string_view reason = head.reason.empty() ? ReasonPhrase(head.status) : head.reason;
  // Written in place: status line, fields, framing, connection, final CRLF.
  net::BufferWriter w(&out_, 64 + reason.size() + head.fields.size() + 64);
  w << "HTTP/1.1 ";
  if (head.status >= 100 && head.status <= 999) {
    const char digits[3] = {static_cast<char>('0' + head.status / 100),
                            static_cast<char>('0' + head.status / 10 % 10),
                            static_cast<char>('0' + head.status % 10)};
    w << std::string_view(digits, 3);
  } else {
    w.Number(static_cast<uint64_t>(head.status));
  }
  w << ' ' << reason << "\r\n" << head.fields;
  if (head.status == 101) {
    response_ = Response::kUntilClose;
  } else if (head.status < 200 || head.status == 204 || head.status == 304) {
    response_ = Response::kNoBody;
  } else if (head_method_) {
    response_ = Response::kNoBody;
    if (head.content_length) {
      w << "content-length: ";
      w.Number(*head.content_length) << "\r\n";
    }
  } else if (end_stream || head.content_length) {
    w << "content-length: ";
    w.Number(head.content_length.value_or(0)) << "\r\n";
    response_ = end_stream ? Response::kNoBody : Response::kContentLength;
  } else if (http10_) {
    response_ = Response::kUntilClose;  // an HTTP/1.0 client has no chunked coding
    close_ = true;
  } else {
    w << "transfer-encoding: chunked\r\n";
    response_ = Response::kChunked;
  }
  if (!keep_alive_ || draining_ || request_ != Request::kComplete) {
    // A response before the whole request arrived: the rest of the request cannot be
    // told apart from the next one, so the connection ends with this response.
    close_ = true;
  }
  peer_done_ = !keep_alive_ && request_ == Request::kComplete && head.status != 101;
  if (head.status == 101) {
    w << "connection: upgrade\r\n";
  } else if (close_) {
    w << "connection: close\r\n";
  } else if (http10_) {
    w << "connection: keep-alive\r\n";
  }
  w << "\r\n";
  head_bytes_ = w.written();
}

void Http1ServerCodec::AfterHead(bool end_stream) {
  callbacks_.OnOutput();
  if (end_stream) {
    ResponseComplete();
  }
  CheckWatermark();
}

void Http1ServerCodec::EncodeBody(std::string_view data, bool end_stream) {
  if (decoder_ == nullptr || response_ == Response::kNone || response_ == Response::kDone) {
    return;
  }
  switch (response_) {
    case Response::kContentLength:
    case Response::kUntilClose:
      out_.Append(data);
      break;
    case Response::kChunked:
      AppendChunk(&out_, data);
      if (end_stream) {
        AppendLastChunk(&out_, {});
      }
      break;
    case Response::kNoBody:
    case Response::kNone:
    case Response::kDone:
      break;
  }
  callbacks_.OnOutput();
  if (end_stream) {
    ResponseComplete();
  }
  CheckWatermark();
}

void Http1ServerCodec::EncodeTrailers(std::string_view fields) {
  if (decoder_ == nullptr || response_ == Response::kNone || response_ == Response::kDone) {
    return;
  }
  if (response_ == Response::kChunked) {
    AppendLastChunk(&out_, fields);
    callbacks_.OnOutput();
  }
  ResponseComplete();
  CheckWatermark();
}

void Http1ServerCodec::StartTunnel() {
  if (decoder_ == nullptr) {
    return;
  }
  request_ = Request::kTunnel;
  response_ = Response::kUntilClose;
  close_ = true;  // a tunnel ends with the connection
  if (!in_.empty()) {
    callbacks_.ScheduleDispatch();  // bytes the client sent right after its request
  }
}

void Http1ServerCodec::ResponseComplete() {
  if (response_ == Response::kUntilClose || request_ != Request::kComplete) {
    close_ = true;
  }
  response_ = Response::kDone;
  FinishStream();
}

void Http1ServerCodec::FinishStream() {
  RequestDecoder* done = decoder_;
  decoder_ = nullptr;
  read_disabled_ = false;
  above_watermark_ = false;
  request_ = close_ ? Request::kClosed : Request::kHead;
  if (done != nullptr) {
    callbacks_.OnStreamComplete(*done);
  }
  if (!close_ && !dispatching_ && !in_.empty()) {
    callbacks_.ScheduleDispatch();  // a pipelined request is waiting
  }
}

void Http1ServerCodec::ResetStream() {
  if (decoder_ == nullptr) {
    return;
  }
  // The connection ends (HTTP/1 has no other way to say a response broke off): a client
  // sees a body shorter than its length or without its last chunk; one that only the
  // close delimits gets a reset instead of the close that would make it look whole. (A
  // tunnel that ends, a websocket's, closes in order: its last bytes are delivered.)
  close_ = true;
  abort_ = abort_ || (response_ == Response::kUntilClose && request_ != Request::kTunnel);
  FinishStream();
  callbacks_.OnOutput();  // nothing else may come to flush and close it
}

void Http1ServerCodec::ReadDisable(bool disable) {
  bool was = read_disabled_;
  read_disabled_ = disable;
  if (was && !disable && !dispatching_) {
    callbacks_.ScheduleDispatch();  // deliver what is buffered, and read the socket again
  }
}

void Http1ServerCodec::CheckWatermark() {
  if (!above_watermark_ && out_.size() > options_.max_buffer_bytes) {
    above_watermark_ = true;
    if (decoder_ != nullptr) {
      decoder_->OnDownstreamWatermark(true);
    }
  }
}

void Http1ServerCodec::OnOutputDrained() {
  if (above_watermark_ && out_.size() <= options_.max_buffer_bytes / 2) {
    above_watermark_ = false;
    if (decoder_ != nullptr) {
      decoder_->OnDownstreamWatermark(false);
    }
  }
}

bool Http1ServerCodec::WantsRead() const {
  switch (request_) {
    case Request::kHead:
      return out_.size() <= options_.max_buffer_bytes && in_.size() < options_.max_buffer_bytes;
    case Request::kContentLength:
    case Request::kChunked:
    case Request::kTunnel:
      return !read_disabled_ && in_.size() < options_.max_buffer_bytes;
    case Request::kComplete:
      return in_.size() < options_.max_buffer_bytes;
    case Request::kClosed:
      return false;
  }
  return false;
}

void Http1ServerCodec::OnConnectionClosed() {
  request_ = Request::kClosed;
  close_ = true;
  if (decoder_ != nullptr) {
    RequestDecoder* d = decoder_;
    decoder_ = nullptr;
    d->OnDownstreamReset(ResetReason::kConnectionTermination);
  }
}

void Http1ServerCodec::Drain() {
  draining_ = true;
  if (decoder_ == nullptr) {
    close_ = true;
    request_ = Request::kClosed;
  }
}

void Http1ServerCodec::RejectHead(int status, std::string_view reason) {
  if (decoder_ != nullptr || close_) {
    return;
  }
  head_started_ = false;
  WriteErrorResponse(status, reason);
  close_ = true;
  request_ = Request::kClosed;
}

void Http1ServerCodec::WriteErrorResponse(int status, std::string_view reason) {
  std::string h;
  h.reserve(160 + reason.size());
  h += "HTTP/1.1 ";
  AppendNumber(&h, static_cast<uint64_t>(status));
  h += ' ';
  h += ReasonPhrase(status);
  h += "\r\ncontent-length: ";
  AppendNumber(&h, reason.size());
  h += "\r\ncontent-type: text/plain\r\nserver: ";
  h += options_.server_name;
  h += "\r\nconnection: close\r\n\r\n";
  h.append(reason.data(), reason.size());
  out_.Append(h);
}

// ---- client --------------------------------------------------------------------------

namespace {
size_t RequestHeadBound(const RequestHeaders& head) {
  return 96 + head.method.size() + head.path.size() + head.authority.size() + head.fields.size();
}

void WriteRequestHead(const RequestHeaders& head, net::BufferWriter& w) {
  w << head.method << ' ' << head.path << " HTTP/1.1\r\nhost: " << head.authority << "\r\n"
    << head.fields;
  if (head.upgrade) {
    w << "connection: upgrade\r\n";
  }
  if (head.content_length) {
    w << "content-length: ";
    w.Number(*head.content_length) << "\r\n";
  } else if (head.has_body) {
    w << "transfer-encoding: chunked\r\n";
  }
  w << "\r\n";
}
}  // namespace

void AppendRequestHead(const RequestHeaders& head, std::string* h) {
  net::Buffer buf;
  {
    net::BufferWriter w(&buf, RequestHeadBound(head));
    WriteRequestHead(head, w);
  }
  h->append(buf.view());
}

void Http1ClientCodec::EncodeHead(const RequestHeaders& head, bool end_stream) {
  method_ = head.method;
  chunked_request_ = head.has_body && !head.content_length;
  request_complete_ = end_stream;
  net::BufferWriter w(&out_, RequestHeadBound(head));
  WriteRequestHead(head, w);
}

void Http1ClientCodec::EncodeBody(std::string_view data, bool end_stream) {
  if (chunked_request_ && !tunnel_) {
    AppendChunk(&out_, data);
    if (end_stream) {
      AppendLastChunk(&out_, {});
    }
  } else {
    out_.Append(data);
  }
  if (end_stream) {
    request_complete_ = true;
  }
}

void Http1ClientCodec::EncodeTrailers(std::string_view fields) {
  if (chunked_request_) {
    AppendLastChunk(&out_, fields);
  }
  request_complete_ = true;
}

Http1ClientCodec::Status Http1ClientCodec::Fail(ResetReason reason) {
  error_ = reason;
  keep_alive_ = false;
  return Status::kReset;
}

Http1ClientCodec::Status Http1ClientCodec::Dispatch(net::Buffer& in, ResponseDecoder& decoder,
                                                    bool eof) {
  aborted_ = false;
  auto stopped = [this] {
    if (aborted_) {
      error_ = ResetReason::kLocalReset;
      keep_alive_ = false;
      return true;
    }
    return false;
  };
  while (true) {
    switch (body_) {
      case Body::kHead: {
        if (in.empty()) {
          return eof ? Fail(ResetReason::kConnectionTermination) : Status::kNeedMore;
        }
        ParseResult r = parser_.Parse(in.view());
        if (r.status == ParseStatus::kIncomplete) {
          return eof ? Fail(ResetReason::kConnectionTermination) : Status::kNeedMore;
        }
        if (r.status == ParseStatus::kError) {
          return Fail(ResetReason::kProtocolError);
        }
        response_started_ = true;
        const ResponseHead& head = parser_.head();
        if (head.IsInformational() && head.status != 101) {
          in.Consume(r.consumed);
          parser_.Reset();
          continue;  // 100 Continue and friends: the final response follows
        }
        BodyFraming framing = ResponseFraming(method_, head);
        keep_alive_ = head.keep_alive && framing != BodyFraming::kUntilClose;
        if (head.status == 101) {
          body_ = Body::kTunnel;
          keep_alive_ = false;
        } else {
          switch (framing) {
            case BodyFraming::kNone:
              body_ = Body::kDone;
              break;
            case BodyFraming::kContentLength:
              remaining_ = head.content_length.value_or(0);
              body_ = remaining_ == 0 ? Body::kDone : Body::kContentLength;
              break;
            case BodyFraming::kChunked:
              chunks_.Reset();
              body_ = Body::kChunked;
              break;
            case BodyFraming::kUntilClose:
              body_ = Body::kUntilClose;
              break;
          }
        }
        bool end = body_ == Body::kDone;
        in.Consume(r.consumed);  // the head's views stay valid during the call
        decoder.DecodeResponseHead(head, end);
        // (The parser is reset with the codec, before the connection's next request.)
        if (stopped()) {
          return Status::kReset;
        }
        if (end) {
          if (!in.empty()) {
            keep_alive_ = false;  // bytes after the response: do not reuse
          }
          return Status::kComplete;
        }
        continue;
      }
      case Body::kContentLength: {
        if (in.empty()) {
          return eof ? Fail(ResetReason::kConnectionTermination) : Status::kNeedMore;
        }
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size()));
        std::string_view data = in.view().substr(0, take);
        in.Consume(take);
        remaining_ -= take;
        bool end = remaining_ == 0;
        if (end) {
          body_ = Body::kDone;
        }
        decoder.DecodeResponseBody(data, end);
        if (stopped()) {
          return Status::kReset;
        }
        if (end) {
          if (!in.empty()) {
            keep_alive_ = false;
          }
          return Status::kComplete;
        }
        continue;
      }
      case Body::kChunked: {
        if (in.empty()) {
          return eof ? Fail(ResetReason::kConnectionTermination) : Status::kNeedMore;
        }
        ChunkedResult r = chunks_.Decode(in.view());
        if (r.status == ChunkedStatus::kError) {
          return Fail(ResetReason::kProtocolError);
        }
        in.Consume(r.consumed);
        bool done = r.status == ChunkedStatus::kDone;
        if (done) {
          body_ = Body::kDone;
        }
        if (done && !chunks_.trailers().empty()) {
          if (!r.data.empty()) {
            decoder.DecodeResponseBody(r.data, false);
            if (stopped()) {
              return Status::kReset;
            }
          }
          decoder.DecodeResponseTrailers(chunks_.trailers());
        } else if (!r.data.empty() || done) {
          decoder.DecodeResponseBody(r.data, done);
        }
        if (stopped()) {
          return Status::kReset;
        }
        if (done) {
          if (!in.empty()) {
            keep_alive_ = false;
          }
          return Status::kComplete;
        }
        continue;
      }
      case Body::kUntilClose:
      case Body::kTunnel: {
        if (!in.empty()) {
          std::string_view data = in.view();
          in.Clear();  // the bytes stay where they are during the call
          decoder.DecodeResponseBody(data, false);
          if (stopped()) {
            return Status::kReset;
          }
        }
        if (!eof) {
          return Status::kNeedMore;
        }
        body_ = Body::kDone;
        decoder.DecodeResponseBody({}, true);
        if (stopped()) {
          return Status::kReset;
        }
        return Status::kComplete;
      }
      case Body::kDone:
        return Status::kComplete;
    }
  }
}

void Http1ClientCodec::Reset() {
  parser_.Reset();
  chunks_.Reset();
  body_ = Body::kHead;
  remaining_ = 0;
  chunked_request_ = false;
  request_complete_ = false;
  response_started_ = false;
  keep_alive_ = false;
  tunnel_ = false;
  aborted_ = false;
}

}  // namespace skiff::http

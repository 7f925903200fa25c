// libFuzzer target for proxy/http: the request parser, the response parser and the chunked
// decoder. Besides crashes and sanitizer reports it checks properties:
//   - feeding the input in pieces (split points derived from the input; each piece copied
//     into a fresh, exactly sized heap buffer) gives the same result as feeding it whole;
//   - every view in a parsed head points into the input, values are trimmed and free of
//     control bytes, framing facts are consistent, error statuses are the documented ones;
//   - the chunked decoder always makes progress and yields the same body bytes however the
//     input is split.
// Run with tests/fuzz/run_fuzz.sh.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/http/chunked.h"
#include "proxy/http/parser.h"

namespace {

using skiff::http::BodyFraming;
using skiff::http::ChunkedDecoder;
using skiff::http::ChunkedLimits;
using skiff::http::ChunkedResult;
using skiff::http::ChunkedStatus;
using skiff::http::Header;
using skiff::http::HeadLimits;
using skiff::http::ParseResult;
using skiff::http::ParseStatus;
using skiff::http::RequestHead;
using skiff::http::RequestParser;
using skiff::http::ResponseHead;
using skiff::http::ResponseParser;
using skiff::http::Version;

void Check(bool condition) {
  if (!condition) {
    __builtin_trap();
  }
}

bool Inside(std::string_view outer, std::string_view inner) {
  if (inner.empty()) {
    return true;
  }
  const auto o = reinterpret_cast<uintptr_t>(outer.data());
  const auto i = reinterpret_cast<uintptr_t>(inner.data());
  return i >= o && i + inner.size() <= o + outer.size();
}

// Deterministic split points derived from the input.
class Splitter {
 public:
  Splitter(std::string_view data, uint64_t salt) : state_(14695981039346656037ULL ^ salt) {
    for (char c : data) {
      state_ = (state_ ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    }
    state_ |= 1;
    mode_ = static_cast<int>(Next() % 4);
    if (mode_ == 0 && data.size() > 2048) {
      mode_ = 2;  // keep byte-at-a-time cheap
    }
  }
  size_t Step(size_t remaining) {
    size_t step = 1;
    switch (mode_) {
      case 0:
        step = 1;
        break;
      case 1:
        step = 1 + Next() % 16;
        break;
      case 2:
        step = 1 + Next() % 256;
        break;
      default:
        step = 1 + Next() % (remaining + 1);
        break;
    }
    return step < remaining ? step : remaining;
  }

 private:
  uint64_t Next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  uint64_t state_;
  int mode_ = 0;
};

// An exactly sized heap copy, so ASan flags any read past the bytes handed to the parser.
struct Piece {
  explicit Piece(std::string_view s) : bytes(new char[s.empty() ? 1 : s.size()]), size(s.size()) {
    if (!s.empty()) {
      std::memcpy(bytes.get(), s.data(), s.size());
    }
  }
  [[nodiscard]] std::string_view view() const { return {bytes.get(), size}; }
  std::unique_ptr<char[]> bytes;
  size_t size;
};

void CheckHeaders(std::string_view data, const std::vector<Header>& headers,
                  const HeadLimits& limits) {
  Check(headers.size() <= limits.max_headers);
  for (const Header& h : headers) {
    Check(Inside(data, h.name) && Inside(data, h.value) && !h.name.empty());
    if (!h.value.empty()) {
      Check(h.value.front() != ' ' && h.value.front() != '\t');
      Check(h.value.back() != ' ' && h.value.back() != '\t');
    }
    for (char c : h.value) {
      const auto u = static_cast<unsigned char>(c);
      Check(u == '\t' || (u >= 0x20 && u != 0x7F));
    }
    Check(skiff::http::FindHeader(headers, h.name) != nullptr);
  }
}

bool SameHeaders(const std::vector<Header>& a, const std::vector<Header>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value) {
      return false;
    }
  }
  return true;
}

bool SameResult(const ParseResult& a, const ParseResult& b) {
  return a.status == b.status && a.consumed == b.consumed && a.error_status == b.error_status;
}

// Feeds growing prefixes of `data`, each in a fresh buffer; returns the final result.
template <typename Parser>
ParseResult FeedInPieces(Parser& parser, std::string_view data, uint64_t salt,
                         std::unique_ptr<Piece>* last) {
  Splitter split(data, salt);
  size_t fed = 0;
  for (;;) {
    fed += split.Step(data.size() - fed);
    *last = std::make_unique<Piece>(data.substr(0, fed));
    const ParseResult r = parser.Parse((*last)->view());
    if (r.status != ParseStatus::kIncomplete || fed == data.size()) {
      return r;
    }
  }
}

void CheckRequestHead(std::string_view data, const ParseResult& r, const RequestHead& h,
                      const HeadLimits& limits) {
  Check(r.consumed >= 4 && r.consumed <= data.size() && r.consumed <= limits.max_head_bytes);
  Check(data.substr(r.consumed - 4, 4) == "\r\n\r\n");
  Check(Inside(data, h.method) && !h.method.empty());
  Check(Inside(data, h.target) && !h.target.empty());
  Check(Inside(data, h.host));
  CheckHeaders(data, h.headers, limits);
  Check(!(h.chunked && h.content_length.has_value()));
  Check(!(h.chunked && h.version == Version::kHttp10));
  if (h.version == Version::kHttp11) {
    Check(h.has_host);
  }
  if (h.has_host) {
    Check(h.Find("host") != nullptr && h.Find("HOST")->value == h.host);
  }
}

void FuzzRequest(std::string_view data, const HeadLimits& limits, uint64_t salt) {
  RequestParser whole(limits);
  const ParseResult w = whole.Parse(data);
  Check(SameResult(w, whole.Parse(data)));  // sticky
  switch (w.status) {
    case ParseStatus::kDone:
      CheckRequestHead(data, w, whole.head(), limits);
      break;
    case ParseStatus::kError:
      Check(w.error_status == 400 || w.error_status == 414 || w.error_status == 431 ||
            w.error_status == 501 || w.error_status == 505);
      Check(!w.error_reason.empty());
      break;
    case ParseStatus::kIncomplete:
      Check(data.size() < limits.max_head_bytes);
      break;
  }

  RequestParser pieces(limits);
  std::unique_ptr<Piece> last;
  const ParseResult p = FeedInPieces(pieces, data, salt, &last);
  Check(SameResult(w, p));
  if (p.status == ParseStatus::kDone) {
    const RequestHead& a = whole.head();
    const RequestHead& b = pieces.head();
    CheckRequestHead(last->view(), p, b, limits);
    Check(a.method == b.method && a.target == b.target && a.version == b.version);
    Check(a.content_length == b.content_length && a.chunked == b.chunked);
    Check(a.keep_alive == b.keep_alive && a.expect_continue == b.expect_continue);
    Check(a.host == b.host && SameHeaders(a.headers, b.headers));
  }

  // Pipelined requests: reuse the parser on what follows (bodies skipped when small).
  std::string_view rest = data;
  ParseResult r = w;
  for (int i = 0; i < 8 && r.status == ParseStatus::kDone; ++i) {
    rest.remove_prefix(r.consumed);
    const RequestHead& h = whole.head();
    if (h.content_length) {
      if (*h.content_length > rest.size()) {
        break;
      }
      rest.remove_prefix(static_cast<size_t>(*h.content_length));
    }
    if (h.chunked) {
      ChunkedDecoder decoder;
      const ChunkedResult c = decoder.Decode(rest);
      Check(c.consumed <= rest.size());
      break;
    }
    whole.Reset();
    r = whole.Parse(rest);
    if (r.status == ParseStatus::kDone) {
      CheckRequestHead(rest, r, whole.head(), limits);
    }
  }
}

void CheckResponseHead(std::string_view data, const ParseResult& r, const ResponseHead& h,
                       const HeadLimits& limits) {
  Check(r.consumed >= 4 && r.consumed <= data.size() && r.consumed <= limits.max_head_bytes);
  Check(h.status >= 100 && h.status <= 599);
  Check(Inside(data, h.reason));
  CheckHeaders(data, h.headers, limits);
  Check(!(h.chunked && h.content_length.has_value()));
  Check(skiff::http::ResponseFraming("HEAD", h) == BodyFraming::kNone);
  const BodyFraming get = skiff::http::ResponseFraming("GET", h);
  if (h.IsInformational() || h.status == 204 || h.status == 304) {
    Check(get == BodyFraming::kNone);
  } else {
    Check(get != BodyFraming::kNone);
    Check((get == BodyFraming::kChunked) == h.chunked);
  }
}

void FuzzResponse(std::string_view data, const HeadLimits& limits, uint64_t salt) {
  ResponseParser whole(limits);
  const ParseResult w = whole.Parse(data);
  Check(SameResult(w, whole.Parse(data)));
  if (w.status == ParseStatus::kDone) {
    CheckResponseHead(data, w, whole.head(), limits);
  }
  if (w.status == ParseStatus::kError) {
    Check(w.error_status == 502 && !w.error_reason.empty());
  }

  ResponseParser pieces(limits);
  std::unique_ptr<Piece> last;
  const ParseResult p = FeedInPieces(pieces, data, salt, &last);
  Check(SameResult(w, p));
  if (p.status == ParseStatus::kDone) {
    const ResponseHead& a = whole.head();
    const ResponseHead& b = pieces.head();
    CheckResponseHead(last->view(), p, b, limits);
    Check(a.status == b.status && a.reason == b.reason && a.version == b.version);
    Check(a.content_length == b.content_length && a.chunked == b.chunked);
    Check(a.keep_alive == b.keep_alive && SameHeaders(a.headers, b.headers));
  }
}

struct ChunkedOutcome {
  ChunkedStatus status = ChunkedStatus::kInProgress;
  size_t position = 0;  // bytes consumed in total (error: offset of the bad byte)
  std::string body;
  std::string_view error;
};

// Decodes `data` delivered as the given pieces; each piece is a fresh exact-size buffer.
ChunkedOutcome DecodeChunked(std::string_view data, const ChunkedLimits& limits, Splitter* split) {
  ChunkedDecoder decoder(limits);
  ChunkedOutcome out;
  size_t offset = 0;
  while (offset < data.size() && out.status == ChunkedStatus::kInProgress) {
    const size_t len = split ? split->Step(data.size() - offset) : data.size() - offset;
    const Piece piece(data.substr(offset, len));
    std::string_view in = piece.view();
    while (!in.empty()) {
      const ChunkedResult r = decoder.Decode(in);
      Check(r.consumed <= in.size());
      Check(Inside(in.substr(0, r.consumed), r.data));
      out.body.append(r.data);
      out.position += r.consumed;
      in.remove_prefix(r.consumed);
      if (r.status != ChunkedStatus::kInProgress) {
        out.status = r.status;
        break;
      }
      Check(r.consumed > 0);  // progress
    }
    offset += len;
  }
  Check(decoder.body_bytes() == out.body.size());
  Check(decoder.done() == (out.status == ChunkedStatus::kDone));
  Check(decoder.failed() == (out.status == ChunkedStatus::kError));
  out.error = decoder.error();
  Check(out.status != ChunkedStatus::kError || !out.error.empty());
  return out;
}

void FuzzChunked(std::string_view data, const ChunkedLimits& limits, uint64_t salt) {
  const ChunkedOutcome whole = DecodeChunked(data, limits, nullptr);
  Splitter split(data, salt);
  const ChunkedOutcome pieces = DecodeChunked(data, limits, &split);
  Check(whole.status == pieces.status && whole.position == pieces.position);
  Check(whole.body == pieces.body && whole.error == pieces.error);
  Check(whole.body.size() <= data.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);

  FuzzRequest(data, HeadLimits{}, 1);
  FuzzResponse(data, HeadLimits{}, 2);
  FuzzChunked(data, ChunkedLimits{}, 3);

  // Small limits, chosen by the last byte, so the 414 / 431 paths are reached too.
  if (size > 0) {
    const auto knob = static_cast<unsigned char>(data.back());
    HeadLimits small;
    small.max_head_bytes = 16 + knob;
    small.max_headers = knob % 8;
    FuzzRequest(data, small, 4);
    FuzzResponse(data, small, 5);
    ChunkedLimits chunked_small;
    chunked_small.max_size_line_bytes = 1 + knob % 32;
    chunked_small.max_trailer_bytes = knob;
    FuzzChunked(data, chunked_small, 6);
  }

  // A body decoded after a parsed head, as the proxy does.
  RequestParser request;
  if (request.Parse(data).status == ParseStatus::kDone && request.head().chunked) {
    FuzzChunked(data.substr(request.Parse(data).consumed), ChunkedLimits{}, 7);
  }
  return 0;
}

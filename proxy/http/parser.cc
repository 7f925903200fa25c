#include "proxy/http/parser.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "proxy/http/authority.h"

namespace skiff::http {
namespace {

// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|"
//       / "~" / DIGIT / ALPHA   (RFC 9110 section 5.6.2)
constexpr std::array<bool, 256> MakeTcharTable() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) {
    t[c] = true;
  }
  for (int c = 'a'; c <= 'z'; ++c) {
    t[c] = true;
  }
  for (int c = 'A'; c <= 'Z'; ++c) {
    t[c] = true;
  }
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}
constexpr std::array<bool, 256> kTchar = MakeTcharTable();

// Bytes allowed in a Host value: reg-name / IP-literal / IPv4 and an optional port
// (unreserved, sub-delims, pct-encoded, ":", "[", "]").
constexpr std::array<bool, 256> MakeHostTable() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) {
    t[c] = true;
  }
  for (int c = 'a'; c <= 'z'; ++c) {
    t[c] = true;
  }
  for (int c = 'A'; c <= 'Z'; ++c) {
    t[c] = true;
  }
  for (char c : std::string_view("-._~!$&'()*+,;=%:[]")) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}
constexpr std::array<bool, 256> kHostChar = MakeHostTable();

constexpr std::array<unsigned char, 256> MakeLowerTable() {
  std::array<unsigned char, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  }
  return t;
}
constexpr std::array<unsigned char, 256> kLower = MakeLowerTable();

inline unsigned char U(char c) { return static_cast<unsigned char>(c); }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }
inline bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// field-vchar / SP / HTAB: everything except CTLs other than HTAB, and DEL.
inline bool IsInvalidValueByte(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7F; }

// True when any of the 8 bytes is < 0x20 or == 0x7F (HTAB included: callers re-check).
inline bool MayHaveInvalidValueByte(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  const uint64_t below_space = (x - kOnes * 0x20) & ~x & kHigh;
  const uint64_t del = x ^ (kOnes * 0x7F);
  const uint64_t is_del = (del - kOnes) & ~del & kHigh;
  return (below_space | is_del) != 0;
}

// Offset of the first byte in [p, p + n) not allowed in a field value, or n.
size_t FindInvalidValueByte(const char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    if (MayHaveInvalidValueByte(x)) {
      for (size_t j = i; j < i + 8; ++j) {
        if (IsInvalidValueByte(U(p[j]))) {
          return j;
        }
      }
    }
  }
  for (; i < n; ++i) {
    if (IsInvalidValueByte(U(p[i]))) {
      return i;
    }
  }
  return n;
}

std::string_view TrimOws(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && IsOws(s[b])) {
    ++b;
  }
  while (e > b && IsOws(s[e - 1])) {
    --e;
  }
  return s.substr(b, e - b);
}

enum class ContentLengthError { kNone, kMalformed, kOverflow, kConflict };

// Content-Length = 1*DIGIT, or a list of identical values ("42, 42") as RFC 9110
// section 8.6 permits. `previous` is the value of an earlier Content-Length line.
ContentLengthError ParseContentLength(std::string_view v, const std::optional<uint64_t>& previous,
                                      uint64_t* out) {
  std::optional<uint64_t> value = previous;
  size_t i = 0;
  for (;;) {
    const size_t start = i;
    uint64_t n = 0;
    while (i < v.size() && IsDigit(v[i])) {
      const uint64_t d = static_cast<uint64_t>(v[i] - '0');
      if (n > (std::numeric_limits<uint64_t>::max() - d) / 10) {
        return ContentLengthError::kOverflow;
      }
      n = n * 10 + d;
      ++i;
    }
    if (i == start) {
      return ContentLengthError::kMalformed;
    }
    if (value && *value != n) {
      return ContentLengthError::kConflict;
    }
    value = n;
    while (i < v.size() && IsOws(v[i])) {
      ++i;
    }
    if (i == v.size()) {
      break;
    }
    if (v[i] != ',') {
      return ContentLengthError::kMalformed;
    }
    ++i;
    while (i < v.size() && IsOws(v[i])) {
      ++i;
    }
  }
  *out = *value;
  return ContentLengthError::kNone;
}

// Calls fn(token) for each non-empty element of a comma-separated list, OWS trimmed.
template <typename Fn>
void ForEachListElement(std::string_view v, Fn&& fn) {
  while (!v.empty()) {
    const size_t comma = v.find(',');
    const std::string_view element = TrimOws(v.substr(0, comma));
    if (!element.empty()) {
      fn(element);
    }
    if (comma == std::string_view::npos) {
      break;
    }
    v.remove_prefix(comma + 1);
  }
}

// "HTTP/" DIGIT "." DIGIT. Returns 0 if malformed, otherwise major * 10 + minor + 1.
int ParseVersionText(std::string_view v) {
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || !IsDigit(v[5]) || v[6] != '.' ||
      !IsDigit(v[7])) {
    return 0;
  }
  return (v[5] - '0') * 10 + (v[7] - '0') + 1;
}
constexpr int kVersion10 = 11;
constexpr int kVersion11 = 12;

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (kLower[U(a[i])] != kLower[U(b[i])]) {
      return false;
    }
  }
  return true;
}

const Header* FindHeader(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) {
      return &h;
    }
  }
  return nullptr;
}

bool ResponseMayHaveBody(std::string_view request_method, int status) {
  if (request_method == "HEAD") {
    return false;
  }
  if (status < 200 || status == 204 || status == 304) {
    return false;
  }
  if (request_method == "CONNECT" && status < 300) {
    return false;
  }
  return true;
}

BodyFraming ResponseFraming(std::string_view request_method, const ResponseHead& head) {
  if (!ResponseMayHaveBody(request_method, head.status)) {
    return BodyFraming::kNone;
  }
  if (head.chunked) {
    return BodyFraming::kChunked;
  }
  if (head.content_length) {
    return BodyFraming::kContentLength;
  }
  return BodyFraming::kUntilClose;
}

namespace detail {

HeadParserBase::HeadParserBase(const HeadLimits& limits, bool is_request)
    : limits_(limits),
      is_request_(is_request),
      syntax_error_status_(is_request ? 400 : 502),
      size_error_status_(is_request ? 431 : 502) {
  // Offsets are stored as 32-bit values.
  limits_.max_head_bytes =
      std::min<size_t>(limits_.max_head_bytes, std::numeric_limits<uint32_t>::max());
  fields_.reserve(32);
}

void HeadParserBase::ResetBase() {
  state_ = State::kStartLine;
  line_start_ = 0;
  scan_pos_ = 0;
  result_ = ParseResult{};
  fields_.clear();
  content_length_.reset();
  transfer_encoding_fields_ = 0;
  transfer_encoding_other_ = false;
  connection_close_ = false;
  connection_keep_alive_ = false;
  connection_ = Span{};
  expect_continue_ = false;
  host_fields_ = 0;
  host_ = Span{};
  chunked_ = false;
  keep_alive_ = false;
}

bool HeadParserBase::Fail(int status, std::string_view reason) {
  state_ = State::kError;
  result_ = ParseResult{ParseStatus::kError, 0, status, reason};
  return false;
}

ParseResult HeadParserBase::Done() {
  state_ = State::kDone;
  result_ = ParseResult{ParseStatus::kDone, line_start_, 0, {}};
  return result_;
}

HeadParserBase::LineEvent HeadParserBase::NextLine(std::string_view data, size_t* begin,
                                                   size_t* end) {
  const size_t limit = std::min(data.size(), limits_.max_head_bytes);
  if (scan_pos_ < limit) {
    const void* lf = std::memchr(data.data() + scan_pos_, '\n', limit - scan_pos_);
    if (lf != nullptr) {
      const size_t pos = static_cast<size_t>(static_cast<const char*>(lf) - data.data());
      if (pos == line_start_ || data[pos - 1] != '\r') {
        return LineEvent::kBareLf;
      }
      *begin = line_start_;
      *end = pos - 1;
      line_start_ = scan_pos_ = pos + 1;
      return LineEvent::kLine;
    }
    scan_pos_ = limit;
  }
  return scan_pos_ >= limits_.max_head_bytes ? LineEvent::kLimit : LineEvent::kNeedMore;
}

bool HeadParserBase::ParseFieldLine(const char* p, size_t begin, size_t end) {
  if (IsOws(p[begin])) {
    return Fail(syntax_error_status_, "obs-fold or whitespace before a header name");
  }
  size_t i = begin;
  while (i < end && kTchar[U(p[i])]) {
    ++i;
  }
  if (i == end) {
    return Fail(syntax_error_status_, "header line without colon");
  }
  if (p[i] != ':') {
    size_t j = i;
    while (j < end && IsOws(p[j])) {
      ++j;
    }
    if (j > i && j < end && p[j] == ':') {
      return Fail(syntax_error_status_, "whitespace between header name and colon");
    }
    return Fail(syntax_error_status_, "invalid character in header name");
  }
  if (i == begin) {
    return Fail(syntax_error_status_, "empty header name");
  }
  if (fields_.size() >= limits_.max_headers) {
    return Fail(size_error_status_, "too many header fields");
  }

  size_t vb = i + 1;
  size_t ve = end;
  while (vb < ve && IsOws(p[vb])) {
    ++vb;
  }
  while (ve > vb && IsOws(p[ve - 1])) {
    --ve;
  }
  const size_t bad = FindInvalidValueByte(p + vb, ve - vb);
  if (bad != ve - vb) {
    return Fail(syntax_error_status_, p[vb + bad] == '\r' ? "bare CR in header value"
                                                          : "invalid character in header value");
  }

  const Span name{static_cast<uint32_t>(begin), static_cast<uint32_t>(i - begin)};
  const Span value{static_cast<uint32_t>(vb), static_cast<uint32_t>(ve - vb)};
  fields_.push_back(FieldSpan{name, value});

  const std::string_view n = name.In(p);
  const std::string_view v = value.In(p);
  switch (n.size()) {
    case 4:
      if (is_request_ && TokenEqualsLower(n, "host")) {
        if (++host_fields_ > 1) {
          return Fail(400, "multiple Host headers");
        }
        for (char c : v) {
          if (!kHostChar[U(c)]) {
            return Fail(400, "invalid Host header");
          }
        }
        const size_t colon = v.rfind(':');
        if (colon != std::string_view::npos) {
          if (v.front() == '[' || v.find(':') != colon) {
            if (!ParseAuthority(v)) {  // an IP-literal, or something that is not a host
              return Fail(400, "invalid Host header");
            }
          } else {
            const std::string_view port = v.substr(colon + 1);
            uint32_t number = 0;
            for (char c : port) {
              if (!IsDigit(c)) {
                return Fail(400, "invalid port in Host header");
              }
              number = number * 10 + static_cast<uint32_t>(c - '0');
              if (number > 65535) {
                return Fail(400, "invalid port in Host header");
              }
            }
          }
        } else if (v.find_first_of("[]") != std::string_view::npos) {
          return Fail(400, "invalid Host header");
        }
        host_ = value;
      }
      break;
    case 6:
      if (TokenEqualsLower(n, "expect") && EqualsIgnoreCase(v, "100-continue")) {
        expect_continue_ = true;
      }
      break;
    case 10:
      if (TokenEqualsLower(n, "connection")) {
        if (connection_.length == 0) {
          connection_ = value;
        }
        ForEachListElement(v, [this](std::string_view token) {
          if (EqualsIgnoreCase(token, "close")) {
            connection_close_ = true;
          } else if (EqualsIgnoreCase(token, "keep-alive")) {
            connection_keep_alive_ = true;
          }
        });
      }
      break;
    case 14:
      if (TokenEqualsLower(n, "content-length")) {
        uint64_t length = 0;
        switch (ParseContentLength(v, content_length_, &length)) {
          case ContentLengthError::kNone:
            content_length_ = length;
            break;
          case ContentLengthError::kMalformed:
            return Fail(syntax_error_status_, "malformed Content-Length");
          case ContentLengthError::kOverflow:
            return Fail(syntax_error_status_, "Content-Length too large");
          case ContentLengthError::kConflict:
            return Fail(syntax_error_status_, "conflicting Content-Length values");
        }
      }
      break;
    case 17:
      if (TokenEqualsLower(n, "transfer-encoding")) {
        ++transfer_encoding_fields_;
        if (!EqualsIgnoreCase(v, "chunked")) {
          transfer_encoding_other_ = true;
        }
      }
      break;
    default:
      break;
  }
  return true;
}

bool HeadParserBase::FinishFraming(Version version) {
  if (transfer_encoding_fields_ > 0) {
    if (version == Version::kHttp10) {
      return Fail(syntax_error_status_, "Transfer-Encoding in an HTTP/1.0 message");
    }
    if (content_length_) {
      return Fail(syntax_error_status_, "both Content-Length and Transfer-Encoding");
    }
    if (transfer_encoding_other_) {
      return Fail(is_request_ ? 501 : 502, "unsupported Transfer-Encoding (only chunked)");
    }
    if (transfer_encoding_fields_ > 1) {
      return Fail(syntax_error_status_, "chunked applied more than once");
    }
    chunked_ = true;
  }
  keep_alive_ = !connection_close_ && (version == Version::kHttp11 || connection_keep_alive_);
  return true;
}

void HeadParserBase::MaterializeHeaders(const char* base, std::vector<Header>* out) const {
  out->clear();
  for (const FieldSpan& f : fields_) {
    out->push_back(Header{f.name.In(base), f.value.In(base)});
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// RequestParser

RequestParser::RequestParser(const HeadLimits& limits) : HeadParserBase(limits, true) {
  head_.headers.reserve(32);
}

void RequestParser::Reset() {
  ResetBase();
  std::vector<Header> headers = std::move(head_.headers);
  headers.clear();
  head_ = RequestHead{};
  head_.headers = std::move(headers);
  method_ = Span{};
  target_ = Span{};
  partial_pos_ = 0;
  partial_done_ = false;
}

ParseResult RequestParser::Parse(std::string_view data) {
  if (state_ == State::kDone || state_ == State::kError) {
    return result_;
  }
  if (data.size() < scan_pos_) {
    Reset();  // not the same bytes as before: start over
  }
  const char* p = data.data();
  for (;;) {
    size_t begin = 0;
    size_t end = 0;
    const LineEvent event = NextLine(data, &begin, &end);
    if (event == LineEvent::kLine) {
      if (state_ == State::kStartLine) {
        if (begin == end) {  // an empty line before the request line (RFC 9112 2.2)
          partial_pos_ = line_start_;
          continue;
        }
        if (!ParseRequestLine(p, begin, end)) {
          return result_;
        }
        state_ = State::kFields;
      } else if (begin == end) {
        if (!Finish(p)) {
          return result_;
        }
        return Done();
      } else if (!ParseFieldLine(p, begin, end)) {
        return result_;
      }
      continue;
    }
    if (event == LineEvent::kBareLf) {
      Fail(400, "bare LF line terminator (CRLF required)");
      return result_;
    }
    if (state_ == State::kStartLine && !CheckPartialRequestLine(p, scan_pos_)) {
      return result_;
    }
    if (event == LineEvent::kLimit) {
      if (state_ == State::kStartLine) {
        Fail(414, "request line too long");
      } else {
        Fail(431, "request header section too large");
      }
      return result_;
    }
    return ParseResult{};
  }
}

bool RequestParser::CheckPartialRequestLine(const char* p, size_t end) {
  if (partial_done_) {
    return true;
  }
  size_t i = std::max(partial_pos_, line_start_);
  while (i < end) {
    const unsigned char c = U(p[i]);
    if (kTchar[c]) {
      ++i;
      continue;
    }
    if (c == ' ' && i > line_start_) {
      partial_done_ = true;
      return true;
    }
    if (c == '\r' && i + 1 == end) {
      break;  // may become the CRLF of an empty line
    }
    return Fail(400, "malformed method in request line");
  }
  partial_pos_ = i;
  return true;
}

bool RequestParser::ParseRequestLine(const char* p, size_t begin, size_t end) {
  size_t i = begin;
  while (i < end && kTchar[U(p[i])]) {
    ++i;
  }
  if (i == begin || i == end || p[i] != ' ') {
    return Fail(400, "malformed method in request line");
  }
  method_ = Span{static_cast<uint32_t>(begin), static_cast<uint32_t>(i - begin)};

  const size_t target_begin = ++i;
  // Visible ASCII only: a URI has no raw bytes >= 0x80 (RFC 9112 3.2; Envoy refuses them).
  while (i < end && U(p[i]) > 0x20 && U(p[i]) < 0x7F) {
    ++i;
  }
  if (i == target_begin) {
    return Fail(400,
                i < end && p[i] == ' ' ? "extra space in request line" : "empty request-target");
  }
  if (i == end) {
    return Fail(400, "missing HTTP version in request line");
  }
  if (p[i] != ' ') {
    return Fail(400, "invalid character in request-target");
  }
  target_ = Span{static_cast<uint32_t>(target_begin), static_cast<uint32_t>(i - target_begin)};

  switch (ParseVersionText(std::string_view(p + i + 1, end - i - 1))) {
    case kVersion11:
      head_.version = Version::kHttp11;
      return true;
    case kVersion10:
      head_.version = Version::kHttp10;
      return true;
    case 0:
      return Fail(400, kMalformedVersion);
    default:
      return Fail(505, "HTTP version not supported (HTTP/1.0 and HTTP/1.1 only)");
  }
}

bool RequestParser::Finish(const char* p) {
  if (head_.version == Version::kHttp11 && host_fields_ == 0) {
    return Fail(400, "missing Host header");
  }
  if (!FinishFraming(head_.version)) {
    return false;
  }
  head_.method = method_.In(p);
  head_.target = target_.In(p);
  head_.content_length = content_length_;
  head_.chunked = chunked_;
  head_.keep_alive = keep_alive_;
  head_.connection = connection_.In(p);
  // A server must ignore 100-continue in an HTTP/1.0 request (RFC 9110 10.1.1).
  head_.expect_continue = expect_continue_ && head_.version == Version::kHttp11;
  head_.has_host = host_fields_ > 0;
  head_.host = host_.In(p);
  MaterializeHeaders(p, &head_.headers);
  return true;
}

// ---------------------------------------------------------------------------------------
// ResponseParser

ResponseParser::ResponseParser(const HeadLimits& limits) : HeadParserBase(limits, false) {
  head_.headers.reserve(32);
}

void ResponseParser::Reset() {
  ResetBase();
  std::vector<Header> headers = std::move(head_.headers);
  headers.clear();
  head_ = ResponseHead{};
  head_.headers = std::move(headers);
  reason_ = Span{};
}

ParseResult ResponseParser::Parse(std::string_view data) {
  if (state_ == State::kDone || state_ == State::kError) {
    return result_;
  }
  if (data.size() < scan_pos_) {
    Reset();
  }
  const char* p = data.data();
  for (;;) {
    size_t begin = 0;
    size_t end = 0;
    const LineEvent event = NextLine(data, &begin, &end);
    switch (event) {
      case LineEvent::kLine:
        if (state_ == State::kStartLine) {
          if (begin == end) {
            continue;  // tolerate empty lines before the status line
          }
          if (!ParseStatusLine(p, begin, end)) {
            return result_;
          }
          state_ = State::kFields;
        } else if (begin == end) {
          if (!Finish(p)) {
            return result_;
          }
          return Done();
        } else if (!ParseFieldLine(p, begin, end)) {
          return result_;
        }
        continue;
      case LineEvent::kBareLf:
        Fail(502, "bare LF line terminator in response (CRLF required)");
        return result_;
      case LineEvent::kLimit:
        Fail(502, "response head too large");
        return result_;
      case LineEvent::kNeedMore:
        return ParseResult{};
    }
  }
}

bool ResponseParser::ParseStatusLine(const char* p, size_t begin, size_t end) {
  // status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]; the SP before an empty
  // reason is often omitted by servers and tolerated here.
  const std::string_view line(p + begin, end - begin);
  if (line.size() < 12 || line[8] != ' ') {
    return Fail(502, "malformed response status line");
  }
  switch (ParseVersionText(line.substr(0, 8))) {
    case kVersion11:
      head_.version = Version::kHttp11;
      break;
    case kVersion10:
      head_.version = Version::kHttp10;
      break;
    case 0:
      return Fail(502, "malformed response status line");
    default:
      return Fail(502, "unsupported HTTP version in response");
  }
  if (!IsDigit(line[9]) || !IsDigit(line[10]) || !IsDigit(line[11])) {
    return Fail(502, "malformed response status code");
  }
  const int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (status < 100 || status > 599) {
    return Fail(502, "response status code out of range");
  }
  head_.status = status;
  if (line.size() > 12) {
    if (line[12] != ' ') {
      return Fail(502, "malformed response status line");
    }
    const std::string_view reason = line.substr(13);
    if (FindInvalidValueByte(reason.data(), reason.size()) != reason.size()) {
      return Fail(502, "invalid character in response reason phrase");
    }
    reason_ = Span{static_cast<uint32_t>(begin + 13), static_cast<uint32_t>(reason.size())};
  }
  return true;
}

bool ResponseParser::Finish(const char* p) {
  if (!FinishFraming(head_.version)) {
    return false;
  }
  head_.content_length = content_length_;
  head_.chunked = chunked_;
  head_.keep_alive = keep_alive_;
  head_.connection = connection_.In(p);
  head_.reason = reason_.In(p);
  MaterializeHeaders(p, &head_.headers);
  return true;
}

}  // namespace skiff::http

#pragma once
// Strict, incremental, zero-copy HTTP/1.1 message-head parsers (RFC 9112).
//
// Usage: keep every byte received for the current message in one buffer and call Parse()
// with all of it each time more arrives. The parser remembers how far it has already
// scanned and validated, so feeding a 60 KiB head one byte at a time stays linear. The
// buffer may move between calls (e.g. a growing std::string); only the bytes must stay
// the same. After kDone, head() holds string_views into the buffer passed to that last
// call, and `consumed` says where the body (or the next pipelined message) starts. Call
// Reset() before parsing the next message on the same connection.
//
// Request errors carry the status the proxy should answer with and then close the
// connection: 400 (malformed framing or syntax), 414 (request line longer than the head
// limit), 431 (head too large / too many fields), 501 (unsupported Transfer-Encoding) and
// 505 (HTTP version other than 1.0 / 1.1 — including the HTTP/2 prior-knowledge preface
// "PRI * HTTP/2.0"). 408 for slow heads is the caller's timer. Response (upstream) errors
// always carry 502.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

namespace skiff::http {

enum class Version : uint8_t { kHttp10, kHttp11, kHttp2 };

// One header field line. `name` is a valid token as received (case preserved); `value`
// has leading and trailing whitespace (SP / HTAB) removed and may be empty.
struct Header {
  std::string_view name;
  std::string_view value;
};

struct HeadLimits {
  // Start line + field lines + the final empty line, including leading empty lines.
  size_t max_head_bytes = 60 * 1024;
  // Number of header field lines.
  size_t max_headers = 100;
};

// How the message body is delimited (RFC 9112 section 6.3).
enum class BodyFraming : uint8_t {
  kNone,           // no body at all
  kContentLength,  // exactly content_length bytes (may be 0)
  kChunked,        // chunked transfer coding; decode with ChunkedDecoder
  kUntilClose,     // response only: the body ends when the upstream closes
};

enum class ParseStatus : uint8_t { kIncomplete, kDone, kError };

// The error reason of a request line whose version is not "HTTP/" DIGIT "." DIGIT: the
// bytes are not HTTP/1 at all (a server may close rather than answer in HTTP/1).
inline constexpr std::string_view kMalformedVersion = "malformed HTTP version in request line";

struct ParseResult {
  ParseStatus status = ParseStatus::kIncomplete;
  // kDone: bytes of the head, from the start of the buffer to the end of the empty line.
  size_t consumed = 0;
  // kError: the status code to answer with (request) or 502 (response).
  int error_status = 0;
  // kError: a short, static description ("Content-Length and Transfer-Encoding").
  std::string_view error_reason;
};

// Case-insensitive (ASCII) comparison, as header names and tokens are compared.
[[nodiscard]] bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// The same for a received token `name` (already validated) against a lower-case literal
// made of letters, digits and '-': OR-ing 0x20 into a token's bytes maps only 'A'-'Z'
// onto such bytes, so eight bytes compare at once.
[[nodiscard]] inline bool TokenEqualsLower(std::string_view name, std::string_view lower) {
  if (name.size() != lower.size()) {
    return false;
  }
  size_t i = 0;
  const size_t n = name.size();
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    uint64_t y;
    std::memcpy(&x, name.data() + i, 8);
    std::memcpy(&y, lower.data() + i, 8);
    if ((x | 0x2020202020202020ULL) != y) {
      return false;
    }
  }
  for (; i < n; ++i) {
    if ((name[i] | 0x20) != lower[i]) {
      return false;
    }
  }
  return true;
}

// The first header named `name` (case-insensitive), or nullptr.
[[nodiscard]] const Header* FindHeader(const std::vector<Header>& headers, std::string_view name);

struct RequestHead {
  std::string_view method;  // a token, case-sensitive ("GET")
  std::string_view target;  // request-target as received; no CTL, DEL or SP
  Version version = Version::kHttp11;
  std::vector<Header> headers;
  std::optional<uint64_t> content_length;  // set when Content-Length was sent
  bool chunked = false;                    // Transfer-Encoding: chunked
  bool keep_alive = true;                  // the connection may be reused afterwards
  bool expect_continue = false;            // Expect: 100-continue (HTTP/1.1 only)
  bool has_host = false;
  std::string_view host;        // the Host value; always present for HTTP/1.1
  std::string_view connection;  // the (first) Connection value, or empty

  [[nodiscard]] BodyFraming Framing() const {
    if (chunked) {
      return BodyFraming::kChunked;
    }
    if (content_length) {
      return BodyFraming::kContentLength;
    }
    return BodyFraming::kNone;
  }
  [[nodiscard]] const Header* Find(std::string_view name) const {
    return FindHeader(headers, name);
  }
};

struct ResponseHead {
  Version version = Version::kHttp11;
  int status = 0;  // 100..599
  std::string_view reason;
  std::vector<Header> headers;
  std::optional<uint64_t> content_length;
  bool chunked = false;
  // The connection may be reused after this response: HTTP/1.1 without "Connection:
  // close", or HTTP/1.0 with "Connection: keep-alive". A close-delimited body (see
  // ResponseFraming) also ends the connection; callers check both.
  bool keep_alive = true;
  std::string_view connection;  // the (first) Connection value, or empty

  // 1xx: another response head follows on the same connection (101 switches protocols).
  [[nodiscard]] bool IsInformational() const { return status >= 100 && status < 200; }
  [[nodiscard]] const Header* Find(std::string_view name) const {
    return FindHeader(headers, name);
  }
};

// Whether a response to `request_method` with `status` can have a body: never for HEAD,
// 1xx, 204 and 304, nor for a 2xx answer to CONNECT (the connection becomes a tunnel).
[[nodiscard]] bool ResponseMayHaveBody(std::string_view request_method, int status);

// The framing of a response body, given the request it answers (RFC 9112 section 6.3).
[[nodiscard]] BodyFraming ResponseFraming(std::string_view request_method,
                                          const ResponseHead& head);

namespace detail {

// The line scanner and field validation shared by both parsers.
class HeadParserBase {
 protected:
  HeadParserBase(const HeadLimits& limits, bool is_request);

  struct Span {
    uint32_t offset = 0;
    uint32_t length = 0;
    [[nodiscard]] std::string_view In(const char* base) const { return {base + offset, length}; }
  };
  struct FieldSpan {
    Span name;
    Span value;
  };
  enum class State : uint8_t { kStartLine, kFields, kDone, kError };
  enum class LineEvent : uint8_t { kLine, kNeedMore, kLimit, kBareLf };

  // Finds the next CRLF-terminated line within the head limit, resuming where the last
  // call stopped. kLine sets [*begin, *end) to the line without its CRLF.
  LineEvent NextLine(std::string_view data, size_t* begin, size_t* end);
  void ResetBase();
  // Records the error (sticky) and returns false.
  bool Fail(int status, std::string_view reason);
  // Validates one non-empty field line [begin, end) and records its facts.
  bool ParseFieldLine(const char* p, size_t begin, size_t end);
  // Applies the Content-Length / Transfer-Encoding / Connection rules once the head is
  // complete.
  bool FinishFraming(Version version);
  void MaterializeHeaders(const char* base, std::vector<Header>* out) const;
  ParseResult Done();

  HeadLimits limits_;
  bool is_request_;
  int syntax_error_status_;  // 400 for requests, 502 for responses
  int size_error_status_;    // 431 for requests, 502 for responses
  State state_ = State::kStartLine;
  size_t line_start_ = 0;  // offset of the first byte of the current, unfinished line
  size_t scan_pos_ = 0;    // no LF for the current line before this offset
  ParseResult result_;     // sticky once kDone / kError
  std::vector<FieldSpan> fields_;

  // Facts collected from field lines.
  std::optional<uint64_t> content_length_;
  uint32_t transfer_encoding_fields_ = 0;
  bool transfer_encoding_other_ = false;  // a Transfer-Encoding value other than "chunked"
  bool connection_close_ = false;
  Span connection_;
  bool connection_keep_alive_ = false;
  bool expect_continue_ = false;
  uint32_t host_fields_ = 0;
  Span host_;
  bool chunked_ = false;
  bool keep_alive_ = false;
};

}  // namespace detail

class RequestParser : private detail::HeadParserBase {
 public:
  explicit RequestParser(const HeadLimits& limits = HeadLimits{});

  // `data` is every byte received for this request so far, starting at its first byte
  // (leading empty lines allowed). Once kDone or kError is returned, later calls return
  // the same result until Reset().
  ParseResult Parse(std::string_view data);
  // Valid after kDone; views into the `data` of the call that returned kDone.
  [[nodiscard]] const RequestHead& head() const { return head_; }
  // Prepares for the next request on the connection; keeps allocated capacity.
  void Reset();

 private:
  bool ParseRequestLine(const char* p, size_t begin, size_t end);
  // Rejects a request line whose method is already invalid before its CRLF arrives
  // (e.g. TLS or binary garbage on a plaintext port), without waiting for the limit.
  bool CheckPartialRequestLine(const char* p, size_t end);
  bool Finish(const char* p);

  RequestHead head_;
  Span method_;
  Span target_;
  size_t partial_pos_ = 0;  // request-line bytes [line_start_, partial_pos_) are tchars
  bool partial_done_ = false;
};

class ResponseParser : private detail::HeadParserBase {
 public:
  explicit ResponseParser(const HeadLimits& limits = HeadLimits{});

  // As RequestParser::Parse, for an upstream response. After a 1xx head (other than 101),
  // call Reset() and parse the bytes after `consumed` for the final response.
  ParseResult Parse(std::string_view data);
  [[nodiscard]] const ResponseHead& head() const { return head_; }
  void Reset();

 private:
  bool ParseStatusLine(const char* p, size_t begin, size_t end);
  bool Finish(const char* p);

  ResponseHead head_;
  Span reason_;
};

}  // namespace skiff::http

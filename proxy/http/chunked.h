#pragma once
// Incremental, zero-copy decoder for the chunked transfer coding (RFC 9112 section 7.1),
// for request and response bodies alike.
//
//   chunked-body = *chunk last-chunk trailer-section CRLF
//   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//
// Feed bytes as they arrive; every call returns at most one span of body data, pointing
// into the input, so nothing is buffered or copied:
//
//   while (!in.empty()) {
//     ChunkedResult r = decoder.Decode(in);
//     if (r.status == ChunkedStatus::kError) { /* 400 (request) or 502, then close */ }
//     Forward(r.data);
//     in.remove_prefix(r.consumed);
//     if (r.status == ChunkedStatus::kDone) break;  // `in` now starts the next message
//   }
//
// Chunk extensions are checked for forbidden bytes and dropped. Trailer fields must be
// valid field lines (a token, ":" right after it, a value without control bytes); they
// are collected, normalized to "name: value\r\n", in trailers() - except the framing
// and routing fields a trailer may not carry (Content-Length, Transfer-Encoding, Host,
// hop-by-hop fields), which are dropped. Both are bounded by ChunkedLimits.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace skiff::http {

struct ChunkedLimits {
  // A chunk-size line (size + extensions, without CRLF).
  size_t max_size_line_bytes = 4096;
  // The whole trailer section, without the final CRLF.
  size_t max_trailer_bytes = 60 * 1024;
  // Trailer fields (also those dropped), as many as header fields (HeadLimits).
  size_t max_trailer_fields = 100;
};

enum class ChunkedStatus : uint8_t {
  kInProgress,  // the body is not finished: call again with the rest or with more input
  kDone,        // the last chunk, the trailers and the final CRLF have been read
  kError,       // invalid framing; error() says what
};

struct ChunkedResult {
  ChunkedStatus status = ChunkedStatus::kInProgress;
  // Input bytes used, including those of `data`. Always > 0 for non-empty input unless
  // status is kError.
  size_t consumed = 0;
  // Body bytes (a view into the input), possibly empty.
  std::string_view data;
};

class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(const ChunkedLimits& limits = ChunkedLimits{}) : limits_(limits) {}

  // Decodes from the start of `input`. Returns after the first data span, when the input
  // is used up, when the body ends, or on the first error. kDone and kError are sticky
  // until Reset().
  ChunkedResult Decode(std::string_view input);

  [[nodiscard]] bool done() const { return state_ == State::kDone; }
  [[nodiscard]] bool failed() const { return state_ == State::kError; }
  // A short, static description of the error, or empty.
  [[nodiscard]] std::string_view error() const { return error_; }
  // Body bytes decoded so far.
  [[nodiscard]] uint64_t body_bytes() const { return body_bytes_; }
  // The valid trailer fields seen so far ("name: value\r\n" lines), once done().
  [[nodiscard]] const std::string& trailers() const { return trailers_; }
  void Reset();

 private:
  enum class State : uint8_t {
    kSize,          // first hex digit of a chunk size
    kSizeMore,      // more hex digits, or what follows them
    kSizeBws,       // whitespace after the size; only ";" or CR may follow
    kExtension,     // chunk extensions, up to CR
    kSizeLf,        // LF ending the size line
    kData,          // chunk data
    kDataCr,        // CR after chunk data
    kDataLf,        // LF after chunk data
    kTrailerStart,  // start of a trailer line or of the final CRLF
    kTrailer,       // inside a trailer field line
    kTrailerLf,     // LF ending a trailer field line
    kFinalLf,       // LF of the final CRLF
    kDone,
    kError,
  };

  ChunkedResult Fail(std::string_view reason, size_t consumed);
  // Checks the trailer line collected in line_ and keeps it; false when it is invalid.
  bool AcceptTrailerLine();

  ChunkedLimits limits_;
  State state_ = State::kSize;
  uint64_t remaining_ = 0;  // size of the current chunk, then bytes left of it
  size_t line_bytes_ = 0;   // bytes of the current size line
  size_t trailer_bytes_ = 0;
  size_t trailer_fields_ = 0;
  uint64_t body_bytes_ = 0;
  std::string_view error_;
  std::string line_;      // the trailer line being read
  std::string trailers_;  // accepted trailer fields
};

}  // namespace skiff::http

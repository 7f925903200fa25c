#include "proxy/http/chunked.h"

#include <algorithm>
#include <array>

#include "proxy/http/headers.h"

namespace skiff::http {
namespace {

constexpr uint8_t kNotHex = 0xFF;

constexpr std::array<uint8_t, 256> MakeHexTable() {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) {
    v = kNotHex;
  }
  for (int c = '0'; c <= '9'; ++c) {
    t[c] = static_cast<uint8_t>(c - '0');
  }
  for (int c = 'a'; c <= 'f'; ++c) {
    t[c] = static_cast<uint8_t>(c - 'a' + 10);
  }
  for (int c = 'A'; c <= 'F'; ++c) {
    t[c] = static_cast<uint8_t>(c - 'A' + 10);
  }
  return t;
}
constexpr std::array<uint8_t, 256> kHex = MakeHexTable();

inline unsigned char U(char c) { return static_cast<unsigned char>(c); }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }
// Bytes never allowed in chunk extensions or trailer lines: CTLs other than HTAB, and DEL.
inline bool IsForbidden(unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7F; }

}  // namespace

void ChunkedDecoder::Reset() {
  state_ = State::kSize;
  remaining_ = 0;
  line_bytes_ = 0;
  trailer_bytes_ = 0;
  trailer_fields_ = 0;
  body_bytes_ = 0;
  error_ = {};
  line_.clear();
  trailers_.clear();
}

bool ChunkedDecoder::AcceptTrailerLine() {
  std::string_view line = line_;
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return false;
  }
  std::string_view name = line.substr(0, colon);
  if (!ValidFieldName(name)) {
    return false;  // also rejects whitespace before the colon
  }
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && IsOws(value.front())) {
    value.remove_prefix(1);
  }
  while (!value.empty() && IsOws(value.back())) {
    value.remove_suffix(1);
  }
  if (IsHopByHop(name) || EqualsIgnoreCase(name, "host")) {
    return true;  // not allowed in a trailer section: dropped (RFC 9110 6.5.1)
  }
  AppendField(&trailers_, name, value);
  return true;
}

ChunkedResult ChunkedDecoder::Fail(std::string_view reason, size_t consumed) {
  state_ = State::kError;
  error_ = reason;
  return ChunkedResult{ChunkedStatus::kError, consumed, {}};
}

ChunkedResult ChunkedDecoder::Decode(std::string_view in) {
  if (state_ == State::kDone) {
    return ChunkedResult{ChunkedStatus::kDone, 0, {}};
  }
  if (state_ == State::kError) {
    return ChunkedResult{ChunkedStatus::kError, 0, {}};
  }
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    const char c = in[i];
    switch (state_) {
      case State::kSize: {
        const uint8_t hex = kHex[U(c)];
        if (hex == kNotHex) {
          return Fail("invalid chunk size", i);
        }
        remaining_ = static_cast<uint64_t>(hex);
        line_bytes_ = 1;
        state_ = State::kSizeMore;
        ++i;
        break;
      }
      case State::kSizeMore: {
        const uint8_t hex = kHex[U(c)];
        if (hex != kNotHex) {
          if ((remaining_ >> 60) != 0) {
            return Fail("chunk size overflow", i);
          }
          remaining_ = (remaining_ << 4) | static_cast<uint64_t>(hex);
        } else if (IsOws(c)) {
          state_ = State::kSizeBws;
        } else if (c == ';') {
          state_ = State::kExtension;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
          ++i;
          break;
        } else {
          return Fail("invalid chunk size", i);
        }
        if (++line_bytes_ > limits_.max_size_line_bytes) {
          return Fail("chunk size line too long", i);
        }
        ++i;
        break;
      }
      case State::kSizeBws:
        if (c == ';') {
          state_ = State::kExtension;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
          ++i;
          break;
        } else if (!IsOws(c)) {
          return Fail("invalid chunk size", i);
        }
        if (++line_bytes_ > limits_.max_size_line_bytes) {
          return Fail("chunk size line too long", i);
        }
        ++i;
        break;
      case State::kExtension: {
        // Extensions are ignored; scan to CR, rejecting control bytes.
        size_t j = i;
        while (j < n && in[j] != '\r') {
          if (IsForbidden(U(in[j]))) {
            return Fail("invalid byte in chunk extension", j);
          }
          if (++line_bytes_ > limits_.max_size_line_bytes) {
            return Fail("chunk size line too long", j);
          }
          ++j;
        }
        if (j < n) {
          state_ = State::kSizeLf;
          ++j;
        }
        i = j;
        break;
      }
      case State::kSizeLf:
        if (c != '\n') {
          return Fail("missing LF after chunk size", i);
        }
        ++i;
        if (remaining_ == 0) {
          trailer_bytes_ = 0;
          trailer_fields_ = 0;
          state_ = State::kTrailerStart;
        } else {
          state_ = State::kData;
        }
        break;
      case State::kData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - i));
        const std::string_view data = in.substr(i, take);
        remaining_ -= take;
        body_bytes_ += take;
        i += take;
        if (remaining_ == 0) {
          state_ = State::kDataCr;
        }
        return ChunkedResult{ChunkedStatus::kInProgress, i, data};
      }
      case State::kDataCr:
        if (c != '\r') {
          return Fail("missing CRLF after chunk data", i);
        }
        state_ = State::kDataLf;
        ++i;
        break;
      case State::kDataLf:
        if (c != '\n') {
          return Fail("missing CRLF after chunk data", i);
        }
        state_ = State::kSize;
        ++i;
        break;
      case State::kTrailerStart:
        if (c == '\r') {
          state_ = State::kFinalLf;
          ++i;
        } else if (IsOws(c)) {
          return Fail("obs-fold in trailer section", i);
        } else {
          line_.clear();
          state_ = State::kTrailer;  // this byte is checked there
        }
        break;
      case State::kTrailer: {
        size_t j = i;
        while (j < n && in[j] != '\r') {
          if (IsForbidden(U(in[j]))) {
            return Fail("invalid byte in trailer section", j);
          }
          if (++trailer_bytes_ > limits_.max_trailer_bytes) {
            return Fail("trailer section too large", j);
          }
          ++j;
        }
        line_.append(in.data() + i, j - i);
        if (j < n) {
          state_ = State::kTrailerLf;
          ++j;
        }
        i = j;
        break;
      }
      case State::kTrailerLf:
        if (c != '\n') {
          return Fail("bare CR in trailer section", i);
        }
        if (++trailer_fields_ > limits_.max_trailer_fields) {
          return Fail("too many trailer fields", i);
        }
        if (!AcceptTrailerLine()) {
          return Fail("invalid trailer field", i);
        }
        state_ = State::kTrailerStart;
        ++i;
        break;
      case State::kFinalLf:
        if (c != '\n') {
          return Fail("missing LF after last chunk", i);
        }
        state_ = State::kDone;
        return ChunkedResult{ChunkedStatus::kDone, i + 1, {}};
      case State::kDone:
      case State::kError:
        return Fail("decoder state", i);  // unreachable: handled before the loop
    }
  }
  return ChunkedResult{ChunkedStatus::kInProgress, i, {}};
}

}  // namespace skiff::http

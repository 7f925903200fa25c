#pragma once
// Header-field helpers shared by the codecs, the request phases and config validation.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "proxy/http/parser.h"

namespace skiff::http {

// Headers a proxy must not forward (RFC 9110 7.6.1), plus the framing headers it
// regenerates (Content-Length, Transfer-Encoding) and Expect, which it answers itself.
[[nodiscard]] bool IsHopByHop(std::string_view name);

// What the proxy does with a received header field, found with one switch on the
// name's length (the request path's hottest loop).
enum class FieldKind : uint8_t {
  kOther,           // passed on
  kHopByHop,        // IsHopByHop()
  kHost,            // the authority: rewritten, never copied
  kForwardedFor,    // x-forwarded-for: appended to
  kForwardedProto,  // x-forwarded-proto: set by the proxy
  kRequestId,       // x-request-id: kept, or generated when absent
  kServer,          // server: replaced in responses
};
[[nodiscard]] FieldKind ClassifyField(std::string_view name);

// Is `token` one of the comma-separated tokens of a Connection header value?
[[nodiscard]] bool HasConnectionToken(std::string_view connection_value, std::string_view token);

// Headers a Connection token may not remove: the proxy needs them end to end (Host is
// rewritten, not dropped; the framing headers are regenerated anyway).
[[nodiscard]] bool IsProtectedFromConnection(std::string_view name);

// Appends "name: value\r\n" (one append for the common short field).
inline void AppendField(std::string* out, std::string_view name, std::string_view value) {
  const size_t n = name.size() + value.size() + 4;
  if (n <= 256) {
    char line[256];
    std::memcpy(line, name.data(), name.size());
    line[name.size()] = ':';
    line[name.size() + 1] = ' ';
    std::memcpy(line + name.size() + 2, value.data(), value.size());
    line[n - 2] = '\r';
    line[n - 1] = '\n';
    out->append(line, n);
    return;
  }
  out->append(name.data(), name.size());
  out->append(": ", 2);
  out->append(value.data(), value.size());
  out->append("\r\n", 2);
}

// The standard reason phrase of a status, or "Unknown".
[[nodiscard]] const char* ReasonPhrase(int status);

// A field name is a token (RFC 9110 5.1); a field value has no CR, LF, NUL or other
// control bytes except HTAB (RFC 9110 5.5) and no leading or trailing whitespace.
[[nodiscard]] bool ValidFieldName(std::string_view name);
[[nodiscard]] bool ValidFieldValue(std::string_view value);
// An origin-form path with an optional query: starts with "/", no CTL, SP, DEL or "#".
[[nodiscard]] bool ValidOriginForm(std::string_view target);

}  // namespace skiff::http

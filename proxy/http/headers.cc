#include "proxy/http/headers.h"

namespace skiff::http {

bool IsHopByHop(std::string_view name) {
  switch (name.size()) {
    case 2:
      return EqualsIgnoreCase(name, "te");
    case 6:
      return EqualsIgnoreCase(name, "expect");
    case 7:
      return EqualsIgnoreCase(name, "trailer") || EqualsIgnoreCase(name, "upgrade");
    case 10:
      return EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "keep-alive");
    case 14:
      return EqualsIgnoreCase(name, "content-length");
    case 16:
      return EqualsIgnoreCase(name, "proxy-connection");
    case 17:
      return EqualsIgnoreCase(name, "transfer-encoding");
    default:
      return false;
  }
}

FieldKind ClassifyField(std::string_view name) {
  switch (name.size()) {
    case 2:
      return TokenEqualsLower(name, "te") ? FieldKind::kHopByHop : FieldKind::kOther;
    case 4:
      return TokenEqualsLower(name, "host") ? FieldKind::kHost : FieldKind::kOther;
    case 6:
      if (TokenEqualsLower(name, "expect")) {
        return FieldKind::kHopByHop;
      }
      return TokenEqualsLower(name, "server") ? FieldKind::kServer : FieldKind::kOther;
    case 7:
      return TokenEqualsLower(name, "trailer") || TokenEqualsLower(name, "upgrade")
                 ? FieldKind::kHopByHop
                 : FieldKind::kOther;
    case 10:
      return TokenEqualsLower(name, "connection") || TokenEqualsLower(name, "keep-alive")
                 ? FieldKind::kHopByHop
                 : FieldKind::kOther;
    case 12:
      return TokenEqualsLower(name, "x-request-id") ? FieldKind::kRequestId : FieldKind::kOther;
    case 14:
      return TokenEqualsLower(name, "content-length") ? FieldKind::kHopByHop : FieldKind::kOther;
    case 15:
      return TokenEqualsLower(name, "x-forwarded-for") ? FieldKind::kForwardedFor
                                                       : FieldKind::kOther;
    case 16:
      return TokenEqualsLower(name, "proxy-connection") ? FieldKind::kHopByHop : FieldKind::kOther;
    case 17:
      if (TokenEqualsLower(name, "transfer-encoding")) {
        return FieldKind::kHopByHop;
      }
      return TokenEqualsLower(name, "x-forwarded-proto") ? FieldKind::kForwardedProto
                                                         : FieldKind::kOther;
    default:
      return FieldKind::kOther;
  }
}

bool HasConnectionToken(std::string_view v, std::string_view name) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view token = v.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
      token.remove_prefix(1);
    }
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
      token.remove_suffix(1);
    }
    if (EqualsIgnoreCase(token, name)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    v.remove_prefix(comma + 1);
  }
  return false;
}

bool IsProtectedFromConnection(std::string_view name) {
  return EqualsIgnoreCase(name, "host") || EqualsIgnoreCase(name, ":authority");
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

namespace {
bool IsTchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
    return true;
  }
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}
}  // namespace

bool ValidFieldName(std::string_view name) {
  if (name.empty()) {
    return false;
  }
  for (char c : name) {
    if (!IsTchar(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

bool ValidFieldValue(std::string_view value) {
  for (char ch : value) {
    auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7F) {
      return false;
    }
  }
  return value.empty() || (value.front() != ' ' && value.front() != '\t' && value.back() != ' ' &&
                           value.back() != '\t');
}

bool ValidOriginForm(std::string_view target) {
  if (target.empty() || target.front() != '/') {
    return false;
  }
  for (char ch : target) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7F || c == '#') {
      return false;
    }
  }
  return true;
}

}  // namespace skiff::http

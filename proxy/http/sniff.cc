#include "proxy/http/sniff.h"

namespace skiff::http {

namespace {
// An HTTP/2 client's connection preface (RFC 9113 3.4): "PRI" looks like a method.
constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
}  // namespace

Sniffed SniffHttp1(std::string_view b) {
  if (!b.empty() && b[0] == 'P' && b.size() <= kHttp2Preface.size() &&
      kHttp2Preface.substr(0, b.size()) == b) {
    return b.size() == kHttp2Preface.size() ? Sniffed::kHttp2 : Sniffed::kNeedMore;
  }
  if (b.size() > kHttp2Preface.size() && b.substr(0, kHttp2Preface.size()) == kHttp2Preface) {
    return Sniffed::kHttp2;
  }
  constexpr size_t kMaxMethod = 20;  // longer than any registered method
  for (size_t i = 0; i < b.size() && i <= kMaxMethod; ++i) {
    char c = b[i];
    if (c == ' ') {
      return i == 0 ? Sniffed::kOther : Sniffed::kHttp1;
    }
    if (!((c >= 'A' && c <= 'Z') || c == '-' || c == '_')) {
      return Sniffed::kOther;
    }
  }
  return b.size() > kMaxMethod ? Sniffed::kOther : Sniffed::kNeedMore;
}

}  // namespace skiff::http

#pragma once
// Protocol detection on ports whose protocol is not declared (as Istio's sniffing): is the
// start of a client's first bytes an HTTP/1 request line or HTTP/2's connection preface?
#include <string_view>

namespace skiff::http {

enum class Sniffed { kHttp1, kHttp2, kOther, kNeedMore };

// kHttp1 once a method token (upper-case letters) and a space arrived; kHttp2 for an HTTP/2
// client's whole preface ("PRI * HTTP/2.0..."); kOther as soon as a byte rules both out;
// kNeedMore while the bytes could still become either.
Sniffed SniffHttp1(std::string_view first_bytes);

}  // namespace skiff::http

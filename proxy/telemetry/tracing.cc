#include "proxy/telemetry/tracing.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "proxy/telemetry/access_log.h"

namespace skiff::telemetry {

namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool IEq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) {
      return false;
    }
  }
  return true;
}

// Parses exactly `s.size()` (<= 16) hex digits.
bool ParseHex(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 16) {
    return false;
  }
  uint64_t v = 0;
  for (char c : s) {
    c = Lower(c);
    int d = 0;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

bool ParseTraceId(std::string_view s, uint64_t* hi, uint64_t* lo) {
  if (s.size() == 32) {
    return ParseHex(s.substr(0, 16), hi) && ParseHex(s.substr(16), lo) && (*hi | *lo) != 0;
  }
  if (s.size() == 16) {
    *hi = 0;
    return ParseHex(s, lo) && *lo != 0;
  }
  return false;
}

std::string Hex(uint64_t v, int digits) {
  static const char* kHex = "0123456789abcdef";
  std::string out(static_cast<size_t>(digits), '0');
  for (int i = digits - 1; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kHex[v & 0xf];
    v >>= 4;
  }
  return out;
}

std::optional<bool> SampledValue(std::string_view v) {
  if (v == "1" || IEq(v, "true") || v == "d") {
    return true;
  }
  if (v == "0" || IEq(v, "false")) {
    return false;
  }
  return std::nullopt;
}

}  // namespace

std::string TraceIdHex(const TraceContext& ctx) {
  return ctx.trace_hi == 0 ? Hex(ctx.trace_lo, 16) : Hex(ctx.trace_hi, 16) + Hex(ctx.trace_lo, 16);
}

std::string SpanIdHex(uint64_t id) { return Hex(id, 16); }

bool IsTraceHeader(std::string_view n) {
  return IEq(n, "x-b3-traceid") || IEq(n, "x-b3-spanid") || IEq(n, "x-b3-parentspanid") ||
         IEq(n, "x-b3-sampled") || IEq(n, "x-b3-flags") || IEq(n, "b3") || IEq(n, "traceparent") ||
         IEq(n, "tracestate");
}

TraceContext StartSpan(const HeaderLookup& header, double sampling_percent,
                       const std::function<uint64_t()>& random) {
  TraceContext ctx;
  bool have_context = false;
  std::optional<bool> decision;
  // W3C: version-traceid-parentid-flags.
  if (auto tp = header("traceparent")) {
    std::string_view v = *tp;
    if (v.size() >= 55 && v[2] == '-' && v[35] == '-' && v[52] == '-' && v.substr(0, 2) != "ff") {
      uint64_t hi = 0;
      uint64_t lo = 0;
      uint64_t parent = 0;
      uint64_t flags = 0;
      if (ParseTraceId(v.substr(3, 32), &hi, &lo) && ParseHex(v.substr(36, 16), &parent) &&
          parent != 0 && ParseHex(v.substr(53, 2), &flags)) {
        ctx.trace_hi = hi;
        ctx.trace_lo = lo;
        ctx.parent_id = parent;
        have_context = true;
        decision = (flags & 1) != 0;
        if (auto ts = header("tracestate")) {
          ctx.tracestate = std::string(*ts);
        }
      }
    }
  }
  // B3 single: {traceid}-{spanid}[-{sampled}[-{parentspanid}]] or just a decision.
  if (!have_context) {
    if (auto b3 = header("b3")) {
      std::string_view v = *b3;
      if (auto d = SampledValue(v)) {
        decision = d;
        ctx.debug = v == "d";
      } else {
        size_t a = v.find('-');
        uint64_t hi = 0;
        uint64_t lo = 0;
        uint64_t span = 0;
        if (a != std::string_view::npos && ParseTraceId(v.substr(0, a), &hi, &lo)) {
          std::string_view rest = v.substr(a + 1);
          size_t b = rest.find('-');
          if (ParseHex(rest.substr(0, b), &span) && span != 0) {
            ctx.trace_hi = hi;
            ctx.trace_lo = lo;
            ctx.parent_id = span;
            have_context = true;
            if (b != std::string_view::npos) {
              std::string_view s = rest.substr(b + 1);
              s = s.substr(0, s.find('-'));
              decision = SampledValue(s);
              ctx.debug = s == "d";
            }
          }
        }
      }
    }
  }
  // B3 multi.
  if (!have_context) {
    auto tid = header("x-b3-traceid");
    auto sid = header("x-b3-spanid");
    uint64_t hi = 0;
    uint64_t lo = 0;
    uint64_t span = 0;
    if (tid && sid && ParseTraceId(*tid, &hi, &lo) && ParseHex(*sid, &span) && span != 0) {
      ctx.trace_hi = hi;
      ctx.trace_lo = lo;
      ctx.parent_id = span;
      have_context = true;
    }
  }
  if (!decision) {
    if (auto f = header("x-b3-flags"); f && *f == "1") {
      ctx.debug = true;
      decision = true;
    } else if (auto s = header("x-b3-sampled")) {
      decision = SampledValue(*s);
    }
  }
  if (!have_context) {
    ctx.trace_hi = random();
    ctx.trace_lo = random();
    if ((ctx.trace_hi | ctx.trace_lo) == 0) {
      ctx.trace_lo = 1;
    }
  }
  ctx.span_id = random();
  if (ctx.span_id == 0) {
    ctx.span_id = 1;
  }
  if (decision) {
    ctx.sampled = *decision;
  } else if (header("x-client-trace-id")) {
    // A client asks for a trace (Envoy's client sampling, 100% in Istio).
    ctx.sampled = true;
  } else if (sampling_percent >= 100) {
    ctx.sampled = true;
  } else if (sampling_percent > 0) {
    double u = static_cast<double>(random() >> 11) * (1.0 / 9007199254740992.0);
    ctx.sampled = u * 100.0 < sampling_percent;
  }
  return ctx;
}

void AppendPropagationHeaders(const TraceContext& ctx, std::string* head) {
  std::string trace = TraceIdHex(ctx);
  std::string span = SpanIdHex(ctx.span_id);
  auto line = [head](std::string_view name, std::string_view value) {
    head->append(name);
    head->append(": ");
    head->append(value);
    head->append("\r\n");
  };
  line("x-b3-traceid", trace);
  line("x-b3-spanid", span);
  if (ctx.parent_id != 0) {
    line("x-b3-parentspanid", SpanIdHex(ctx.parent_id));
  }
  line("x-b3-sampled", ctx.sampled ? "1" : "0");
  if (ctx.debug) {
    line("x-b3-flags", "1");
  }
  std::string tp = "00-";
  tp += ctx.trace_hi == 0 ? std::string(16, '0') + trace : trace;
  tp += '-';
  tp += span;
  tp += ctx.sampled ? "-01" : "-00";
  line("traceparent", tp);
  if (!ctx.tracestate.empty()) {
    line("tracestate", ctx.tracestate);
  }
}

void AppendZipkinSpan(const TraceContext& ctx, const SpanInfo& s, std::string* out) {
  auto str = [out](const char* key, std::string_view v) {
    out->push_back('"');
    out->append(key);
    out->append("\":\"");
    AppendJsonEscaped(v, out);
    out->push_back('"');
  };
  out->push_back('{');
  str("traceId", TraceIdHex(ctx));
  out->push_back(',');
  str("id", SpanIdHex(ctx.span_id));
  if (ctx.parent_id != 0) {
    out->push_back(',');
    str("parentId", SpanIdHex(ctx.parent_id));
  }
  out->push_back(',');
  str("name", s.name);
  out->append(",\"kind\":\"CLIENT\",\"timestamp\":");
  out->append(std::to_string(s.start_us));
  out->append(",\"duration\":");
  out->append(std::to_string(s.duration_us > 0 ? s.duration_us : 1));
  if (ctx.debug) {
    out->append(",\"debug\":true");
  }
  out->append(",\"localEndpoint\":{");
  str("serviceName", s.service_name);
  out->append("},\"tags\":{");
  str("component", "proxy");
  out->push_back(',');
  str("http.method", s.method);
  out->push_back(',');
  str("http.url", s.url);
  out->push_back(',');
  str("http.protocol", "HTTP/1.1");
  out->push_back(',');
  str("http.status_code", std::to_string(s.status));
  out->push_back(',');
  str("response_flags", s.response_flags.empty() ? "-" : s.response_flags);
  out->push_back(',');
  str("upstream_cluster", s.upstream_cluster.empty() ? "-" : s.upstream_cluster);
  out->push_back(',');
  str("upstream_address", s.upstream_address.empty() ? "-" : s.upstream_address);
  out->push_back(',');
  str("guid:x-request-id", s.request_id);
  out->push_back(',');
  str("user_agent", s.user_agent.empty() ? "-" : s.user_agent);
  out->push_back(',');
  str("node_id", s.node_id);
  out->push_back(',');
  str("request_size", std::to_string(s.request_size));
  out->push_back(',');
  str("response_size", std::to_string(s.response_size));
  if (s.status >= 500 || s.status == 0) {
    out->push_back(',');
    str("error", "true");
  }
  out->append("}}");
}

namespace {

// A blocking HTTP/1.1 POST with an overall deadline; true on a 2xx answer.
bool Post(const std::string& host, const std::string& port, const std::string& path,
          const std::string& body, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
    return false;
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0;
  ::freeaddrinfo(res);
  if (!ok) {
    if (fd >= 0) {
      ::close(fd);
    }
    return false;
  }
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req =
      "POST " + path + " HTTP/1.1\r\nHost: " + host + ":" + port +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n";
  req += body;
  size_t off = 0;
  while (off < req.size()) {
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) {
        continue;
      }
      ::close(fd);
      return false;
    }
    off += static_cast<size_t>(n);
  }
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);
  ::close(fd);
  if (n < 12) {
    return false;
  }
  buf[n] = '\0';
  return std::strncmp(buf, "HTTP/1.", 7) == 0 && buf[9] == '2';
}

}  // namespace

std::function<bool(std::vector<std::string>&)> ZipkinSink(const std::string& address) {
  std::string host = address;
  std::string port = "9411";
  if (size_t colon = address.rfind(':');
      colon != std::string::npos && address.find(']') == std::string::npos) {
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  return [host, port](std::vector<std::string>& batches) {
    std::string body = "[";
    for (const auto& b : batches) {
      if (b.empty()) {
        continue;
      }
      if (body.size() > 1) {
        body.push_back(',');
      }
      body += b;
    }
    body.push_back(']');
    return Post(host, port, "/api/v2/spans", body, std::chrono::milliseconds(2000));
  };
}

}  // namespace skiff::telemetry

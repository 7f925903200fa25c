#include "proxy/telemetry/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>

namespace skiff::telemetry {

void AppendTimestamp(std::chrono::system_clock::time_point t, std::string* out) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        static_cast<int>(ms % 1000));
  out->append(buf, static_cast<size_t>(n));
}

void AppendJsonEscaped(std::string_view s, std::string* out) {
  for (char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
          out->append(buf);
        } else {
          out->push_back(c);
        }
    }
  }
}

namespace {

std::string_view OrDash(std::string_view v) { return v.empty() ? std::string_view("-") : v; }

void AppendQuoted(std::string* out, std::string_view v) {
  out->push_back('"');
  out->append(OrDash(v));
  out->push_back('"');
}

void AppendNumber(std::string* out, int64_t v) { out->append(std::to_string(v)); }

}  // namespace

void AppendTextLine(const AccessLogEntry& e, std::string* out) {
  out->push_back('[');
  AppendTimestamp(e.start, out);
  out->append("] \"");
  out->append(OrDash(e.method));
  out->push_back(' ');
  out->append(OrDash(e.path));
  out->push_back(' ');
  out->append(e.protocol);
  out->append("\" ");
  AppendNumber(out, e.response_code);
  out->push_back(' ');
  out->append(OrDash(e.response_flags));
  out->push_back(' ');
  AppendNumber(out, static_cast<int64_t>(e.bytes_received));
  out->push_back(' ');
  AppendNumber(out, static_cast<int64_t>(e.bytes_sent));
  out->push_back(' ');
  AppendNumber(out, e.duration_ms);
  out->push_back(' ');
  if (e.upstream_service_time_ms >= 0) {
    AppendNumber(out, e.upstream_service_time_ms);
  } else {
    out->push_back('-');
  }
  out->push_back(' ');
  AppendQuoted(out, e.x_forwarded_for);
  out->push_back(' ');
  AppendQuoted(out, e.user_agent);
  out->push_back(' ');
  AppendQuoted(out, e.request_id);
  out->push_back(' ');
  AppendQuoted(out, e.authority);
  out->push_back(' ');
  AppendQuoted(out, e.upstream_host);
  out->push_back('\n');
}

void AppendJsonLine(const AccessLogEntry& e, std::string* out) {
  auto str = [out](const char* key, std::string_view v, bool first = false) {
    if (!first) {
      out->push_back(',');
    }
    out->push_back('"');
    out->append(key);
    out->append("\":");
    if (v.empty()) {
      out->append("null");
      return;
    }
    out->push_back('"');
    AppendJsonEscaped(v, out);
    out->push_back('"');
  };
  auto num = [out](const char* key, int64_t v) {
    out->append(",\"");
    out->append(key);
    out->append("\":");
    out->append(std::to_string(v));
  };
  out->push_back('{');
  std::string ts;
  AppendTimestamp(e.start, &ts);
  str("start_time", ts, true);
  str("method", e.method);
  str("path", e.path);
  str("protocol", e.protocol);
  num("response_code", e.response_code);
  str("response_flags", OrDash(e.response_flags));
  num("bytes_received", static_cast<int64_t>(e.bytes_received));
  num("bytes_sent", static_cast<int64_t>(e.bytes_sent));
  num("duration", e.duration_ms);
  if (e.upstream_service_time_ms >= 0) {
    num("upstream_service_time", e.upstream_service_time_ms);
  } else {
    str("upstream_service_time", {});
  }
  str("x_forwarded_for", e.x_forwarded_for);
  str("user_agent", e.user_agent);
  str("request_id", e.request_id);
  str("authority", e.authority);
  str("upstream_host", e.upstream_host);
  str("upstream_cluster", e.upstream_cluster);
  out->append("}\n");
}

std::function<bool(std::vector<std::string>&)> FileSink(const std::string& path,
                                                        std::string* error) {
  int fd = -1;
  if (path == "stdout" || path == "/dev/stdout") {
    fd = ::dup(STDOUT_FILENO);
  } else {
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  }
  if (fd < 0) {
    *error = "cannot open access log " + path + ": " + std::strerror(errno);
    return {};
  }
  auto holder = std::shared_ptr<int>(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });
  return [holder](std::vector<std::string>& batches) {
    bool ok = true;
    for (const auto& b : batches) {
      size_t off = 0;
      while (off < b.size()) {
        ssize_t n = ::write(*holder, b.data() + off, b.size() - off);
        if (n < 0) {
          if (errno == EINTR) {
            continue;
          }
          ok = false;
          break;
        }
        off += static_cast<size_t>(n);
      }
    }
    return ok;
  };
}

}  // namespace skiff::telemetry

#include "examples/coolstore/apps/app_support.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <mutex>

namespace coolstore {

namespace {
std::mutex stdout_mu;
}  // namespace

std::string RequestTarget(const web::http::http_request& req) {
  const auto& uri = req.relative_uri();
  std::string target = uri.path().empty() ? "/" : uri.path();
  if (!uri.query().empty()) {
    target += "?" + uri.query();
  }
  return target;
}

std::optional<std::string> HeaderValue(const web::http::http_headers& headers,
                                       std::string_view name) {
  auto it = headers.find(std::string(name));
  if (it == headers.end()) {
    return std::nullopt;
  }
  return it->second;
}

void Respond(const web::http::http_request& req, const web::http::http_response& resp) {
  std::string line = req.method() + " " + RequestTarget(req) + " " +
                     std::to_string(resp.status_code()) +
                     " host=" + HeaderValue(req.headers(), "Host").value_or("-") + "\n";
  {
    std::lock_guard<std::mutex> lock(stdout_mu);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }
  try {
    req.reply(resp).then([](const pplx::task<void>& t) {
      try {
        t.get();
      } catch (const std::exception& e) {
        spdlog::debug("reply not delivered: {}", e.what());
      }
    });
  } catch (const std::exception& e) {
    spdlog::debug("reply not delivered: {}", e.what());
  }
}

web::http::http_response TextResponse(web::http::status_code status, std::string body) {
  web::http::http_response resp(status);
  resp.set_body(std::move(body), "text/plain; charset=utf-8");
  return resp;
}

sigset_t BlockStopSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int WaitForStopSignal(const sigset_t& signals) {
  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  return sig;
}

std::optional<std::string> ParseHttpUrl(std::string_view value, HttpUrl* out) {
  constexpr std::string_view kScheme = "http://";
  if (value.substr(0, kScheme.size()) != kScheme) {
    return "expected an http:// URL such as http://catalog:8080";
  }
  std::string_view rest = value.substr(kScheme.size());
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.empty()) {
    return "expected a host after http://";
  }
  if (authority.find('@') != std::string_view::npos) {
    return "user info (user@host) is not supported";
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return "a query or fragment is not supported";
  }
  // host, [v6]:port or host:port; the port, when present, must be a number 1-65535.
  auto colon = authority.rfind(':');
  auto bracket = authority.rfind(']');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    std::string_view port = authority.substr(colon + 1);
    int n = 0;
    for (char c : port) {
      if (c < '0' || c > '9' || n > 65535) {
        return "invalid port '" + std::string(port) + "'";
      }
      n = n * 10 + (c - '0');
    }
    if (port.empty() || n < 1 || n > 65535) {
      return "invalid port '" + std::string(port) + "'";
    }
    if (colon == 0) {
      return "expected a host after http://";
    }
  }
  std::string full = std::string(value);
  if (!web::uri::validate(full)) {
    return "not a valid URL";
  }
  while (!path.empty() && path.back() == '/') {
    path.remove_suffix(1);
  }
  out->base = std::string(kScheme) + std::string(authority);
  out->authority = std::string(authority);
  out->path = std::string(path);
  return std::nullopt;
}

bool OpenListener(web::http::experimental::listener::http_listener* listener) {
  try {
    listener->open().wait();
  } catch (const std::exception& e) {
    spdlog::error("cannot listen on {}: {}", listener->uri().to_string(), e.what());
    return false;
  }
  return true;
}

}  // namespace coolstore

#pragma once
// What the coolstore demo apps share: the access log line, replying without leaving a
// failed pplx task unobserved, stop-signal handling and URL flag parsing.
// _TURN_OFF_PLATFORM_STRING is defined for every file of these targets (CMakeLists.txt):
// cpprest's U() macro would otherwise break fmt/spdlog.
#include <cpprest/http_listener.h>
#include <cpprest/http_msg.h>
#include <signal.h>

#include <optional>
#include <string>
#include <string_view>

namespace coolstore {

// Replies with `resp` and writes the request's access log line to stdout (flushed):
//   GET /items 200 host=catalog.coolstore.svc.cluster.local:8080
// A failed reply (the client went away) is logged, never left unobserved (pplx would
// terminate the process).
void Respond(const web::http::http_request& req, const web::http::http_response& resp);

// A response with a text/plain body.
web::http::http_response TextResponse(web::http::status_code status, std::string body);

// The request's path and query, as it appeared on the request line.
std::string RequestTarget(const web::http::http_request& req);

// The value of header `name` in `headers`, or nullopt.
std::optional<std::string> HeaderValue(const web::http::http_headers& headers,
                                       std::string_view name);

// Blocks SIGINT and SIGTERM in the calling thread and in every thread it starts later; call
// first thing in main(), then WaitForStopSignal() once serving.
sigset_t BlockStopSignals();
// Waits for SIGINT or SIGTERM; returns the signal number.
int WaitForStopSignal(const sigset_t& signals);

// A parsed http:// URL: the authority exactly as written (host[:port]) and the path without
// its trailing '/'.
struct HttpUrl {
  std::string base;       // "http://" + authority, what an http_client connects to
  std::string authority;  // host[:port], what goes into the Host header
  std::string path;       // "" or "/prefix"
};

// Parses `value` as an http:// URL with a host, optional port and optional path (no query,
// fragment or user info). Returns the error message ("expected ...") on failure.
std::optional<std::string> ParseHttpUrl(std::string_view value, HttpUrl* out);

// Opens `listener`; logs the reason and returns false when it cannot (e.g. port in use).
bool OpenListener(web::http::experimental::listener::http_listener* listener);

}  // namespace coolstore

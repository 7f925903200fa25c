// coolstore-apigateway: the coolstore demo's API gateway. GET /api/catalog fetches the
// catalog's items through the app's sidecar (--proxy) and passes on Istio's tracing headers.
#include <cpprest/http_client.h>
#include <cpprest/http_listener.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "common/flags.h"
#include "common/logging.h"
#include "examples/coolstore/apps/app_support.h"

namespace {

using web::http::http_request;
using web::http::http_response;
using web::http::methods;
using web::http::status_codes;

// The headers an application must copy from its inbound request to its outbound requests for
// Istio's distributed tracing (B3, W3C Trace Context, Lightstep) to join the spans.
constexpr const char* kTracingHeaders[] = {
    "x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-b3-flags",   "b3",           "traceparent", "tracestate",        "x-ot-span-context",
};

// Headers the demo's routing rules match on (the catalog dark launch), copied the same way.
constexpr const char* kRoutingHeaders[] = {"x-dark-launch", "end-user"};

constexpr const char* kCatalogError = "error calling Catalog service";

class ApiGateway {
 public:
  // Requests go to `catalog`; with `proxy`, the connection is made to the proxy instead and
  // the Host header names the catalog, so the sidecar routes by it (origin-form request).
  ApiGateway(coolstore::HttpUrl catalog, std::optional<coolstore::HttpUrl> proxy,
             std::chrono::milliseconds timeout)
      : catalog_(std::move(catalog)), items_path_(catalog_.path + "/items") {
    web::http::client::http_client_config config;
    config.set_timeout(timeout);
    client_ = std::make_unique<web::http::client::http_client>(
        web::uri(proxy ? proxy->base : catalog_.base), config);
  }

  void Handle(const http_request& req) {
    std::string path = req.relative_uri().path();
    if (path == "/health") {
      coolstore::Respond(req, coolstore::TextResponse(status_codes::OK, "ok\n"));
      return;
    }
    if (path != "/api/catalog") {
      coolstore::Respond(req, coolstore::TextResponse(status_codes::NotFound,
                                                      "not found; try GET /api/catalog\n"));
      return;
    }
    if (req.method() != methods::GET) {
      auto resp = coolstore::TextResponse(status_codes::MethodNotAllowed, "use GET\n");
      resp.headers().add("Allow", "GET");
      coolstore::Respond(req, resp);
      return;
    }
    GetCatalog(req);
  }

 private:
  void GetCatalog(const http_request& req) {
    http_request out(methods::GET);
    out.set_request_uri(web::uri(items_path_));
    out.headers().add("Host", catalog_.authority);
    out.headers().add("Accept", "application/json");
    for (const char* name : kTracingHeaders) {
      if (auto value = coolstore::HeaderValue(req.headers(), name)) {
        out.headers().add(name, *value);
      }
    }
    for (const char* name : kRoutingHeaders) {
      if (auto value = coolstore::HeaderValue(req.headers(), name)) {
        out.headers().add(name, *value);
      }
    }
    try {
      // Copies, not `this`: a continuation may outlive the gateway at shutdown.
      std::string target = catalog_.authority + items_path_;
      client_->request(out).then([target, req](const pplx::task<http_response>& t) {
        try {
          http_response resp = t.get();
          if (resp.status_code() < 200 || resp.status_code() > 299) {
            spdlog::warn("catalog {} answered {}", target, resp.status_code());
            Fail(req);
            return;
          }
          auto version = coolstore::HeaderValue(resp.headers(), "x-catalog-version");
          resp.extract_vector().then(
              [req, version](const pplx::task<std::vector<unsigned char>>& b) {
                try {
                  auto bytes = b.get();
                  http_response ok(status_codes::OK);
                  ok.set_body(std::string(bytes.begin(), bytes.end()), "application/json");
                  if (version) {
                    ok.headers().add("x-catalog-version", *version);
                  }
                  coolstore::Respond(req, ok);
                } catch (const std::exception& e) {
                  spdlog::warn("reading the catalog's response: {}", e.what());
                  Fail(req);
                }
              });
        } catch (const std::exception& e) {
          spdlog::warn("calling catalog {}: {}", target, e.what());
          Fail(req);
        }
      });
    } catch (const std::exception& e) {
      spdlog::warn("calling catalog {}{}: {}", catalog_.authority, items_path_, e.what());
      Fail(req);
    }
  }

  static void Fail(const http_request& req) {
    coolstore::Respond(req, coolstore::TextResponse(status_codes::InternalError, kCatalogError));
  }

  const coolstore::HttpUrl catalog_;
  const std::string items_path_;
  std::unique_ptr<web::http::client::http_client> client_;
};

skiff::FlagSet::Parser UrlFlag(coolstore::HttpUrl* target, bool allow_path) {
  return [target, allow_path](std::string_view v) -> std::optional<std::string> {
    coolstore::HttpUrl url;
    if (auto err = coolstore::ParseHttpUrl(v, &url)) {
      return err;
    }
    if (!allow_path && !url.path.empty()) {
      return std::string("expected http://host:port without a path");
    }
    *target = url;
    return std::nullopt;
  };
}

int Run(int argc, char** argv) {
  sigset_t signals = coolstore::BlockStopSignals();
  std::string log_level = "info";
  std::string address = "127.0.0.1";
  int64_t port = 8080;
  coolstore::HttpUrl catalog;
  coolstore::ParseHttpUrl("http://catalog.coolstore.svc.cluster.local:8080", &catalog);
  coolstore::HttpUrl proxy;
  std::chrono::milliseconds timeout{5000};
  skiff::FlagSet flags("coolstore-apigateway",
                       "The coolstore demo's API gateway: GET /api/catalog returns the catalog "
                       "service's items,\ncalled through the app's sidecar (--proxy) with the "
                       "tracing headers passed on.");
  flags.AddString("address", &address, "listen address (default 127.0.0.1)", "ADDR");
  flags.AddInt("port", &port, 1, 65535, "listen port (default 8080)");
  flags.AddCustom("catalog-url", UrlFlag(&catalog, true),
                  "the catalog service (default http://catalog.coolstore.svc.cluster.local:8080)",
                  "URL");
  flags.AddCustom("proxy", UrlFlag(&proxy, false),
                  "send catalog requests to this HTTP proxy (the app's sidecar, e.g. "
                  "http://127.0.0.1:15001), with Host naming the catalog; default: direct",
                  "URL");
  flags.AddDuration("timeout", &timeout, "catalog request timeout (default 5s)");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  if (timeout.count() <= 0) {
    std::fprintf(stderr,
                 "coolstore-apigateway: invalid value for flag '--timeout': must be positive\n"
                 "Try 'coolstore-apigateway --help'.\n");
    return skiff::kExitUsage;
  }
  skiff::SetupLogging("coolstore-apigateway", log_level);

  std::optional<coolstore::HttpUrl> via;
  if (flags.WasSet("proxy")) {
    via = proxy;
  }
  ApiGateway gateway(catalog, via, timeout);
  std::string url = "http://" + address + ":" + std::to_string(port);
  web::http::experimental::listener::http_listener listener(url);
  listener.support([&gateway](const http_request& req) { gateway.Handle(req); });
  if (!coolstore::OpenListener(&listener)) {
    return EXIT_FAILURE;
  }
  spdlog::info("apigateway listening on {}; catalog {}{}", url, catalog.base,
               via ? " via proxy " + via->base : std::string());

  int sig = coolstore::WaitForStopSignal(signals);
  spdlog::info("signal {}: stopping", sig);
  try {
    listener.close().wait();
  } catch (const std::exception& e) {
    spdlog::warn("closing the listener: {}", e.what());
  }
  return EXIT_SUCCESS;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {  // e.g. an --address cpprest cannot listen on
    std::fprintf(stderr, "%s: %s\n", "coolstore-apigateway", e.what());
    return EXIT_FAILURE;
  }
}

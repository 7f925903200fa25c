// coolstore-apigateway: the coolstore demo's API gateway. GET /api/catalog fetches the
// catalog's items over HTTP/1.1 and GET /api/stock/{itemId} looks an item's stock up over
// gRPC (coolstore.v1.Stock), both through the app's sidecar (--proxy) when given, passing on
// Istio's tracing headers.
#include <cpprest/http_client.h>
#include <cpprest/http_listener.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/flags.h"
#include "common/logging.h"
#include "coolstore/v1/stock.grpc.pb.h"
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

// Calls fn(name, value) for each tracing and routing header of `req`: what an outbound call
// carries on (HTTP headers to catalog, gRPC metadata to stock).
template <typename Fn>
void ForEachPropagated(const http_request& req, Fn&& fn) {
  for (const char* name : kTracingHeaders) {
    if (auto value = coolstore::HeaderValue(req.headers(), name)) {
      fn(name, *value);
    }
  }
  for (const char* name : kRoutingHeaders) {
    if (auto value = coolstore::HeaderValue(req.headers(), name)) {
      fn(name, *value);
    }
  }
}

constexpr const char* kCatalogError = "error calling Catalog service";
constexpr const char* kStockError = "error calling Stock service";
constexpr std::string_view kStockPrefix = "/api/stock/";

class ApiGateway {
 public:
  // Requests go to `catalog`; with `proxy`, the connection is made to the proxy instead and
  // the Host header names the catalog, so the sidecar routes by it (origin-form request).
  // Stock lookups go to `stock` (HOST:PORT) over h2c; with `proxy`, the channel connects to
  // the proxy and :authority names the stock service, so the sidecar routes by it.
  ApiGateway(coolstore::HttpUrl catalog, const std::string& stock,
             std::optional<coolstore::HttpUrl> proxy, std::chrono::milliseconds timeout)
      : catalog_(std::move(catalog)), items_path_(catalog_.path + "/items"), timeout_(timeout) {
    web::http::client::http_client_config config;
    config.set_timeout(timeout);
    client_ = std::make_unique<web::http::client::http_client>(
        web::uri(proxy ? proxy->base : catalog_.base), config);
    grpc::ChannelArguments args;
    if (proxy) {
      args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, stock);
    }
    stock_ = coolstore::v1::Stock::NewStub(grpc::CreateCustomChannel(
        proxy ? proxy->authority : stock, grpc::InsecureChannelCredentials(), args));
  }

  void Handle(const http_request& req) {
    std::string path = req.relative_uri().path();
    if (path == "/health") {
      coolstore::Respond(req, coolstore::TextResponse(status_codes::OK, "ok\n"));
      return;
    }
    bool stock = path.size() > kStockPrefix.size() && path.rfind(kStockPrefix, 0) == 0 &&
                 path.find('/', kStockPrefix.size()) == std::string::npos;
    if (path != "/api/catalog" && !stock) {
      coolstore::Respond(
          req, coolstore::TextResponse(status_codes::NotFound,
                                       "not found; try GET /api/catalog or /api/stock/ITEM\n"));
      return;
    }
    if (req.method() != methods::GET) {
      auto resp = coolstore::TextResponse(status_codes::MethodNotAllowed, "use GET\n");
      resp.headers().add("Allow", "GET");
      coolstore::Respond(req, resp);
      return;
    }
    if (stock) {
      std::string item;
      try {
        item = web::uri::decode(path.substr(kStockPrefix.size()));
      } catch (const std::exception&) {
        coolstore::Respond(
            req, coolstore::TextResponse(status_codes::BadRequest, "bad item id in the path\n"));
        return;
      }
      GetStock(req, item);
    } else {
      GetCatalog(req);
    }
  }

 private:
  // One Lookup in flight: what the callback needs, kept alive until it runs.
  struct StockCall {
    grpc::ClientContext ctx;
    coolstore::v1::StockRequest request;
    coolstore::v1::StockReply reply;
  };

  // GET /api/stock/{itemId}: 200 {"itemId", "quantity", "version"} with x-stock-version, or
  // 500 kStockError with x-grpc-status naming the call's gRPC status code.
  void GetStock(const http_request& req, const std::string& item) {
    auto call = std::make_shared<StockCall>();
    call->request.set_item_id(item);
    call->ctx.set_deadline(std::chrono::system_clock::now() + timeout_);
    ForEachPropagated(req, [&](const char* name, const std::string& value) {
      call->ctx.AddMetadata(name, value);
    });
    stock_->async()->Lookup(
        &call->ctx, &call->request, &call->reply, [call, req](const grpc::Status& st) {
          if (!st.ok()) {
            spdlog::warn("stock Lookup({}) failed: {} {}", call->request.item_id(),
                         static_cast<int>(st.error_code()), st.error_message());
            auto resp = coolstore::TextResponse(status_codes::InternalError, kStockError);
            resp.headers().add("x-grpc-status", std::to_string(static_cast<int>(st.error_code())));
            coolstore::Respond(req, resp);
            return;
          }
          nlohmann::json body = {{"itemId", call->reply.item_id()},
                                 {"quantity", call->reply.quantity()},
                                 {"version", call->reply.version()}};
          http_response ok(status_codes::OK);
          ok.set_body(body.dump(), "application/json");
          ok.headers().add("x-stock-version", call->reply.version());
          coolstore::Respond(req, ok);
        });
  }

  void GetCatalog(const http_request& req) {
    http_request out(methods::GET);
    out.set_request_uri(web::uri(items_path_));
    out.headers().add("Host", catalog_.authority);
    out.headers().add("Accept", "application/json");
    ForEachPropagated(
        req, [&](const char* name, const std::string& value) { out.headers().add(name, value); });
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
  const std::chrono::milliseconds timeout_;
  std::unique_ptr<web::http::client::http_client> client_;
  std::unique_ptr<coolstore::v1::Stock::Stub> stock_;
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
  std::string stock = "stock.coolstore.svc.cluster.local:9090";
  coolstore::HttpUrl proxy;
  std::chrono::milliseconds timeout{5000};
  skiff::FlagSet flags("coolstore-apigateway",
                       "The coolstore demo's API gateway: GET /api/catalog returns the catalog "
                       "service's items,\nGET /api/stock/ITEM an item's stock from the stock "
                       "service (gRPC), called through\nthe app's sidecar (--proxy) with the "
                       "tracing headers passed on.");
  flags.AddString("address", &address, "listen address (default 127.0.0.1)", "ADDR");
  flags.AddInt("port", &port, 1, 65535, "listen port (default 8080)");
  flags.AddCustom("catalog-url", UrlFlag(&catalog, true),
                  "the catalog service (default http://catalog.coolstore.svc.cluster.local:8080)",
                  "URL");
  flags.AddString("stock-address", &stock,
                  "the stock service, gRPC over h2c (default "
                  "stock.coolstore.svc.cluster.local:9090)",
                  "HOST:PORT");
  flags.AddCustom("proxy", UrlFlag(&proxy, false),
                  "send catalog requests and stock calls to this proxy (the app's sidecar, "
                  "e.g. http://127.0.0.1:15001), with Host / :authority naming the service; "
                  "default: direct",
                  "URL");
  flags.AddDuration("timeout", &timeout,
                    "catalog request timeout and stock call deadline (default 5s)");
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
  if (stock.empty() || stock.find_first_of("/ ") != std::string::npos) {
    std::fprintf(stderr,
                 "coolstore-apigateway: invalid value for flag '--stock-address': expected "
                 "HOST:PORT\nTry 'coolstore-apigateway --help'.\n");
    return skiff::kExitUsage;
  }
  ApiGateway gateway(catalog, stock, via, timeout);
  std::string url = "http://" + address + ":" + std::to_string(port);
  web::http::experimental::listener::http_listener listener(url);
  listener.support([&gateway](const http_request& req) { gateway.Handle(req); });
  if (!coolstore::OpenListener(&listener)) {
    return EXIT_FAILURE;
  }
  spdlog::info("apigateway listening on {}; catalog {}, stock {}{}", url, catalog.base, stock,
               via ? " via proxy " + via->base : std::string());

  int sig = coolstore::WaitForStopSignal(signals);
  spdlog::info("signal {}: stopping", sig);
  try {
    listener.close().wait();
  } catch (const std::exception& e) {
    spdlog::warn("closing the listener: {}", e.what());
  }
  // gRPC's callback threads may still be winding down the stock channel's completion queue;
  // the static destructors raced them at exit (a double free in grpc_cq_internal_unref under
  // ASan, now and then). The listener is closed and only the log is left to flush: leave
  // without running them.
  spdlog::shutdown();
  std::fflush(nullptr);
  std::_Exit(EXIT_SUCCESS);
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

// coolstore-catalog: the coolstore demo's product catalog (v1, or v2 with image URLs), with a
// chaos switch (POST /blowup) that makes a share of requests fail with a chosen status.
#include <cpprest/http_listener.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "common/flags.h"
#include "common/logging.h"
#include "examples/coolstore/apps/app_support.h"

namespace {

using web::http::http_request;
using web::http::http_response;
using web::http::methods;
using web::http::status_codes;

struct Product {
  const char* item_id;
  const char* name;
  const char* desc;
  double price;
};

constexpr Product kProducts[] = {
    {"329299", "Red Fedora", "Official Red Hat Fedora", 34.99},
    {"329199", "Forge Laptop Sticker", "JBoss Community Forge Project Sticker", 8.50},
    {"165613", "Solid Performance Polo", "Moisture-wicking, antimicrobial 100% polyester polo",
     17.80},
    {"165614", "Ogio Caliber Polo", "Moisture-wicking 100% polyester polo with a stripe", 28.75},
    {"165954", "16 oz. Vortex Tumbler", "Double-wall insulated, BPA-free acrylic tumbler", 6.00},
    {"444434", "Pebble Smart Watch", "Smart glass and stainless steel watch", 24.00},
};

std::string ItemsJson(const std::string& version) {
  nlohmann::json items = nlohmann::json::array();
  for (const auto& p : kProducts) {
    nlohmann::json item = {
        {"itemId", p.item_id}, {"name", p.name}, {"desc", p.desc}, {"price", p.price}};
    if (version == "v2") {
      item["imageUrl"] = std::string("https://coolstore.example.com/images/") + p.item_id + ".jpg";
    }
    items.push_back(std::move(item));
  }
  return items.dump();
}

// The chaos switch: while active, `percentage` percent of requests answer `status`.
struct Chaos {
  bool active = false;
  int status = 0;
  double percentage = 0;

  [[nodiscard]] nlohmann::json ToJson() const {
    nlohmann::json j = {{"active", active}};
    if (active) {
      j["type"] = std::to_string(status);
      if (percentage == std::floor(percentage)) {
        j["percentage"] = static_cast<int64_t>(percentage);
      } else {
        j["percentage"] = percentage;
      }
    }
    return j;
  }
};

// Parses a /blowup body: {"active":true,"type":"500","percentage":50} or {"active":false}.
// Returns the new state, or an error message naming the field.
std::variant<Chaos, std::string> ParseBlowup(const std::string& body) {
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return std::string(
        "body is not valid JSON; expected {\"active\":true,\"type\":\"500\",\"percentage\":50} "
        "or {\"active\":false}");
  }
  if (!j.is_object()) {
    return std::string("body must be a JSON object");
  }
  for (const auto& [key, value] : j.items()) {
    if (key != "active" && key != "type" && key != "percentage") {
      return "unknown field \"" + key + "\" (expected active, type, percentage)";
    }
  }
  Chaos chaos;
  auto active = j.find("active");
  if (active == j.end() || !active->is_boolean()) {
    return std::string("field \"active\": expected true or false");
  }
  chaos.active = active->get<bool>();
  if (!chaos.active) {
    return chaos;
  }
  auto type = j.find("type");
  std::string status_text;
  if (type != j.end() && type->is_string()) {
    status_text = type->get<std::string>();
  } else if (type != j.end() && type->is_number_integer()) {
    status_text = std::to_string(type->get<int64_t>());
  } else {
    return std::string("field \"type\": expected the HTTP status to answer, e.g. \"500\"");
  }
  if (status_text.size() != 3 || status_text.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(status_text) < 400 || std::stoi(status_text) > 599) {
    return "field \"type\": \"" + status_text + "\" is not an HTTP error status (400-599)";
  }
  chaos.status = std::stoi(status_text);
  auto percentage = j.find("percentage");
  if (percentage == j.end() || !percentage->is_number()) {
    return std::string("field \"percentage\": expected a number from 0 to 100");
  }
  chaos.percentage = percentage->get<double>();
  if (!(chaos.percentage >= 0 && chaos.percentage <= 100)) {
    return std::string("field \"percentage\": must be between 0 and 100");
  }
  return chaos;
}

class CatalogService {
 public:
  explicit CatalogService(std::string version)
      : version_(std::move(version)), items_(ItemsJson(version_)) {
    std::random_device rd;
    std::seed_seq seed{rd(), rd(), rd(), rd()};
    rng_.seed(seed);
  }

  void Handle(const http_request& req) {
    std::string path = req.relative_uri().path();
    if (path != "/stats") {
      Count(path);
    }
    if (path == "/blowup") {
      HandleBlowup(req);
      return;
    }
    if (auto status = DrawFault()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++errors_;
      }
      Reply(req, coolstore::TextResponse(
                     static_cast<web::http::status_code>(*status),
                     "catalog " + version_ + ": injected fault " + std::to_string(*status) + "\n"));
      return;
    }
    if (path != "/items" && path != "/health" && path != "/stats") {
      Reply(req, coolstore::TextResponse(status_codes::NotFound,
                                         "not found; try GET /items, /health or /stats\n"));
      return;
    }
    if (req.method() != methods::GET) {
      auto resp = coolstore::TextResponse(status_codes::MethodNotAllowed, "use GET\n");
      resp.headers().add("Allow", "GET");
      Reply(req, std::move(resp));
      return;
    }
    if (path == "/items") {
      http_response resp(status_codes::OK);
      resp.set_body(items_, "application/json");
      Reply(req, std::move(resp));
    } else if (path == "/health") {
      Reply(req, coolstore::TextResponse(status_codes::OK, "ok\n"));
    } else {
      http_response resp(status_codes::OK);
      resp.set_body(StatsJson(), "application/json");
      Reply(req, std::move(resp));
    }
  }

 private:
  void Reply(const http_request& req, http_response resp) {
    resp.headers().add("x-catalog-version", version_);
    coolstore::Respond(req, resp);
  }

  void HandleBlowup(const http_request& req) {
    if (req.method() == methods::GET) {
      ReplyChaos(req);
      return;
    }
    if (req.method() != methods::POST) {
      auto resp = coolstore::TextResponse(status_codes::MethodNotAllowed, "use POST or GET\n");
      resp.headers().add("Allow", "GET, POST");
      Reply(req, std::move(resp));
      return;
    }
    http_request body_source = req;  // extract_* is non-const on the shared message
    body_source.extract_utf8string(/*ignore_content_type=*/true)
        .then([this, req](const pplx::task<std::string>& t) {
          try {
            auto parsed = ParseBlowup(t.get());
            if (auto* err = std::get_if<std::string>(&parsed)) {
              Reply(req,
                    coolstore::TextResponse(status_codes::BadRequest, "blowup: " + *err + "\n"));
              return;
            }
            auto chaos = std::get<Chaos>(parsed);
            {
              std::lock_guard<std::mutex> lock(mu_);
              chaos_ = chaos;
            }
            spdlog::info("chaos {}", chaos.ToJson().dump());
            ReplyChaos(req);
          } catch (const std::exception& e) {
            Reply(req, coolstore::TextResponse(
                           status_codes::BadRequest,
                           std::string("blowup: cannot read body: ") + e.what() + "\n"));
          }
        });
  }

  void ReplyChaos(const http_request& req) {
    Chaos chaos;
    {
      std::lock_guard<std::mutex> lock(mu_);
      chaos = chaos_;
    }
    http_response resp(status_codes::OK);
    resp.set_body(chaos.ToJson().dump(), "application/json");
    Reply(req, std::move(resp));
  }

  // A fresh random draw per request: the fault status, or nullopt to serve normally.
  std::optional<int> DrawFault() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!chaos_.active) {
      return std::nullopt;
    }
    std::uniform_real_distribution<double> dist(0.0, 100.0);
    if (dist(rng_) < chaos_.percentage) {
      return chaos_.status;
    }
    return std::nullopt;
  }

  void Count(const std::string& path) {
    bool known = path == "/items" || path == "/health" || path == "/blowup";
    std::lock_guard<std::mutex> lock(mu_);
    ++requests_;
    ++by_path_[known ? path : "other"];
  }

  std::string StatsJson() {
    std::lock_guard<std::mutex> lock(mu_);
    nlohmann::json paths = nlohmann::json::object();
    for (const auto& [path, n] : by_path_) {
      paths[path] = n;
    }
    return nlohmann::json{
        {"version", version_}, {"requests", requests_}, {"errors", errors_}, {"paths", paths}}
        .dump();
  }

  const std::string version_;
  const std::string items_;
  std::mutex mu_;
  std::mt19937_64 rng_;
  Chaos chaos_;
  uint64_t requests_ = 0;
  uint64_t errors_ = 0;
  std::map<std::string, uint64_t> by_path_;
};

int Run(int argc, char** argv) {
  sigset_t signals = coolstore::BlockStopSignals();
  std::string log_level = "info";
  std::string address = "127.0.0.1";
  int64_t port = 8080;
  std::string version = "v1";
  skiff::FlagSet flags("coolstore-catalog",
                       "The coolstore demo's catalog service: GET /items lists products (v2 adds "
                       "imageUrl),\nPOST /blowup injects faults, GET /stats counts requests.");
  flags.AddString("address", &address, "listen address (default 127.0.0.1)", "ADDR");
  flags.AddInt("port", &port, 1, 65535, "listen port (default 8080)");
  flags.AddCustom(
      "version",
      [&version](std::string_view v) -> std::optional<std::string> {
        if (v != "v1" && v != "v2") {
          return "expected v1 or v2";
        }
        version = std::string(v);
        return std::nullopt;
      },
      "catalog version to serve, v1 or v2 (default v1); a bare --version prints the program "
      "version",
      "v1|v2");
  skiff::AddLogLevelFlag(flags, &log_level);
  // FlagSet answers a bare "--version" itself (program version); "--version v2" selects the
  // catalog version, so hand it over as "--version=v2".
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--version" && i + 1 < argc && argv[i + 1][0] != '-') {
      arg += "=" + std::string(argv[++i]);
    }
    args.push_back(std::move(arg));
  }
  if (auto code = flags.Parse(args)) {
    return *code;
  }
  skiff::SetupLogging("coolstore-catalog", log_level);

  CatalogService service(version);
  std::string url = "http://" + address + ":" + std::to_string(port);
  web::http::experimental::listener::http_listener listener(url);
  listener.support([&service](const http_request& req) { service.Handle(req); });
  if (!coolstore::OpenListener(&listener)) {
    return EXIT_FAILURE;
  }
  spdlog::info("catalog {} listening on {}", version, url);

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
    std::fprintf(stderr, "%s: %s\n", "coolstore-catalog", e.what());
    return EXIT_FAILURE;
  }
}

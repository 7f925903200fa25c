#define _TURN_OFF_PLATFORM_STRING
#include "operator/source/kube/client.h"

#include <cpprest/containerstream.h>
#include <cpprest/http_client.h>
#include <spdlog/spdlog.h>

#include <boost/asio/ssl.hpp>
#include <fstream>
#include <sstream>

namespace skiff::kube {

namespace http = web::http;

struct Client::Impl {
  std::unique_ptr<http::client::http_client> api;    // short requests
  std::unique_ptr<http::client::http_client> watch;  // long-lived streams
  pplx::cancellation_token_source cancel;
  std::mutex mu;
};

namespace {

http::client::http_client_config MakeConfig(const ClusterConfig& c, std::chrono::seconds timeout) {
  http::client::http_client_config cfg;
  cfg.set_timeout(timeout);
  cfg.set_validate_certificates(!c.insecure_skip_verify);
  std::string ca = c.ca_pem;
  std::string cert = c.client_cert_pem;
  std::string key = c.client_key_pem;
  cfg.set_ssl_context_callback([ca, cert, key](boost::asio::ssl::context& ctx) {
    if (!ca.empty()) {
      ctx.add_certificate_authority(boost::asio::buffer(ca.data(), ca.size()));
    }
    if (!cert.empty()) {
      ctx.use_certificate_chain(boost::asio::buffer(cert.data(), cert.size()));
      ctx.use_private_key(boost::asio::buffer(key.data(), key.size()),
                          boost::asio::ssl::context::pem);
    }
  });
  return cfg;
}

std::string ReadToken(const ClusterConfig& c) {
  if (c.token_file.empty()) {
    return c.token;
  }
  std::ifstream in(c.token_file);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) {
    t.pop_back();
  }
  return t.empty() ? c.token : t;
}

Response FromHttp(http::http_response& r) {
  Response out;
  out.status = r.status_code();
  std::string text;
  try {
    text = r.extract_utf8string(true).get();
  } catch (const std::exception& e) {
    out.status = 0;
    out.error = std::string("reading the response: ") + e.what();
    return out;
  }
  if (!text.empty()) {
    out.body = nlohmann::json::parse(text, nullptr, false);
    if (out.body.is_discarded()) {
      out.body = nlohmann::json();
    }
  }
  if (!out.ok()) {
    if (out.body.is_object() && out.body.contains("message")) {
      out.error = out.body["message"].get<std::string>();
    } else {
      out.error = text.substr(0, 300);
    }
  }
  return out;
}

}  // namespace

std::string Response::Describe() const {
  if (status == 0) {
    return error;
  }
  return std::to_string(status) + (error.empty() ? "" : ": " + error);
}

Client::Client(ClusterConfig config) : config_(std::move(config)), impl_(std::make_unique<Impl>()) {
  impl_->api = std::make_unique<http::client::http_client>(
      config_.server, MakeConfig(config_, std::chrono::seconds(30)));
  impl_->watch = std::make_unique<http::client::http_client>(
      config_.server, MakeConfig(config_, std::chrono::seconds(660)));
}

Client::~Client() { Cancel(); }

void Client::Cancel() { impl_->cancel.cancel(); }

Response Client::Get(const std::string& path) { return Send("GET", path, nlohmann::json()); }

Response Client::Send(const std::string& method, const std::string& path,
                      const nlohmann::json& body) {
  http::http_request req(method);
  req.set_request_uri(path);
  std::string token = ReadToken(config_);
  if (!token.empty()) {
    req.headers().add("Authorization", "Bearer " + token);
  }
  req.headers().add("Accept", "application/json");
  if (!body.is_null()) {
    req.set_body(body.dump(),
                 method == "PATCH" ? "application/merge-patch+json" : "application/json");
  }
  try {
    auto r = impl_->api->request(req, impl_->cancel.get_token()).get();
    return FromHttp(r);
  } catch (const std::exception& e) {
    Response out;
    out.error = config_.server + ": " + e.what();
    return out;
  }
}

Response Client::Watch(const std::string& path,
                       const std::function<bool(const nlohmann::json&)>& on_event, int* events) {
  *events = 0;
  http::http_request req(http::methods::GET);
  req.set_request_uri(path);
  std::string token = ReadToken(config_);
  if (!token.empty()) {
    req.headers().add("Authorization", "Bearer " + token);
  }
  req.headers().add("Accept", "application/json");
  Response out;
  try {
    auto r = impl_->watch->request(req, impl_->cancel.get_token()).get();
    if (r.status_code() != http::status_codes::OK) {
      return FromHttp(r);
    }
    out.status = 200;
    auto body = r.body();
    while (true) {
      concurrency::streams::container_buffer<std::string> line;
      size_t n = body.read_line(line).get();
      if (n == 0 && body.is_eof()) {
        break;
      }
      const std::string& text = line.collection();
      if (text.empty()) {
        continue;
      }
      auto ev = nlohmann::json::parse(text, nullptr, false);
      if (ev.is_discarded() || !ev.is_object()) {
        out.status = 0;
        out.error = "watch " + path + ": malformed event";
        break;
      }
      ++*events;
      if (!on_event(ev)) {
        break;
      }
    }
  } catch (const std::exception& e) {
    out.status = 0;
    out.error = config_.server + ": " + e.what();
  }
  return out;
}

}  // namespace skiff::kube

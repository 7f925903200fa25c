#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "operator/webhook/admission.h"
#include "operator/webhook/cert_store.h"
#include "operator/webhook/certs.h"
#include "operator/webhook/server.h"

using skiff::webhook::CertState;
using skiff::webhook::CheckCerts;
using skiff::webhook::GenerateCerts;
using skiff::webhook::ServingNames;

namespace {

nlohmann::json Request(const std::string& operation, nlohmann::json object) {
  return {{"apiVersion", "admission.k8s.io/v1"},
          {"kind", "AdmissionReview"},
          {"request",
           {{"uid", "uid-1"},
            {"operation", operation},
            {"namespace", "shop"},
            {"name", "catalog"},
            {"object", std::move(object)}}}};
}

nlohmann::json Vs(const std::string& per_try_timeout) {
  return {{"apiVersion", "networking.istio.io/v1"},
          {"kind", "VirtualService"},
          {"metadata", {{"name", "catalog"}}},
          {"spec",
           {{"hosts", {"catalog"}},
            {"http",
             {{{"route", {{{"destination", {{"host", "catalog"}}}}}},
               {"retries", {{"attempts", 3}, {"perTryTimeout", per_try_timeout}}}}}}}}};
}

ServingNames Names() { return {{"skiff-operator.skiff-system.svc", "localhost"}, {"127.0.0.1"}}; }

}  // namespace

TEST_CASE("webhook: an invalid VirtualService is denied with its path, a valid one allowed") {
  auto denied = skiff::webhook::Review(Request("CREATE", Vs("2x")))["response"];
  CHECK(denied["uid"] == "uid-1");
  CHECK(denied["allowed"] == false);
  CHECK(denied["status"]["message"] ==
        "VirtualService shop/catalog: spec.http[0].retries.perTryTimeout: invalid duration \"2x\"");
  auto allowed = skiff::webhook::Review(Request("UPDATE", Vs("2s")))["response"];
  CHECK(allowed["allowed"] == true);
  CHECK(!allowed.contains("status"));
  // Warnings travel as AdmissionReview warnings (kubectl prints them).
  auto vs = Vs("2s");
  vs["spec"]["colour"] = "blue";
  auto warned = skiff::webhook::Review(Request("CREATE", vs))["response"];
  CHECK(warned["allowed"] == true);
  CHECK(
      warned["warnings"] ==
      nlohmann::json::array({"VirtualService shop/catalog: spec.colour: unknown field, ignored"}));
  // Deletes and other kinds are not judged; a broken review is refused, not crashed on.
  CHECK(skiff::webhook::Review(Request("DELETE", nullptr))["response"]["allowed"] == true);
  CHECK(skiff::webhook::Review(Request(
            "CREATE", {{"apiVersion", "v1"}, {"kind", "ConfigMap"}}))["response"]["allowed"] ==
        true);
  int status = 0;
  auto body = nlohmann::json::parse(skiff::webhook::ReviewBody("{not json", &status));
  CHECK(status == 400);
  CHECK(body["response"]["allowed"] == false);
}

TEST_CASE("webhook certificates: made, checked, renewed") {
  std::string error;
  auto bundle =
      GenerateCerts(Names(), std::chrono::hours(24 * 3650), std::chrono::hours(24 * 365), &error);
  REQUIRE(error.empty());
  std::string why;
  CHECK(CheckCerts(bundle, Names(), std::chrono::hours(24 * 30), &why) == CertState::kGood);
  // Another name: only the serving certificate is renewed, the CA (the caBundle) stays.
  ServingNames more = Names();
  more.dns.push_back("skiff-operator.other.svc");
  CHECK(CheckCerts(bundle, more, std::chrono::hours(24 * 30), &why) ==
        CertState::kRenewServingCert);
  CHECK(why == "the serving certificate is not for skiff-operator.other.svc");
  auto renewed = bundle;
  REQUIRE(skiff::webhook::RenewServingCert(&renewed, more, std::chrono::hours(24), &error));
  CHECK(renewed.ca_pem == bundle.ca_pem);
  CHECK(renewed.cert_pem != bundle.cert_pem);
  CHECK(CheckCerts(renewed, more, std::chrono::hours(1), &why) == CertState::kGood);
  // Expiring within the renewal window; a CA that expires; nothing at all.
  CHECK(CheckCerts(renewed, more, std::chrono::hours(48), &why) == CertState::kRenewServingCert);
  auto short_ca = GenerateCerts(Names(), std::chrono::hours(24), std::chrono::hours(12), &error);
  CHECK(CheckCerts(short_ca, Names(), std::chrono::hours(48), &why) == CertState::kRenewAll);
  CHECK(CheckCerts({}, Names(), std::chrono::hours(1), &why) == CertState::kRenewAll);
  // A serving certificate from another CA.
  auto other =
      GenerateCerts(Names(), std::chrono::hours(24 * 3650), std::chrono::hours(24 * 365), &error);
  auto mixed = bundle;
  mixed.cert_pem = other.cert_pem;
  mixed.key_pem = other.key_pem;
  CHECK(CheckCerts(mixed, Names(), std::chrono::hours(1), &why) == CertState::kRenewServingCert);
  CHECK(why == "the serving certificate is not signed by the CA");
}

namespace {

// A TLS client that trusts `ca_pem`; returns what the server sent back until it closed
// (or `max` bytes).
std::string TlsExchange(int port, const std::string& ca_pem, const std::string& request,
                        size_t max = 1 << 20) {
  ::signal(SIGPIPE, SIG_IGN);  // the client may write to a connection the server closed
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  BIO* cabio = BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size()));
  X509* ca = PEM_read_bio_X509(cabio, nullptr, nullptr, nullptr);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca);
  X509_free(ca);
  BIO_free(cabio);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  BIO* bio = BIO_new_ssl_connect(ctx);
  std::string host = "127.0.0.1:" + std::to_string(port);
  BIO_set_conn_hostname(bio, host.c_str());
  SSL* ssl = nullptr;
  BIO_get_ssl(bio, &ssl);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
  std::string out;
  if (BIO_do_connect(bio) == 1 && BIO_do_handshake(bio) == 1) {
    BIO_write(bio, request.data(), static_cast<int>(request.size()));
    char buf[4096];
    int n;
    while (out.size() < max && (n = BIO_read(bio, buf, sizeof buf)) > 0) {
      out.append(buf, static_cast<size_t>(n));
    }
  } else {
    out = "handshake failed";
  }
  ERR_clear_error();
  BIO_free_all(bio);
  SSL_CTX_free(ctx);
  return out;
}

}  // namespace

TEST_CASE("webhook server: TLS, /validate, bounded heads") {
  std::string error;
  auto bundle =
      GenerateCerts(Names(), std::chrono::hours(24 * 3650), std::chrono::hours(24 * 365), &error);
  skiff::webhook::ServerOptions opts;
  opts.address = "127.0.0.1";
  opts.port = 0;
  opts.max_head_bytes = 1024;
  skiff::webhook::TlsServer server(
      opts, [](const std::string& method, const std::string& path, const std::string& body) {
        skiff::webhook::HttpResponse r;
        r.body = method + " " + path + " " + std::to_string(body.size());
        return r;
      });
  REQUIRE(server.Start(&error));
  REQUIRE(server.SetCertificate(bundle, &error));
  std::string body = "{\"a\": 1}";
  std::string resp =
      TlsExchange(server.port(), bundle.ca_pem,
                  "POST /validate?timeout=10s HTTP/1.1\r\nHost: x\r\n"
                  "Content-Length: " +
                      std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  CHECK(resp.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(resp.find("\r\n\r\nPOST /validate 8") != std::string::npos);
  // Two requests on one connection (keep-alive), the second closing it.
  resp = TlsExchange(server.port(), bundle.ca_pem,
                     "POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                     "POST /b HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  CHECK(resp.find("POST /a 0") != std::string::npos);
  CHECK(resp.find("POST /b 0") != std::string::npos);
  // A head over the limit: 431 and closed; no Content-Length on a POST: 411.
  resp = TlsExchange(server.port(), bundle.ca_pem,
                     "POST /validate HTTP/1.1\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n");
  CHECK(resp.rfind("HTTP/1.1 431 ", 0) == 0);
  resp = TlsExchange(server.port(), bundle.ca_pem, "POST /validate HTTP/1.1\r\n\r\n");
  CHECK(resp.rfind("HTTP/1.1 411 ", 0) == 0);
  // A certificate from another CA is not trusted by the client.
  auto other = GenerateCerts(Names(), std::chrono::hours(240), std::chrono::hours(24), &error);
  CHECK(TlsExchange(server.port(), other.ca_pem, "GET / HTTP/1.1\r\n\r\n") == "handshake failed");
  // A new certificate applies to new connections.
  REQUIRE(server.SetCertificate(other, &error));
  resp = TlsExchange(server.port(), other.ca_pem, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
  CHECK(resp.find("GET /x 0") != std::string::npos);
  CHECK(server.metrics().requests.load() >= 4);
  server.Stop();
}

TEST_CASE("webhook server: a slow head times out (408), connections are capped") {
  std::string error;
  auto bundle = GenerateCerts(Names(), std::chrono::hours(240), std::chrono::hours(24), &error);
  skiff::webhook::ServerOptions opts;
  opts.address = "127.0.0.1";
  opts.port = 0;
  opts.request_timeout = std::chrono::milliseconds(300);
  opts.max_connections = 1;
  skiff::webhook::TlsServer server(opts,
                                   [](const std::string&, const std::string&, const std::string&) {
                                     return skiff::webhook::HttpResponse{};
                                   });
  REQUIRE(server.Start(&error));
  REQUIRE(server.SetCertificate(bundle, &error));
  // Half a request head, then nothing: the server answers 408 and closes.
  std::string resp = TlsExchange(server.port(), bundle.ca_pem, "POST /validate HTTP/1.1\r\n");
  INFO("response: " << resp);
  CHECK(resp.rfind("HTTP/1.1 408 ", 0) == 0);
  for (int i = 0; i < 200 && server.metrics().active.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // bounded: the 408 one ends
  }
  // One connection held open (handshake done, idle): a second one is closed at accept.
  auto held = std::thread([&] {
    TlsExchange(server.port(), bundle.ca_pem, "POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  });
  for (int i = 0; i < 200 && server.metrics().requests.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // bounded wait for /a
  }
  REQUIRE(server.metrics().active.load() == 1);
  CHECK(TlsExchange(server.port(), bundle.ca_pem, "GET / HTTP/1.1\r\n\r\n") == "handshake failed");
  CHECK(server.metrics().rejected_connections.load() >= 1);
  server.Stop();  // ends the held connection too
  held.join();
}

namespace {
// Set by a thread-local object's destructor, which runs when a connection thread exits,
// after its last line of code; OpenSSL frees its per-thread state (error queue, random
// generators) the same way.
std::atomic<bool> connection_thread_ended{false};
struct ThreadExitMark {
  ~ThreadExitMark() {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    connection_thread_ended = true;
  }
};
}  // namespace

TEST_CASE("webhook server: Stop() returns after its connection threads have ended") {
  std::string error;
  auto bundle = GenerateCerts(Names(), std::chrono::hours(240), std::chrono::hours(24), &error);
  skiff::webhook::ServerOptions opts;
  opts.address = "127.0.0.1";
  opts.port = 0;
  skiff::webhook::TlsServer server(opts,
                                   [](const std::string&, const std::string&, const std::string&) {
                                     thread_local ThreadExitMark mark;
                                     (void)mark;
                                     return skiff::webhook::HttpResponse{};
                                   });
  REQUIRE(server.Start(&error));
  REQUIRE(server.SetCertificate(bundle, &error));
  std::string resp =
      TlsExchange(server.port(), bundle.ca_pem, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
  CHECK(resp.rfind("HTTP/1.1 200 ", 0) == 0);
  server.Stop();
  // A thread still running after Stop() would outlive the server (and the process at exit,
  // where LeakSanitizer then finds its OpenSSL state unreferenced).
  CHECK(connection_thread_ended.load());
}

TEST_CASE("webhook certificates in a directory survive restarts") {
  char tmpl[] = "/tmp/skiff-webhook-certs.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string dir = tmpl;
  std::string error;
  skiff::webhook::CertBundle first;
  REQUIRE(skiff::webhook::LoadOrCreateInDir(dir, Names(), {}, &first, &error));
  skiff::webhook::CertBundle again;
  REQUIRE(skiff::webhook::LoadOrCreateInDir(dir, Names(), {}, &again, &error));
  CHECK(again == first);  // read back, not made again
  ServingNames more = Names();
  more.dns.push_back("webhook.example.com");
  skiff::webhook::CertBundle renewed;
  REQUIRE(skiff::webhook::LoadOrCreateInDir(dir, more, {}, &renewed, &error));
  CHECK(renewed.ca_pem == first.ca_pem);  // the CA (and so the caBundle) stays
  CHECK(renewed.cert_pem != first.cert_pem);
  std::filesystem::remove_all(dir);
}

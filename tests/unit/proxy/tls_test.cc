// TLS contexts and transports over a socketpair, and ClientHello parsing.
#include "proxy/net/tls.h"

#include <fcntl.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

using skiff::net::Buffer;
using skiff::net::ClientHelloInfo;
using skiff::net::TlsContext;
using skiff::net::TlsTransport;

namespace {

struct KeyPair {
  std::string cert, key;
};

// A self-signed P-256 certificate (or one signed by `ca`) with the given SANs.
KeyPair MakeCert(const std::string& cn, const std::vector<std::string>& sans,
                 const KeyPair* ca = nullptr) {
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  X509* x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x),
                   static_cast<long>(std::hash<std::string>{}(cn)&0xffff));
  X509_gmtime_adj(X509_getm_notBefore(x), -60);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, pkey);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  EVP_PKEY* signer = pkey;
  X509* issuer = x;
  if (ca != nullptr) {
    BIO* b = BIO_new_mem_buf(ca->cert.data(), static_cast<int>(ca->cert.size()));
    issuer = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    b = BIO_new_mem_buf(ca->key.data(), static_cast<int>(ca->key.size()));
    signer = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
    BIO_free(b);
  }
  X509_set_issuer_name(x, X509_get_subject_name(issuer));
  if (!sans.empty()) {
    std::string list;
    for (const auto& s : sans) {
      list += (list.empty() ? "" : ",") + s;
    }
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, x, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, list.c_str());
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  } else {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, "CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(x, signer, EVP_sha256());
  KeyPair out;
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  out.cert.assign(data, static_cast<size_t>(n));
  BIO_free(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  n = BIO_get_mem_data(b, &data);
  out.key.assign(data, static_cast<size_t>(n));
  BIO_free(b);
  if (ca != nullptr) {
    X509_free(issuer);
    EVP_PKEY_free(signer);
  }
  X509_free(x);
  EVP_PKEY_free(pkey);
  return out;
}

// Runs both ends until neither makes progress; returns whether both finished handshakes.
bool Pump(TlsTransport& a, TlsTransport& b, Buffer* a_in, Buffer* b_in) {
  Buffer none;
  for (int i = 0; i < 50; ++i) {
    bool filled = false;
    a.Write(&none);
    b.Write(&none);
    if (a.Read(a_in, &filled) == -2 || b.Read(b_in, &filled) == -2) {
      return false;
    }
    if (a.handshake_done() && b.handshake_done()) {
      return true;
    }
  }
  return false;
}

std::pair<int, int> SocketPair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
  return {fds[0], fds[1]};
}

}  // namespace

TEST_CASE("tls: a handshake over a socketpair, ALPN, then data both ways") {
  KeyPair ca = MakeCert("test CA", {});
  KeyPair server = MakeCert("shop.example", {"DNS:shop.example"}, &ca);
  std::string error;
  skiff::net::TlsServerOptions so;
  so.certificate_chain = server.cert;
  so.private_key = server.key;
  so.alpn = {"h2", "http/1.1"};
  auto sctx = TlsContext::Server(so, &error);
  INFO(error);
  REQUIRE(sctx);
  skiff::net::TlsClientOptions co;
  co.sni = "shop.example";
  co.ca_certificates = ca.cert;
  co.alpn = {"http/1.1"};
  auto cctx = TlsContext::Client(co, &error);
  REQUIRE(cctx);
  auto [sfd, cfd] = SocketPair();
  auto s = TlsTransport::Server(sfd, sctx, {});
  auto c = TlsTransport::Client(cfd, cctx);
  Buffer s_in, c_in;
  REQUIRE(Pump(*c, *s, &c_in, &s_in));
  CHECK(s->alpn() == "http/1.1");
  CHECK(c->alpn() == "http/1.1");
  Buffer out;
  out.Append("GET / HTTP/1.1\r\n\r\n");
  CHECK(c->Write(&out) == 18);
  bool filled = false;
  for (int i = 0; i < 10 && s_in.empty(); ++i) {
    s->Read(&s_in, &filled);
  }
  CHECK(s_in.view() == "GET / HTTP/1.1\r\n\r\n");
}

// A stock OpenSSL client (its default TLS 1.3 suite order puts AES-256-GCM-SHA384 first)
// against the server transport over a socketpair; counts the session tickets it receives.
struct StockClient {
  // Owns `fd` (its end of the socketpair).
  explicit StockClient(SSL_CTX* ctx, int fd) : ssl(SSL_new(ctx)), fd_(fd) {
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    SSL_set_tlsext_host_name(ssl, "shop.example");
  }
  ~StockClient() {
    SSL_shutdown(ssl);  // else OpenSSL marks the connection's sessions not resumable
    SSL_free(ssl);
    ::close(fd_);
  }
  // Drives both ends: the handshake, then reads what the server sends after it (tickets).
  bool Run(TlsTransport& server) {
    Buffer none, in;
    bool done = false;
    for (int i = 0; i < 100; ++i) {
      bool filled = false;
      if (!done) {
        done = SSL_do_handshake(ssl) == 1;
      } else {
        char b[64];
        SSL_read(ssl, b, sizeof b);
      }
      if (server.Read(&in, &filled) == -2) {
        return false;
      }
    }
    return done && server.handshake_done();
  }
  SSL* ssl;

 private:
  int fd_;
};

// A server context for shop.example (self-signed P-256), default options.
std::shared_ptr<TlsContext> ShopServerContext() {
  KeyPair server = MakeCert("shop.example", {"DNS:shop.example"});
  std::string error;
  skiff::net::TlsServerOptions so;
  so.certificate_chain = server.cert;
  so.private_key = server.key;
  auto sctx = TlsContext::Server(so, &error);
  INFO(error);
  REQUIRE(sctx);
  return sctx;
}

int g_tickets = 0;
SSL_SESSION* g_session = nullptr;

int CountTicket(SSL* /*ssl*/, SSL_SESSION* session) {
  ++g_tickets;
  if (g_session != nullptr) {
    SSL_SESSION_free(g_session);
  }
  g_session = session;
  return 1;  // keeps the reference
}

TEST_CASE("tls: TLS 1.3 picks AES-128-GCM-SHA256 and sends one session ticket that resumes") {
  auto sctx = ShopServerContext();
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(cctx, CountTicket);
  g_tickets = 0;
  for (int round = 0; round < 2; ++round) {
    INFO("connection " << round + 1);
    auto [sfd, cfd] = SocketPair();
    auto s = TlsTransport::Server(sfd, sctx, {});
    StockClient c(cctx, cfd);
    if (round == 1) {
      REQUIRE(g_session != nullptr);
      SSL_set_session(c.ssl, g_session);
    }
    REQUIRE(c.Run(*s));
    CHECK(std::string(SSL_get_version(c.ssl)) == "TLSv1.3");
    CHECK(std::string(SSL_CIPHER_get_name(SSL_get_current_cipher(c.ssl))) ==
          "TLS_AES_128_GCM_SHA256");
    CHECK(SSL_session_reused(c.ssl) == (round == 1 ? 1 : 0));
    CHECK(g_tickets == round + 1);  // one ticket per handshake, a resumed one too
  }
  if (g_session != nullptr) {
    SSL_SESSION_free(g_session);
    g_session = nullptr;
  }
  SSL_CTX_free(cctx);
}

TEST_CASE("tls: a client that lists ChaCha20-Poly1305 first gets it (TLS 1.3 and 1.2)") {
  auto sctx = ShopServerContext();
  for (bool tls13 : {true, false}) {
    INFO((tls13 ? "TLS 1.3" : "TLS 1.2"));
    SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
    if (tls13) {
      SSL_CTX_set_ciphersuites(cctx, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
    } else {
      SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
      SSL_CTX_set_cipher_list(cctx, "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256");
    }
    {
      auto [sfd, cfd] = SocketPair();
      auto s = TlsTransport::Server(sfd, sctx, {});
      StockClient c(cctx, cfd);
      REQUIRE(c.Run(*s));
      CHECK(std::string(SSL_CIPHER_get_name(SSL_get_current_cipher(c.ssl))) ==
            (tls13 ? "TLS_CHACHA20_POLY1305_SHA256" : "ECDHE-ECDSA-CHACHA20-POLY1305"));
    }
    SSL_CTX_free(cctx);
  }
}

TEST_CASE("tls: a client certificate is required for MUTUAL and checked against the SANs") {
  KeyPair ca = MakeCert("test CA", {});
  KeyPair other_ca = MakeCert("other CA", {});
  KeyPair server = MakeCert("shop.example", {"DNS:shop.example"}, &ca);
  KeyPair good = MakeCert("a", {"URI:spiffe://cluster.local/ns/shop/sa/a"}, &ca);
  KeyPair wrong_san = MakeCert("b", {"URI:spiffe://cluster.local/ns/shop/sa/b"}, &ca);
  KeyPair stranger = MakeCert("x", {"URI:spiffe://elsewhere/x"}, &other_ca);
  std::string error;
  skiff::net::TlsServerOptions so;
  so.certificate_chain = server.cert;
  so.private_key = server.key;
  so.ca_certificates = ca.cert;
  so.client_cert = skiff::net::TlsServerOptions::ClientCert::kRequire;
  so.subject_alt_names = {"spiffe://cluster.local/ns/shop/sa/a"};
  auto sctx = TlsContext::Server(so, &error);
  REQUIRE(sctx);
  auto attempt = [&](const KeyPair* client) {
    skiff::net::TlsClientOptions co;
    co.sni = "shop.example";
    co.ca_certificates = ca.cert;
    if (client != nullptr) {
      co.certificate_chain = client->cert;
      co.private_key = client->key;
    }
    std::string e;
    auto cctx = TlsContext::Client(co, &e);
    REQUIRE(cctx);
    auto [sfd, cfd] = SocketPair();
    auto s = TlsTransport::Server(sfd, sctx, {});
    auto c = TlsTransport::Client(cfd, cctx);
    Buffer a, b;
    bool ok = Pump(*c, *s, &a, &b);
    return std::make_pair(ok && s->handshake_done(),
                          s->peer().has_value() ? s->peer()->uri_sans : std::vector<std::string>{});
  };
  auto [ok, sans] = attempt(&good);
  CHECK(ok);
  REQUIRE(sans.size() == 1);
  CHECK(sans[0] == "spiffe://cluster.local/ns/shop/sa/a");
  CHECK(!attempt(&wrong_san).first);
  CHECK(!attempt(&stranger).first);
  CHECK(!attempt(nullptr).first);
}

TEST_CASE("tls: contexts refuse a key that does not match and unknown ciphers") {
  KeyPair a = MakeCert("a", {"DNS:a"});
  KeyPair b = MakeCert("b", {"DNS:b"});
  std::string error;
  skiff::net::TlsServerOptions so;
  so.certificate_chain = a.cert;
  so.private_key = b.key;
  CHECK(TlsContext::Server(so, &error) == nullptr);
  CHECK(error.find("does not match") != std::string::npos);
  so.private_key = a.key;
  so.cipher_suites = {"NOT-A-CIPHER"};
  CHECK(TlsContext::Server(so, &error) == nullptr);
  CHECK(error.find("cipherSuites") != std::string::npos);
  so.cipher_suites = {};
  so.max_version = "TLSV1_1";
  CHECK(TlsContext::Server(so, &error) == nullptr);
}

TEST_CASE("tls: an upstream's certificate must be for the SNI host") {
  KeyPair ca = MakeCert("test CA", {});
  KeyPair server = MakeCert("shop.example", {"DNS:shop.example"}, &ca);
  std::string error;
  skiff::net::TlsServerOptions so;
  so.certificate_chain = server.cert;
  so.private_key = server.key;
  auto sctx = TlsContext::Server(so, &error);
  REQUIRE(sctx);
  auto attempt = [&](const std::string& sni, bool skip_verify) {
    skiff::net::TlsClientOptions co;
    co.sni = sni;
    co.ca_certificates = ca.cert;
    co.insecure_skip_verify = skip_verify;
    auto cctx = TlsContext::Client(co, &error);
    REQUIRE(cctx);
    auto [sfd, cfd] = SocketPair();
    auto s = TlsTransport::Server(sfd, sctx, {});
    auto c = TlsTransport::Client(cfd, cctx);
    Buffer s_in, c_in;
    bool ok = Pump(*c, *s, &c_in, &s_in);
    ERR_clear_error();
    return ok;
  };
  CHECK(attempt("shop.example", false));
  CHECK_FALSE(attempt("other.example", false));  // signed by the CA, but for another host
  CHECK(attempt("other.example", true));         // insecureSkipVerify
}

TEST_CASE("tls: ecdhCurves limit the key exchange groups a client may use") {
  KeyPair server = MakeCert("shop.example", {"DNS:shop.example"});
  std::string error;
  skiff::net::TlsServerOptions so;
  so.certificate_chain = server.cert;
  so.private_key = server.key;
  so.ecdh_curves = {"P-384"};
  auto sctx = TlsContext::Server(so, &error);
  INFO(error);
  REQUIRE(sctx);
  for (const char* version : {"1.3", "1.2"}) {
    INFO("TLS " << version);
    auto attempt = [&](const char* groups) {
      SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
      int v = std::string(version) == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
      SSL_CTX_set_min_proto_version(cctx, v);
      SSL_CTX_set_max_proto_version(cctx, v);
      REQUIRE(SSL_CTX_set1_groups_list(cctx, groups) == 1);
      auto [sfd, cfd] = SocketPair();
      auto s = TlsTransport::Server(sfd, sctx, {});
      bool ok;
      {
        StockClient c(cctx, cfd);
        ok = c.Run(*s);
      }
      SSL_CTX_free(cctx);
      ERR_clear_error();
      return ok;
    };
    CHECK_FALSE(attempt("X25519:P-256"));
    // TLS 1.2 also needs the certificate's own curve (P-256) among the client's groups
    // (RFC 8422 section 5.1); TLS 1.3 does not.
    CHECK(attempt(std::string(version) == "1.3" ? "X25519:P-384" : "P-256:P-384"));
  }
  so.ecdh_curves = {"P-384", "curve9"};
  CHECK(TlsContext::Server(so, &error) == nullptr);
  CHECK(error.find("ecdhCurves") != std::string::npos);
}

TEST_CASE("tls: the server name of a ClientHello, however it arrives") {
  skiff::net::TlsClientOptions co;
  co.sni = "Shop.Example";
  co.insecure_skip_verify = true;
  std::string error;
  auto cctx = TlsContext::Client(co, &error);
  REQUIRE(cctx);
  auto [a, b] = SocketPair();
  auto c = TlsTransport::Client(a, cctx);
  Buffer none;
  c->Write(&none);  // sends the ClientHello
  Buffer hello;
  bool filled = false;
  hello.ReadFrom(b, &filled);
  ::close(b);
  auto info = skiff::net::ParseClientHello(hello.view());
  CHECK(info.status == ClientHelloInfo::Status::kDone);
  CHECK(info.sni == "shop.example");
  // Byte by byte: incomplete until the whole message is there.
  auto v = hello.view();
  CHECK(skiff::net::ParseClientHello(v.substr(0, 3)).status ==
        ClientHelloInfo::Status::kIncomplete);
  CHECK(skiff::net::ParseClientHello(v.substr(0, v.size() - 1)).status ==
        ClientHelloInfo::Status::kIncomplete);
  CHECK(skiff::net::ParseClientHello("GET / HTTP/1.1\r\n").status ==
        ClientHelloInfo::Status::kNotTls);
  // The same hello split over two TLS records.
  std::string whole(v);
  size_t len = (static_cast<unsigned char>(whole[3]) << 8) | static_cast<unsigned char>(whole[4]);
  std::string payload = whole.substr(5, len);
  std::string split;
  for (auto part : {payload.substr(0, 40), payload.substr(40)}) {
    split += std::string("\x16\x03\x01", 3);
    split += static_cast<char>(part.size() >> 8);
    split += static_cast<char>(part.size() & 0xff);
    split += part;
  }
  auto again = skiff::net::ParseClientHello(split);
  CHECK(again.status == ClientHelloInfo::Status::kDone);
  CHECK(again.sni == "shop.example");
}

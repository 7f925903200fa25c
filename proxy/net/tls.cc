#include "proxy/net/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>

namespace skiff::net {

namespace {

// Envoy's default TLS 1.2 cipher suites (forward secret AEADs only).
constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// TLS 1.3 suites in BoringSSL's order on hardware with AES instructions (what Envoy
// negotiates; Istio's cipherSuites apply to TLS 1.2 only, as in Envoy). With the server's
// preference this picks AES-128-GCM-SHA256: OpenSSL's own default order puts
// AES-256-GCM-SHA384 first, whose SHA-384 key schedule costs a full handshake more.
constexpr const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr size_t kMaxCipherPending = 256 * 1024;

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  std::string out;
  while (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) {
      out += "; ";
    }
    out += buf;
    e = ERR_get_error();
  }
  return out.empty() ? "unknown TLS error" : out;
}

std::optional<int> Version(const std::string& name) {
  if (name.empty() || name == "TLS_AUTO") {
    return 0;
  }
  if (name == "TLSV1_0") {
    return TLS1_VERSION;
  }
  if (name == "TLSV1_1") {
    return TLS1_1_VERSION;
  }
  if (name == "TLSV1_2") {
    return TLS1_2_VERSION;
  }
  if (name == "TLSV1_3") {
    return TLS1_3_VERSION;
  }
  return std::nullopt;
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 15];
  }
  return out;
}

std::string Base64(const unsigned char* p, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

// Loads a PEM chain: the first certificate is the leaf, the rest its chain.
bool UseChain(SSL_CTX* ctx, const std::string& pem, std::string* error) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* leaf = PEM_read_bio_X509_AUX(bio, nullptr, nullptr, nullptr);
  if (leaf == nullptr) {
    BIO_free(bio);
    *error = "the certificate chain holds no PEM certificate";
    return false;
  }
  bool ok = SSL_CTX_use_certificate(ctx, leaf) == 1;
  X509_free(leaf);
  while (ok) {
    X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (extra == nullptr) {
      ERR_clear_error();  // the end of the PEM
      break;
    }
    ok = SSL_CTX_add0_chain_cert(ctx, extra) == 1;
  }
  BIO_free(bio);
  if (!ok) {
    *error = "certificate chain: " + OpenSslError();
  }
  return ok;
}

bool UseKey(SSL_CTX* ctx, const std::string& pem, std::string* error) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr) {
    ERR_clear_error();
    *error = "the private key is not a PEM private key";
    return false;
  }
  bool ok = SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);
  if (!ok || SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    *error = "the private key does not match the certificate";
    return false;
  }
  return true;
}

bool UseCa(SSL_CTX* ctx, const std::string& pem, bool send_names, std::string* error) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
  int count = 0;
  while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, ca);
    sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca)));
    X509_free(ca);
    ++count;
  }
  ERR_clear_error();
  BIO_free(bio);
  if (count == 0) {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
    *error = "the CA certificates hold no PEM certificate";
    return false;
  }
  if (send_names) {
    SSL_CTX_set_client_CA_list(ctx, names);  // takes the list
  } else {
    sk_X509_NAME_pop_free(names, X509_NAME_free);
  }
  return true;
}

std::vector<unsigned char> AlpnWire(const std::vector<std::string>& protos) {
  std::vector<unsigned char> out;
  for (const auto& p : protos) {
    if (p.empty() || p.size() > 255) {
      continue;
    }
    out.push_back(static_cast<unsigned char>(p.size()));
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

PeerCertificate Describe(X509* cert) {
  PeerCertificate p;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  p.sha256_hex = Hex(md, len);
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  p.subject.assign(data, static_cast<size_t>(n));
  BIO_free(bio);
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
    if (g->type == GEN_URI || g->type == GEN_DNS) {
      const ASN1_IA5STRING* s = g->type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
      std::string v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                    static_cast<size_t>(ASN1_STRING_length(s)));
      (g->type == GEN_URI ? p.uri_sans : p.dns_sans).push_back(std::move(v));
    }
  }
  GENERAL_NAMES_free(names);
  return p;
}

}  // namespace

int AlpnSelect(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_len,
               const unsigned char* in, unsigned int in_len, void* arg) {
  auto* ctx = static_cast<TlsContext*>(arg);
  if (ctx->alpn_wire_.empty()) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, out_len, ctx->alpn_wire_.data(),
                            static_cast<unsigned int>(ctx->alpn_wire_.size()), in,
                            in_len) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;  // no protocol in common: go on without ALPN
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

TlsContext::~TlsContext() {
  if (ctx_ != nullptr) {
    SSL_CTX_free(ctx_);
  }
}

std::shared_ptr<TlsContext> TlsContext::Server(const TlsServerOptions& o, std::string* error) {
  auto c = std::shared_ptr<TlsContext>(new TlsContext());
  c->server_ = true;
  c->ctx_ = SSL_CTX_new(TLS_server_method());
  if (c->ctx_ == nullptr) {
    *error = OpenSslError();
    return nullptr;
  }
  SSL_CTX* ctx = c->ctx_;
  auto min = Version(o.min_version);
  auto max = Version(o.max_version);
  if (!min || !max) {
    *error = "unknown TLS protocol version \"" + (min ? o.max_version : o.min_version) + "\"";
    return nullptr;
  }
  // TLS 1.0 and 1.1 are never offered, whatever the configuration asks.
  SSL_CTX_set_min_proto_version(ctx, std::max(*min, TLS1_2_VERSION));
  if (*max != 0) {
    if (*max < TLS1_2_VERSION) {
      *error = "maxProtocolVersion below TLS 1.2 is not supported";
      return nullptr;
    }
    SSL_CTX_set_max_proto_version(ctx, *max);
  }
  // The server's order, except that a client which lists ChaCha20-Poly1305 first (one
  // without AES instructions) gets it, as BoringSSL's equal-preference groups give it in
  // Envoy.
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA |
                               SSL_OP_NO_SSLv3);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  std::string ciphers;
  for (const auto& s : o.cipher_suites) {
    ciphers += (ciphers.empty() ? "" : ":") + s;
  }
  if (SSL_CTX_set_cipher_list(ctx, ciphers.empty() ? kDefaultCiphers : ciphers.c_str()) != 1) {
    ERR_clear_error();
    *error = "cipherSuites: none of \"" + ciphers + "\" is a cipher suite this proxy knows";
    return nullptr;
  }
  SSL_CTX_set_ciphersuites(ctx, kTls13Suites);
  if (!o.ecdh_curves.empty()) {
    std::string groups;
    for (const auto& g : o.ecdh_curves) {
      groups += (groups.empty() ? "" : ":") + g;
    }
    if (SSL_CTX_set1_groups_list(ctx, groups.c_str()) != 1) {
      ERR_clear_error();
      *error = "ecdhCurves: \"" + groups + "\" are not all curves this proxy knows";
      return nullptr;
    }
  }
  if (!UseChain(ctx, o.certificate_chain, error) || !UseKey(ctx, o.private_key, error)) {
    return nullptr;
  }
  if (o.client_cert != TlsServerOptions::ClientCert::kNone) {
    if (o.ca_certificates.empty()) {
      *error = "client certificates are required but no CA certificates were given";
      return nullptr;
    }
    if (!UseCa(ctx, o.ca_certificates, true, error)) {
      return nullptr;
    }
    SSL_CTX_set_verify(ctx,
                       o.client_cert == TlsServerOptions::ClientCert::kRequire
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_PEER,
                       nullptr);
  }
  static const unsigned char kSessionContext[] = "skiff";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  // Resumption is by session tickets (stateless); OpenSSL's internal cache would also keep
  // every session (up to 20,480 per context, and a context per filter chain and config
  // version) and costs an insertion per full handshake.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // One TLS 1.3 ticket per handshake (as Go's server; OpenSSL sends two): a client resumes
  // with it and gets a fresh one on each resumption. Each ticket costs the server a session
  // encoding, a decoding and an encryption, and the client as much again.
  SSL_CTX_set_num_tickets(ctx, 1);
  c->alpn_wire_ = AlpnWire(o.alpn);
  SSL_CTX_set_alpn_select_cb(ctx, AlpnSelect, c.get());
  c->sans_ = o.subject_alt_names;
  c->spki_ = o.spki_sha256_base64;
  c->hashes_ = o.cert_sha256_hex;
  return c;
}

std::shared_ptr<TlsContext> TlsContext::Client(const TlsClientOptions& o, std::string* error) {
  auto c = std::shared_ptr<TlsContext>(new TlsContext());
  c->client_ = o;
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  if (c->ctx_ == nullptr) {
    *error = OpenSslError();
    return nullptr;
  }
  SSL_CTX* ctx = c->ctx_;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_ciphersuites(ctx, kTls13Suites);
  if (!o.certificate_chain.empty() &&
      (!UseChain(ctx, o.certificate_chain, error) || !UseKey(ctx, o.private_key, error))) {
    return nullptr;
  }
  if (!o.insecure_skip_verify) {
    if (!o.ca_certificates.empty()) {
      if (!UseCa(ctx, o.ca_certificates, false, error)) {
        return nullptr;
      }
    } else {
      SSL_CTX_set_default_verify_paths(ctx);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  if (!o.alpn.empty()) {
    auto wire = AlpnWire(o.alpn);
    SSL_CTX_set_alpn_protos(ctx, wire.data(), static_cast<unsigned int>(wire.size()));
  }
  return c;
}

bool TlsContext::CheckPeer(X509* cert, std::string* why) const {
  if (sans_.empty() && spki_.empty() && hashes_.empty()) {
    return true;
  }
  PeerCertificate p = Describe(cert);
  if (!hashes_.empty()) {
    for (const auto& h : hashes_) {
      std::string want;
      for (char ch : h) {
        if (ch != ':') {
          want += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        }
      }
      if (want == p.sha256_hex) {
        return true;
      }
    }
  }
  if (!spki_.empty()) {
    unsigned char* der = nullptr;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len > 0) {
      unsigned char md[SHA256_DIGEST_LENGTH];
      SHA256(der, static_cast<size_t>(len), md);
      OPENSSL_free(der);
      std::string got = Base64(md, sizeof md);
      if (std::find(spki_.begin(), spki_.end(), got) != spki_.end()) {
        return true;
      }
    }
  }
  if (!sans_.empty()) {
    for (const auto& want : sans_) {
      for (const auto* list : {&p.uri_sans, &p.dns_sans}) {
        if (std::find(list->begin(), list->end(), want) != list->end()) {
          return true;
        }
      }
    }
  }
  *why =
      "the client certificate matches none of subjectAltNames / verifyCertificateSpki / "
      "verifyCertificateHash";
  return false;
}

bool TlsContext::CheckUpstream(X509* cert, std::string* why) const {
  if (server_ || client_.insecure_skip_verify || client_.subject_alt_names.empty()) {
    return true;
  }
  PeerCertificate p;
  bool described = false;
  for (const auto& want : client_.subject_alt_names) {
    if (want.find("://") != std::string::npos) {
      if (!described) {
        p = Describe(cert);
        described = true;
      }
      if (std::find(p.uri_sans.begin(), p.uri_sans.end(), want) != p.uri_sans.end()) {
        return true;
      }
    } else if (X509_check_host(cert, want.data(), want.size(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                               nullptr) == 1) {
      return true;
    }
  }
  *why = "the upstream certificate matches none of the subjectAltNames";
  return false;
}

// ---- TlsTransport ------------------------------------------------------------------------

TlsTransport::TlsTransport(int fd, std::shared_ptr<TlsContext> context)
    : raw_(fd), context_(std::move(context)) {
  ssl_ = SSL_new(context_->ctx());
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(rbio_, -1);  // an empty input BIO means "more later", not EOF
  SSL_set_bio(ssl_, rbio_, wbio_);    // the SSL owns both
}

TlsTransport::~TlsTransport() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
}

std::unique_ptr<TlsTransport> TlsTransport::Server(int fd, std::shared_ptr<TlsContext> context,
                                                   std::string_view initial) {
  auto t = std::unique_ptr<TlsTransport>(new TlsTransport(fd, std::move(context)));
  SSL_set_accept_state(t->ssl_);
  if (!initial.empty()) {
    BIO_write(t->rbio_, initial.data(), static_cast<int>(initial.size()));
    t->buffered_input_ = true;
  }
  return t;
}

std::unique_ptr<TlsTransport> TlsTransport::Client(int fd, std::shared_ptr<TlsContext> context) {
  auto t = std::unique_ptr<TlsTransport>(new TlsTransport(fd, std::move(context)));
  SSL_set_connect_state(t->ssl_);
  const auto& o = t->context_->client_options();
  if (!o.sni.empty()) {
    SSL_set_tlsext_host_name(t->ssl_, o.sni.c_str());
  }
  if (!o.insecure_skip_verify) {
    // With subjectAltNames, any one of them (URI or DNS) must match: checked once the
    // handshake is done (CheckUpstream), as OpenSSL's host check knows no URIs. Without
    // them, the certificate must be for the SNI host.
    if (o.subject_alt_names.empty() && !o.sni.empty()) {
      X509_VERIFY_PARAM* param = SSL_get0_param(t->ssl_);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      X509_VERIFY_PARAM_set1_host(param, o.sni.c_str(), 0);
    }
  }
  return t;
}

void TlsTransport::Fail(std::string why) {
  failed_ = true;
  error_ = std::move(why);
}

bool TlsTransport::FlushCipher() {
  while (BIO_pending(wbio_) > 0) {
    size_t pending = static_cast<size_t>(BIO_pending(wbio_));
    char* p = cipher_out_.Prepare(pending);
    int n = BIO_read(wbio_, p, static_cast<int>(pending));
    if (n <= 0) {
      break;
    }
    cipher_out_.Commit(static_cast<size_t>(n));
  }
  if (!cipher_out_.empty() && raw_.Write(&cipher_out_) < 0) {
    Fail("write: connection lost");
    return false;
  }
  return true;
}

bool TlsTransport::Handshake() {
  int r = SSL_do_handshake(ssl_);
  if (!FlushCipher()) {
    return false;
  }
  if (r == 1) {
    handshake_done_ = true;
    const unsigned char* proto = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl_, &proto, &len);
    alpn_.assign(reinterpret_cast<const char*>(proto), len);
    if (X509* cert = SSL_get1_peer_certificate(ssl_); cert != nullptr) {
      std::string why;
      if (context_->server() ? !context_->CheckPeer(cert, &why)
                             : !context_->CheckUpstream(cert, &why)) {
        X509_free(cert);
        Fail(why);
        return false;
      }
      peer_ = Describe(cert);
      X509_free(cert);
    }
    return true;
  }
  int err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    return false;
  }
  Fail("TLS handshake failed: " + OpenSslError());
  FlushCipher();  // the alert, if any
  return false;
}

ssize_t TlsTransport::Read(Buffer* buf, bool* filled) {
  *filled = false;
  if (failed_) {
    return -2;
  }
  bool socket_filled = false;
  if (!peer_eof_) {
    ssize_t n = raw_.Read(&cipher_in_, &socket_filled);
    if (n == 0) {
      peer_eof_ = true;
    } else if (n == -2) {
      Fail("read: connection lost");
      return -2;
    }
    if (!cipher_in_.empty()) {
      auto v = cipher_in_.view();
      BIO_write(rbio_, v.data(), static_cast<int>(v.size()));
      cipher_in_.Clear();
    }
  }
  buffered_input_ = false;
  if (!handshake_done_ && !Handshake()) {
    if (failed_) {
      return -2;
    }
    return peer_eof_ ? 0 : -1;
  }
  ssize_t total = 0;
  while (total < static_cast<ssize_t>(kMaxCipherPending)) {
    char* p = buf->Prepare(16384);
    int r = SSL_read(ssl_, p, 16384);
    if (r > 0) {
      buf->Commit(static_cast<size_t>(r));
      total += r;
      continue;
    }
    int err = SSL_get_error(ssl_, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      break;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_eof_ = true;  // close_notify
      break;
    }
    Fail("TLS: " + OpenSslError());
    return total > 0 ? total : -2;
  }
  if (!FlushCipher()) {
    return total > 0 ? total : -2;
  }
  *filled = socket_filled || SSL_pending(ssl_) > 0;
  if (total > 0) {
    return total;
  }
  return peer_eof_ ? 0 : -1;
}

ssize_t TlsTransport::Write(Buffer* buf) {
  if (failed_) {
    return -1;
  }
  if (!handshake_done_) {
    // A client starts the handshake; the plaintext waits for it to finish.
    if (!context_->server() && !Handshake() && failed_) {
      return -1;
    }
    if (!handshake_done_) {
      return FlushCipher() ? 0 : -1;
    }
  }
  ssize_t taken = 0;
  while (!buf->empty() && cipher_out_.size() < kMaxCipherPending) {
    auto v = buf->view();
    int n = SSL_write(ssl_, v.data(), static_cast<int>(std::min<size_t>(v.size(), 65536)));
    if (n <= 0) {
      Fail("TLS: " + OpenSslError());
      return -1;
    }
    buf->Consume(static_cast<size_t>(n));
    taken += n;
    while (BIO_pending(wbio_) > 0) {
      size_t pending = static_cast<size_t>(BIO_pending(wbio_));
      char* p = cipher_out_.Prepare(pending);
      int m = BIO_read(wbio_, p, static_cast<int>(pending));
      if (m <= 0) {
        break;
      }
      cipher_out_.Commit(static_cast<size_t>(m));
    }
  }
  if (!FlushCipher()) {
    return -1;
  }
  return taken;
}

bool TlsTransport::has_pending_input() const {
  return !failed_ && (buffered_input_ || (ssl_ != nullptr && SSL_pending(ssl_) > 0) ||
                      (rbio_ != nullptr && BIO_ctrl_pending(rbio_) > 0));
}

void TlsTransport::ShutdownWrite() {
  SendCloseNotify();
  raw_.ShutdownWrite();
}

void TlsTransport::SendCloseNotify() {
  if (handshake_done_ && !failed_ && !close_notify_sent_) {
    close_notify_sent_ = true;
    SSL_shutdown(ssl_);
    FlushCipher();
  }
}

// ---- ClientHello -------------------------------------------------------------------------

ClientHelloInfo ParseClientHello(std::string_view b) {
  ClientHelloInfo info;
  // The handshake message, reassembled from the records that carry it.
  std::string msg;
  size_t pos = 0;
  size_t need = 0;
  while (true) {
    if (b.size() < pos + 5) {
      return info;  // incomplete
    }
    auto u8 = [&](size_t i) { return static_cast<unsigned char>(b[i]); };
    if (u8(pos) != 0x16 || u8(pos + 1) != 0x03) {
      info.status = ClientHelloInfo::Status::kNotTls;
      return info;
    }
    size_t len = (static_cast<size_t>(u8(pos + 3)) << 8) | u8(pos + 4);
    if (len == 0 || len > 16384 + 2048) {
      info.status = ClientHelloInfo::Status::kNotTls;
      return info;
    }
    if (b.size() < pos + 5 + len) {
      return info;
    }
    msg.append(b.substr(pos + 5, len));
    pos += 5 + len;
    if (msg.size() >= 4) {
      if (static_cast<unsigned char>(msg[0]) != 0x01) {
        info.status = ClientHelloInfo::Status::kNotTls;
        return info;
      }
      need = 4 + ((static_cast<size_t>(static_cast<unsigned char>(msg[1])) << 16) |
                  (static_cast<size_t>(static_cast<unsigned char>(msg[2])) << 8) |
                  static_cast<unsigned char>(msg[3]));
      if (need > 65536) {
        info.status = ClientHelloInfo::Status::kNotTls;
        return info;
      }
      if (msg.size() >= need) {
        break;
      }
    }
  }
  std::string_view h(msg.data() + 4, need - 4);
  auto bad = [&info] {
    info.status = ClientHelloInfo::Status::kNotTls;
    return info;
  };
  auto u8 = [&h](size_t i) { return static_cast<unsigned char>(h[i]); };
  auto u16 = [&](size_t i) { return (static_cast<size_t>(u8(i)) << 8) | u8(i + 1); };
  size_t p = 2 + 32;  // client_version, random
  if (h.size() < p + 1) {
    return bad();
  }
  p += 1 + u8(p);  // session_id
  if (h.size() < p + 2) {
    return bad();
  }
  p += 2 + u16(p);  // cipher_suites
  if (h.size() < p + 1) {
    return bad();
  }
  p += 1 + u8(p);  // compression_methods
  info.status = ClientHelloInfo::Status::kDone;
  if (h.size() < p + 2) {
    return info;  // no extensions at all
  }
  size_t end = std::min(h.size(), p + 2 + u16(p));
  p += 2;
  while (p + 4 <= end) {
    size_t type = u16(p);
    size_t len = u16(p + 2);
    p += 4;
    if (p + len > end) {
      return bad();
    }
    if (type == 0 && len >= 5) {  // server_name: list length, type host_name (0), name
      size_t q = p + 2;
      if (u8(q) == 0) {
        size_t name_len = u16(q + 1);
        if (q + 3 + name_len <= p + len) {
          info.sni.assign(h.substr(q + 3, name_len));
          for (auto& c : info.sni) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          }
        }
      }
    }
    p += len;
  }
  return info;
}

}  // namespace skiff::net

#pragma once
// TLS under the codecs (OpenSSL): contexts compiled from PEM, and a Transport that runs the
// handshake non-blocking inside the worker's loop. The SSL object talks to memory BIOs and
// the transport moves the ciphertext to and from the socket itself, so bytes read before
// the TLS context was chosen (the ClientHello a listener peeked at for SNI) are simply fed
// in first, and the ciphertext waiting for the socket stays bounded.
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/net/buffer.h"
#include "proxy/net/transport.h"

namespace skiff::net {

struct TlsServerOptions {
  std::string certificate_chain;  // PEM
  std::string private_key;        // PEM
  std::string ca_certificates;    // PEM: clients' CAs (for client certificates)
  enum class ClientCert { kNone, kRequire, kOptional } client_cert = ClientCert::kNone;
  std::string min_version = "TLSV1_2";     // TLSV1_0 .. TLSV1_3; TLS 1.0/1.1 are refused anyway
  std::string max_version;                 // empty: the highest
  std::vector<std::string> cipher_suites;  // TLS 1.2 suites (OpenSSL/BoringSSL names)
  std::vector<std::string> ecdh_curves;    // key exchange groups, e.g. X25519, P-256
  std::vector<std::string> alpn = {"http/1.1"};
  // Extra checks of a client certificate (any match is enough; empty: none).
  std::vector<std::string> subject_alt_names;
  std::vector<std::string> spki_sha256_base64;
  std::vector<std::string> cert_sha256_hex;
};

struct TlsClientOptions {
  std::string sni;
  std::string certificate_chain;  // PEM: the client's certificate (mutual TLS)
  std::string private_key;
  std::string ca_certificates;  // PEM: CAs to verify the server (empty: system default)
  std::vector<std::string> subject_alt_names;  // accepted server SANs (empty: the SNI)
  bool insecure_skip_verify = false;
  std::vector<std::string> alpn;
};

// What a verified peer certificate says, for x-forwarded-client-cert and logs.
struct PeerCertificate {
  std::string sha256_hex;  // of the DER
  std::string subject;     // RFC 2253
  std::vector<std::string> uri_sans;
  std::vector<std::string> dns_sans;
};

class TlsContext {
 public:
  // Returns nullptr with `error` set (naming what is wrong: the key, the chain, a cipher).
  static std::shared_ptr<TlsContext> Server(const TlsServerOptions& options, std::string* error);
  static std::shared_ptr<TlsContext> Client(const TlsClientOptions& options, std::string* error);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  [[nodiscard]] SSL_CTX* ctx() const { return ctx_; }
  [[nodiscard]] bool server() const { return server_; }
  // The extra client-certificate checks beyond the CA (server side).
  [[nodiscard]] bool CheckPeer(X509* cert, std::string* why) const;
  [[nodiscard]] const TlsClientOptions& client_options() const { return client_; }
  // Client side: does the upstream's certificate carry one of the expected subjectAltNames
  // (a URI exactly, a DNS name as a host name check, wildcards in the certificate allowed)?
  // True when none are expected (the SNI host check then applies) or verification is off.
  [[nodiscard]] bool CheckUpstream(X509* cert, std::string* why) const;

 private:
  TlsContext() = default;
  SSL_CTX* ctx_ = nullptr;
  bool server_ = false;
  std::vector<std::string> sans_, spki_, hashes_;
  std::vector<unsigned char> alpn_wire_;
  TlsClientOptions client_;
  friend int AlpnSelect(SSL*, const unsigned char**, unsigned char*, const unsigned char*,
                        unsigned int, void*);
};

class TlsTransport final : public Transport {
 public:
  // Takes `fd`. `initial`: ciphertext read before (a peeked ClientHello).
  static std::unique_ptr<TlsTransport> Server(int fd, std::shared_ptr<TlsContext> context,
                                              std::string_view initial);
  static std::unique_ptr<TlsTransport> Client(int fd, std::shared_ptr<TlsContext> context);
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  [[nodiscard]] int fd() const override { return raw_.fd(); }
  ssize_t Read(Buffer* buf, bool* filled) override;
  ssize_t Write(Buffer* buf) override;
  void ShutdownWrite() override;
  void SendCloseNotify() override;
  [[nodiscard]] bool wants_write() const override { return !cipher_out_.empty(); }
  [[nodiscard]] bool secure() const override { return true; }

  [[nodiscard]] bool handshake_done() const override { return handshake_done_; }
  [[nodiscard]] std::string_view alpn() const { return alpn_; }
  [[nodiscard]] std::string_view error() const { return error_; }
  // Set after the handshake when the peer sent a (verified) certificate.
  [[nodiscard]] const std::optional<PeerCertificate>& peer() const { return peer_; }
  // Ciphertext arrived before the transport existed is waiting: read without an event.
  [[nodiscard]] bool has_buffered_input() const { return buffered_input_; }
  [[nodiscard]] bool has_pending_input() const override;

 private:
  TlsTransport(int fd, std::shared_ptr<TlsContext> context);
  bool Handshake();
  bool FlushCipher();  // BIO output to the socket; false on a socket error
  void Fail(std::string why);

  PlainTransport raw_;
  std::shared_ptr<TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext from the peer, for SSL
  BIO* wbio_ = nullptr;  // ciphertext from SSL, for the peer
  Buffer cipher_in_;
  Buffer cipher_out_;
  bool handshake_done_ = false;
  bool failed_ = false;
  bool close_notify_sent_ = false;
  bool peer_eof_ = false;
  bool buffered_input_ = false;
  std::string alpn_;
  std::string error_;
  std::optional<PeerCertificate> peer_;
};

// The server name a TLS ClientHello asks for. kIncomplete: more bytes are needed;
// kNotTls: the bytes are not a TLS handshake.
struct ClientHelloInfo {
  enum class Status { kIncomplete, kNotTls, kDone } status = Status::kIncomplete;
  std::string sni;  // empty: the client sent none
};
ClientHelloInfo ParseClientHello(std::string_view bytes);

}  // namespace skiff::net

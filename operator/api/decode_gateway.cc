// Gateway: selector and servers (port, hosts, TLS), with Istio's rules.
#include <algorithm>
#include <set>

#include "common/strings.h"
#include "operator/api/decode_istio_internal.h"

namespace skiff::api {

namespace {

bool IsTlsProtocol(std::string_view p) { return p == "HTTPS" || p == "TLS"; }

// ---- Gateway servers ----

void CheckServerTls(Reader& sr, const std::string& protocol, Messages& msgs, bool* https_redirect,
                    Boxed<ServerTLSSettings>* out) {
  const auto* v = sr.Get("tls");
  if (v == nullptr) {
    if (IsTlsProtocol(protocol)) {
      msgs.Error(sr.Path("tls"), "an " + protocol + " server must have TLS settings");
    }
    return;
  }
  Reader r(*v, sr.Path("tls"), msgs);
  *https_redirect = r.Bool("httpsRedirect");
  std::string mode = r.String("mode");
  if (!mode.empty() && mode != "PASSTHROUGH" && mode != "SIMPLE" && mode != "MUTUAL" &&
      mode != "AUTO_PASSTHROUGH" && mode != "ISTIO_MUTUAL" && mode != "OPTIONAL_MUTUAL") {
    msgs.Error(r.Path("mode"), "unknown TLS mode \"" + mode +
                                   "\" (PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, "
                                   "ISTIO_MUTUAL, OPTIONAL_MUTUAL)");
    mode = "?";  // no rules of a mode apply
  }
  if (mode.empty()) {
    mode = "PASSTHROUGH";
  }
  std::string cert = r.String("serverCertificate");
  std::string key = r.String("privateKey");
  std::string ca = r.String("caCertificates");
  std::string crl = r.String("caCrl");
  std::string credential = r.String("credentialName");
  auto credentials = r.StringList("credentialNames");
  size_t tls_certs = 0;
  std::string first_cert, first_key, first_ca;  // of tlsCertificates
  ForEachItem(r, "tlsCertificates", [&](const nlohmann::json& item, const std::string& p) {
    ++tls_certs;
    Reader cr(item, p, msgs);
    std::string c = cr.String("serverCertificate");
    std::string k = cr.String("privateKey");
    std::string cca = cr.String("caCertificates");
    if (tls_certs == 1) {
      first_cert = c;
      first_key = k;
      first_ca = cca;
    }
    if (c.empty()) {
      msgs.Error(cr.Path("serverCertificate"), "required");
    }
    if (k.empty()) {
      msgs.Error(cr.Path("privateKey"), "required");
    }
  });
  for (const char* f : {"minProtocolVersion", "maxProtocolVersion"}) {
    std::string ver = r.String(f);
    if (!ver.empty() && ver != "TLS_AUTO" && ver != "TLSV1_0" && ver != "TLSV1_1" &&
        ver != "TLSV1_2" && ver != "TLSV1_3") {
      msgs.Error(r.Path(f), "unknown TLS version \"" + ver +
                                "\" (TLS_AUTO, TLSV1_0, TLSV1_1, TLSV1_2, TLSV1_3)");
    }
  }
  ServerTLSSettings t;
  t.mode = mode;
  t.min_protocol_version = r.String("minProtocolVersion");
  t.max_protocol_version = r.String("maxProtocolVersion");
  t.cipher_suites = r.StringList("cipherSuites");
  // Istio hands ecdhCurves to Envoy as they are (an unknown name makes Envoy refuse the
  // listener). skiff-proxy's OpenSSL offers X25519 and the NIST curves; other names (P-224
  // and the post-quantum hybrids, which Istio knows, or names nobody knows) are left out
  // with a warning, so that the server still works.
  static const std::set<std::string, std::less<>> kCurves = {"X25519", "P-256", "P-384", "P-521"};
  static const std::set<std::string, std::less<>> kIstioOnly = {"P-224", "X25519Kyber768Draft00",
                                                                "X25519MLKEM768"};
  auto curves = r.StringList("ecdhCurves");
  for (size_t i = 0; i < curves.size(); ++i) {
    const std::string& c = curves[i];
    std::string at = IndexPath(r.Path("ecdhCurves"), i);
    if (kCurves.count(c) == 0) {
      msgs.Warn(at,
                kIstioOnly.count(c) > 0
                    ? "ECDH curve \"" + c + "\" is not supported by skiff-proxy; left out"
                    : "unknown ECDH curve \"" + c + "\" (X25519, P-256, P-384, P-521); left out");
    } else if (std::find(t.ecdh_curves.begin(), t.ecdh_curves.end(), c) != t.ecdh_curves.end()) {
      msgs.Warn(at, "ECDH curve \"" + c + "\" is listed twice");
    } else {
      t.ecdh_curves.push_back(c);
    }
  }
  if (!curves.empty() && t.ecdh_curves.empty()) {
    msgs.Warn(r.Path("ecdhCurves"), "none of the curves can be used; skiff-proxy's defaults apply");
  }
  t.subject_alt_names = r.StringList("subjectAltNames");
  t.verify_certificate_spki = r.StringList("verifyCertificateSpki");
  t.verify_certificate_hash = r.StringList("verifyCertificateHash");
  t.credential_name = credential.empty() && !credentials.empty() ? credentials[0] : credential;
  t.server_certificate = tls_certs > 0 ? first_cert : cert;
  t.private_key = tls_certs > 0 ? first_key : key;
  t.ca_certificates = tls_certs > 0 && ca.empty() ? first_ca : ca;
  if (credentials.size() > 1) {
    msgs.Warn(r.Path("credentialNames"),
              "skiff serves one certificate per server: only the first one is used");
  }
  for (size_t i = 0; i < t.verify_certificate_hash.size(); ++i) {
    std::string hex;
    for (char c : t.verify_certificate_hash[i]) {
      if (c != ':') {
        hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
      msgs.Warn(IndexPath(r.Path("verifyCertificateHash"), i),
                "is not the hex SHA-256 of a certificate (64 hex digits, colons allowed): no "
                "client certificate matches it");
    }
    t.verify_certificate_hash[i] = hex;
  }
  for (size_t i = 0; i < t.verify_certificate_spki.size(); ++i) {
    std::string raw;
    if (!Base64Decode(t.verify_certificate_spki[i], &raw) || raw.size() != 32) {
      msgs.Warn(IndexPath(r.Path("verifyCertificateSpki"), i),
                "is not the base64 SHA-256 of a public key (32 bytes): no client certificate "
                "matches it");
    }
  }
  // Where the server's certificate comes from: at most one place.
  int sources = (credential.empty() ? 0 : 1) + (credentials.empty() ? 0 : 1) +
                (tls_certs == 0 ? 0 : 1) + (cert.empty() && key.empty() ? 0 : 1);
  if (sources > 1) {
    msgs.Error(r.path(),
               "only one of credentialName, credentialNames, tlsCertificates or "
               "serverCertificate/privateKey may be set");
  }
  if (mode == "ISTIO_MUTUAL") {
    if (!cert.empty() || !key.empty() || !ca.empty() || !credential.empty()) {
      msgs.Error(r.path(),
                 "ISTIO_MUTUAL uses the mesh's certificates: serverCertificate, "
                 "privateKey, caCertificates and credentialName must not be set");
    }
  } else if (mode == "PASSTHROUGH" || mode == "AUTO_PASSTHROUGH") {
    if (!cert.empty() || !key.empty() || !ca.empty() || !crl.empty() || !credential.empty()) {
      msgs.Warn(r.path(), mode + " does not use certificates; they are ignored");
    }
  } else if (mode != "?" && credential.empty() && credentials.empty()) {
    // SIMPLE, MUTUAL, OPTIONAL_MUTUAL
    if (tls_certs == 0) {
      if (cert.empty()) {
        msgs.Error(r.Path("serverCertificate"), mode + " TLS requires a server certificate");
      }
      if (key.empty()) {
        msgs.Error(r.Path("privateKey"), mode + " TLS requires a private key");
      }
    }
    if (mode != "SIMPLE" && ca.empty()) {
      msgs.Error(r.Path("caCertificates"), mode + " TLS requires a client CA bundle");
    }
  }
  if (tls_certs > 1) {
    msgs.Warn(r.Path("tlsCertificates"),
              "skiff serves one certificate per server: only the first one is used");
  }
  if (mode == "ISTIO_MUTUAL" || mode == "AUTO_PASSTHROUGH") {
    msgs.Warn(r.Path("mode"), mode +
                                  " needs the mesh's own certificates and SNI-named clusters, "
                                  "which skiff does not provide; this server is not served");
  }
  if (!crl.empty()) {
    msgs.Warn(r.Path("caCrl"), "certificate revocation lists are not checked by skiff yet");
  }
  if (IsTlsProtocol(protocol)) {
    *out = std::move(t);
  }
  // The protocol decides whether TLS settings belong here.
  if (IsIstioHttpProtocol(protocol)) {
    bool only_redirect = true;
    for (auto it = v->begin(); v->is_object() && it != v->end(); ++it) {
      only_redirect = only_redirect && it.key() == "httpsRedirect";
    }
    if (!only_redirect) {
      msgs.Error(sr.Path("tls"), "a plain-text " + protocol +
                                     " server cannot have TLS settings (only "
                                     "httpsRedirect)");
    }
  } else if (!IsTlsProtocol(protocol) && !protocol.empty()) {
    msgs.Error(sr.Path("tls"), "a " + protocol + " server cannot have TLS settings");
  }
  if (*https_redirect && !IsIstioHttpProtocol(protocol)) {
    msgs.Warn(r.Path("httpsRedirect"), "should only be used with HTTP servers");
  }
}

}  // namespace

Gateway DecodeGateway(Reader& spec) {
  Gateway gw;
  Messages& msgs = spec.msgs();
  gw.selector = spec.StringMap("selector");
  CheckLabels(gw.selector, spec.Path("selector"), msgs);
  std::set<std::string> port_names;
  ForEachItem(spec, "servers", [&](const nlohmann::json& j, const std::string& path) {
    Reader r(j, path, msgs);
    if (!r.ok()) {
      msgs.Error(path, "a server must be a map, not null");
      return;
    }
    Server s;
    s.name = r.String("name");
    s.bind = r.String("bind");
    r.String("defaultEndpoint");
    bool unix_bind = StartsWith(s.bind, "unix://");
    if (unix_bind && s.bind.size() == 7) {
      msgs.Error(r.Path("bind"), "\"" + s.bind + "\" names no socket");
    } else if (!s.bind.empty() && !unix_bind && !IsValidIp(s.bind)) {
      msgs.Error(r.Path("bind"), "\"" + s.bind + "\" is not a valid IP address (or unix://)");
    }
    std::string protocol;
    if (const auto* p = r.Get("port")) {
      Reader pr(*p, r.Path("port"), msgs);
      ServerPort port;
      auto number = pr.Int("number");
      if (unix_bind) {
        if (number.value_or(0) != 0) {
          msgs.Error(pr.Path("number"), "port number must be 0 for a unix domain socket bind");
        }
      } else if (!number || *number < 1 || *number > 65535) {
        msgs.Error(pr.Path("number"),
                   number ? "must be a port number between 1 and 65535 (got " +
                                std::to_string(*number) + ")"
                          : std::string("must be a port number between 1 and 65535"));
      } else {
        port.number = static_cast<uint32_t>(*number);
      }
      port.protocol = pr.String("protocol");
      std::string upper = UpperAscii(port.protocol);
      if (!IsIstioPortProtocol(upper)) {
        msgs.Error(pr.Path("protocol"),
                   port.protocol.empty() ? std::string("invalid protocol \"\": required "
                                                       "(HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, ...)")
                                         : "invalid protocol \"" + port.protocol +
                                               "\" (HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, ...)");
      } else {
        protocol = upper;
      }
      port.protocol = upper;
      port.name = pr.String("name");
      if (port.name.empty()) {
        msgs.Error(pr.Path("name"), "port name must be set");
      } else if (!port_names.insert(port.name).second) {
        msgs.Error(pr.Path("name"),
                   "port names in servers must be unique: \"" + port.name + "\" is used twice");
      }
      if (auto target = pr.Int("targetPort"); target && *target > 0) {
        msgs.Warn(pr.Path("targetPort"), "has no effect on Gateways");
      }
      s.port = port;
    } else {
      msgs.Error(r.Path("port"), "required");
    }
    s.hosts = r.StringList("hosts");
    if (s.hosts.empty()) {
      msgs.Error(r.Path("hosts"), "at least one host is required");
    }
    for (size_t i = 0; i < s.hosts.size(); ++i) {
      if (auto err = ValidateGatewayHost(s.hosts[i]); !err.empty()) {
        msgs.Error(IndexPath(r.Path("hosts"), i), err);
        continue;
      }
      // SNI cannot match a partial wildcard ("*bar.com").
      std::string_view h = s.hosts[i];
      h = h.substr(h.find('/') == std::string_view::npos ? 0 : h.find('/') + 1);
      if (IsTlsProtocol(protocol) && StartsWith(h, "*") && h != "*" && !StartsWith(h, "*.")) {
        msgs.Error(IndexPath(r.Path("hosts"), i),
                   "partial wildcard \"" + std::string(h) + "\" not allowed on a TLS server");
      }
    }
    s.has_tls = r.Get("tls") != nullptr;
    if (s.port) {
      CheckServerTls(r, protocol, msgs, &s.https_redirect, &s.tls);
    } else {
      r.Ignore("tls");
    }
    gw.servers.push_back(std::move(s));
  });
  if (gw.servers.empty()) {
    msgs.Error(spec.Path("servers"), "at least one server is required");
  }
  return gw;
}

}  // namespace skiff::api

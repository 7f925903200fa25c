// TLS in the snapshot: a terminating Gateway server's context (its certificate from a
// Secret of the Gateway's namespace, or files on the proxy's disk), a DestinationRule's
// TLS to the upstream, and the Secrets they name, sent only in the snapshots of proxies
// whose listeners or clusters use them.
#include "common/strings.h"
#include "operator/translate/builder.h"

namespace skiff::translate {

namespace {

// The snapshot name of a Kubernetes Secret (as Istio's SDS resource names).
std::string KubeName(std::string_view ns, std::string_view name) {
  std::string out = "kubernetes://";
  out.append(ns).append("/").append(name);
  return out;
}

std::string FileName(std::string_view path) {
  std::string out = "file://";
  out.append(path);
  return out;
}

}  // namespace

const std::string& Builder::AddSecret(v1::Secret secret) {
  auto [it, inserted] = secrets_.try_emplace(secret.name());
  if (inserted) {
    it->second = std::move(secret);
  }
  return it->first;
}

void Builder::EmitSecrets() {
  for (auto& [name, secret] : secrets_) {
    *snapshot_->add_secrets() = std::move(secret);
  }
  secrets_.clear();
}

namespace {

// A Kubernetes Secret as the snapshot carries it: what of it is usable (every use of one
// Secret gets the same resource).
v1::Secret FromEntry(std::string_view ns, std::string_view name, const Index::SecretEntry& e) {
  v1::Secret out;
  out.set_name(KubeName(ns, name));
  const auto& s = e.secret();
  if (e.cert_problem.empty()) {
    out.set_certificate_chain(s.cert);
    out.set_private_key(s.key);
  }
  if (e.ca_problem.empty()) {
    out.set_ca_certificates(s.ca);
  }
  return out;
}

}  // namespace

bool Builder::ServerTlsContext(const Bound& b, v1::TlsServerContext* ctx) {
  const auto& t = *b.server->tls;
  const bool mutual = t.mode == "MUTUAL" || t.mode == "OPTIONAL_MUTUAL";
  if (t.mode == "MUTUAL") {
    ctx->set_mode(v1::TlsServerContext::MUTUAL);
  } else if (t.mode == "OPTIONAL_MUTUAL") {
    ctx->set_mode(v1::TlsServerContext::OPTIONAL_MUTUAL);
  } else {
    ctx->set_mode(v1::TlsServerContext::SIMPLE);
  }
  if (!t.credential_name.empty()) {
    auto creds =
        index_.CredentialsFor(b.gateway->meta.namespace_, t, b.server_index, group_.namespace_);
    if (!creds.problem.empty() || creds.cert == nullptr) {
      return false;
    }
    const std::string& ns = creds.ns;
    ctx->set_certificate(AddSecret(FromEntry(ns, t.credential_name, *creds.cert)));
    if (mutual) {
      if (creds.ca == creds.cert) {
        ctx->set_ca_certificate(ctx->certificate());
      } else {
        std::string ca_name = t.credential_name + "-cacert";
        ctx->set_ca_certificate(AddSecret(FromEntry(ns, ca_name, *creds.ca)));
      }
    }
  } else {
    // Istio's file mode: paths on the proxy's disk, read by the proxy.
    if (t.server_certificate.empty() || t.private_key.empty()) {
      return false;
    }
    v1::Secret cert;
    cert.set_name(FileName(t.server_certificate));
    cert.set_certificate_chain_file(t.server_certificate);
    cert.set_private_key_file(t.private_key);
    ctx->set_certificate(AddSecret(std::move(cert)));
    if (mutual) {
      if (t.ca_certificates.empty()) {
        return false;
      }
      v1::Secret ca;
      ca.set_name(FileName(t.ca_certificates));
      ca.set_ca_certificates_file(t.ca_certificates);
      ctx->set_ca_certificate(AddSecret(std::move(ca)));
    }
  }
  // TLS_AUTO (or nothing): the proxy's default, TLS 1.2 and up.
  if (!t.min_protocol_version.empty() && t.min_protocol_version != "TLS_AUTO") {
    ctx->set_min_protocol_version(t.min_protocol_version);
  }
  if (!t.max_protocol_version.empty() && t.max_protocol_version != "TLS_AUTO") {
    ctx->set_max_protocol_version(t.max_protocol_version);
  }
  for (const auto& c : t.cipher_suites) {
    ctx->add_cipher_suites(c);
  }
  for (const auto& c : t.ecdh_curves) {
    ctx->add_ecdh_curves(c);
  }
  // As Istio's HTTPS servers: HTTP/2 for clients that offer it, else HTTP/1.1. (A TLS
  // server's bytes are not HTTP: it names no protocol.)
  if (b.server->port->protocol != "TLS") {
    ctx->add_alpn_protocols("h2");
    ctx->add_alpn_protocols("http/1.1");
  }
  if (mutual) {
    for (const auto& s : t.subject_alt_names) {
      ctx->add_subject_alt_names(s);
    }
    for (const auto& s : t.verify_certificate_spki) {
      ctx->add_verify_certificate_spki(s);
    }
    for (const auto& s : t.verify_certificate_hash) {
      ctx->add_verify_certificate_hash(s);
    }
  }
  return true;
}

void Builder::ApplyClientTls(const api::ClientTLSSettings* tls, std::string_view host,
                             v1::Cluster* c) {
  if (tls == nullptr || (tls->mode != "SIMPLE" && tls->mode != "MUTUAL")) {
    return;  // none, DISABLE, or ISTIO_MUTUAL (warned about: plain text)
  }
  auto* out = c->mutable_tls();
  const bool mutual = tls->mode == "MUTUAL";
  out->set_mode(mutual ? v1::TlsClientContext::MUTUAL : v1::TlsClientContext::SIMPLE);
  // Without an sni, Istio has Envoy send the request's host (auto_sni) and check the
  // server's certificate against it (auto_san_validation). skiff sends the destination's
  // host, which the proxy then also checks the certificate against; a wildcard host has no
  // name to send (the CA is still checked).
  if (!tls->sni.empty()) {
    out->set_sni(tls->sni);
  } else if (host.find('*') == std::string_view::npos && !EndsWith(host, ".svc.cluster.local")) {
    // (Not a Kubernetes Service's FQDN: its clients name it by short names, which Istio's
    // auto SNI would send, and its certificate may not carry the FQDN.)
    out->set_sni(host.data(), host.size());
  }
  for (const auto& s : tls->subject_alt_names) {
    out->add_subject_alt_names(s);
  }
  out->set_insecure_skip_verify(tls->insecure_skip_verify);
  if (!tls->credential_name.empty()) {
    // A Secret of the proxy's namespace (as Istio's gateways read it): the client's chain
    // and key for MUTUAL, and the CA to verify the server with (its own, or
    // `<name>-cacert`). One that is missing is left out: the proxy then connects without
    // a client certificate, or verifies with its system CAs.
    const std::string& ns = group_.namespace_;
    const Index::SecretEntry* e = index_.SecretFor(ns, tls->credential_name);
    if (e != nullptr) {
      const std::string& name = AddSecret(FromEntry(ns, tls->credential_name, *e));
      if (mutual && e->cert_problem.empty()) {
        out->set_certificate(name);
      }
      if (e->ca_problem.empty() && !tls->insecure_skip_verify) {
        out->set_ca_certificate(name);
      }
    }
    if (out->ca_certificate().empty() && !tls->insecure_skip_verify) {
      std::string ca_name = tls->credential_name + "-cacert";
      const Index::SecretEntry* ca = index_.SecretFor(ns, ca_name);
      if (ca != nullptr && ca->ca_problem.empty()) {
        out->set_ca_certificate(AddSecret(FromEntry(ns, ca_name, *ca)));
      }
    }
    return;
  }
  if (mutual && !tls->client_certificate.empty() && !tls->private_key.empty()) {
    v1::Secret cert;
    cert.set_name(FileName(tls->client_certificate));
    cert.set_certificate_chain_file(tls->client_certificate);
    cert.set_private_key_file(tls->private_key);
    out->set_certificate(AddSecret(std::move(cert)));
  }
  if (!tls->ca_certificates.empty() && !tls->insecure_skip_verify) {
    v1::Secret ca;
    ca.set_name(FileName(tls->ca_certificates));
    ca.set_ca_certificates_file(tls->ca_certificates);
    out->set_ca_certificate(AddSecret(std::move(ca)));
  }
}

}  // namespace skiff::translate

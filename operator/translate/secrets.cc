// TLS Secrets: the PEM a Gateway server or a DestinationRule names, checked once per
// translation with OpenSSL (a chain and a key that parse and belong together, CA
// certificates that parse), so that a bad Secret becomes a status on the Gateway and that
// server alone goes unserved, instead of a snapshot the proxy would refuse as a whole.
// Messages never quote the material.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <set>

#include "operator/translate/index.h"

namespace skiff::translate {

namespace {

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

std::unique_ptr<BIO, BioDeleter> MemBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioDeleter>(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The certificates of a PEM bundle (at most `limit`), the first one kept in `*first`.
size_t CountCertificates(const std::string& pem, std::unique_ptr<X509, X509Deleter>* first) {
  auto bio = MemBio(pem);
  size_t n = 0;
  constexpr size_t kLimit = 1000;
  while (n < kLimit) {
    X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (x == nullptr) {
      break;
    }
    if (n == 0 && first != nullptr) {
      first->reset(x);
    } else {
      X509_free(x);
    }
    ++n;
  }
  ERR_clear_error();
  return n;
}

// Why a chain and key cannot serve, or "".
std::string CertProblem(const api::Secret& s, const std::string& cert_key,
                        const std::string& key_key) {
  if (s.cert.empty()) {
    return "has no certificate (" + cert_key + ")";
  }
  if (s.key.empty()) {
    return "has no private key (" + key_key + ")";
  }
  std::unique_ptr<X509, X509Deleter> leaf;
  if (CountCertificates(s.cert, &leaf) == 0) {
    return cert_key + " holds no PEM certificate";
  }
  auto bio = MemBio(s.key);
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return key_key + " holds no PEM private key (or it is encrypted)";
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return "the private key (" + key_key + ") does not belong to the certificate (" + cert_key +
           ")";
  }
  return "";
}

std::string CaProblem(const api::Secret& s, const std::string& ca_key) {
  if (s.ca.empty()) {
    return "has no CA certificates (" + ca_key + ")";
  }
  if (CountCertificates(s.ca, nullptr) == 0) {
    return ca_key + " holds no PEM certificate";
  }
  return "";
}

void Check(Index::SecretEntry* e) {
  if (e->checked) {
    return;
  }
  e->checked = true;
  if (!e->object->Valid()) {
    std::string why = "is invalid (";
    for (const auto& m : e->object->messages) {
      if (m.level == api::Message::Level::kError) {
        why += (why.back() == '(' ? "" : "; ") + m.Format();
      }
    }
    e->cert_problem = e->ca_problem = why + ")";
    return;
  }
  const auto& s = e->secret();
  bool generic = s.type != "kubernetes.io/tls";
  // The key names as the Secret's type spells them, for the messages.
  e->cert_problem = CertProblem(s, generic ? "cert or tls.crt" : "tls.crt",
                                generic ? "key or tls.key" : "tls.key");
  e->ca_problem = CaProblem(s, generic ? "cacert or ca.crt" : "ca.crt");
}

}  // namespace

const Index::SecretEntry* Index::SecretFor(std::string_view ns, std::string_view name) const {
  std::string key;
  key.reserve(ns.size() + name.size() + 1);
  key.append(ns).append("/").append(name);
  auto it = secrets.find(key);
  return it == secrets.end() ? nullptr : &it->second;
}

void Index::CheckReferencedSecrets() {
  if (secrets.empty()) {
    return;
  }
  // A Gateway's credentialName is a Secret of its proxies' namespace (any of them), or of
  // the Gateway's own; a DestinationRule's one of the proxy's namespace.
  std::set<std::string, std::less<>> names;
  for (const api::Object* gw : gateways) {
    for (const auto& s : gw->As<api::Gateway>().servers) {
      if (s.tls && !s.tls->credential_name.empty()) {
        names.insert(s.tls->credential_name);
        names.insert(s.tls->credential_name + "-cacert");
      }
    }
  }
  for (const api::Object* dr : destination_rules) {
    const auto& spec = dr->As<api::DestinationRule>();
    auto add_tls = [&](const std::optional<api::ClientTLSSettings>& tls) {
      if (tls && !tls->credential_name.empty()) {
        names.insert(tls->credential_name);
        names.insert(tls->credential_name + "-cacert");
      }
    };
    auto add = [&](const api::TrafficPolicy* tp) {
      if (tp != nullptr) {
        add_tls(tp->tls);
        for (const auto& p : tp->port_level_settings) {
          add_tls(p.tls);
        }
      }
    };
    add(spec.traffic_policy.get());
    for (const auto& sub : spec.subsets) {
      add(sub.traffic_policy.get());
    }
  }
  if (names.empty()) {
    return;
  }
  for (auto& [key, entry] : secrets) {
    std::string_view name = std::string_view(key).substr(key.find('/') + 1);
    if (names.find(name) != names.end()) {
      Check(&entry);
    }
  }
}

Index::ServerCredentials Index::CredentialsFor(const std::string& gateway_ns,
                                               const api::ServerTLSSettings& tls,
                                               size_t server_index,
                                               const std::string& proxy_ns) const {
  ServerCredentials out;
  const std::string& ns =
      !proxy_ns.empty() && proxy_ns != gateway_ns && SecretFor(proxy_ns, tls.credential_name)
          ? proxy_ns
          : gateway_ns;
  out.ns = ns;
  const bool mutual = tls.mode == "MUTUAL" || tls.mode == "OPTIONAL_MUTUAL";
  if (tls.credential_name.empty()) {
    return out;  // files on the proxy's disk: read (and checked) by the proxy
  }
  std::string at = "spec.servers[" + std::to_string(server_index) + "].tls.credentialName";
  const std::string& name = tls.credential_name;
  out.cert = SecretFor(ns, name);
  if (out.cert == nullptr) {
    out.problem =
        at + ": Secret " + ns + "/" + name + " does not exist (or holds no TLS keys)" +
        (proxy_ns.empty() ? ", nor does a usable one of that name in another namespace"
                          : " in the Gateway's namespace nor in the proxy's (" + proxy_ns + ")") +
        "; this server is not served";
    return out;
  }
  if (!out.cert->cert_problem.empty()) {
    out.problem = at + ": Secret " + ns + "/" + name + ": " + out.cert->cert_problem +
                  "; this server is not served";
    out.cert = nullptr;
    return out;
  }
  if (!mutual) {
    return out;
  }
  if (!out.cert->secret().ca.empty()) {
    if (!out.cert->ca_problem.empty()) {
      out.problem = at + ": Secret " + ns + "/" + name + ": " + out.cert->ca_problem +
                    "; this server is not served";
      out.cert = nullptr;
      return out;
    }
    out.ca = out.cert;
    return out;
  }
  const SecretEntry* ca = SecretFor(ns, name + "-cacert");
  if (ca == nullptr) {
    out.problem = at + ": " + tls.mode + " needs the clients' CA: neither Secret " + ns + "/" +
                  name + " (ca.crt or cacert) nor Secret " + ns + "/" + name +
                  "-cacert has one; this server is not served";
    out.cert = nullptr;
    return out;
  }
  if (!ca->ca_problem.empty()) {
    out.problem = at + ": Secret " + ns + "/" + name + "-cacert: " + ca->ca_problem +
                  "; this server is not served";
    out.cert = nullptr;
    return out;
  }
  out.ca = ca;
  return out;
}

}  // namespace skiff::translate

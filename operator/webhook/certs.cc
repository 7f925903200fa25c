#include "operator/webhook/certs.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <memory>

namespace skiff::webhook {

namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

std::string OpenSslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  char buf[256] = {0};
  if (e != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
  }
  ERR_clear_error();
  return what + (e != 0 ? std::string(": ") + buf : std::string());
}

Key NewKey() { return Key(EVP_EC_gen("P-256")); }

std::string KeyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return {};
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string CertPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return {};
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Key ReadKey(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

Cert ReadCert(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return Cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) {
    return false;
  }
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key`, issued by `issuer` (itself when null) with `issuer_key`.
Cert MakeCert(EVP_PKEY* key, const std::string& common_name, X509* issuer, EVP_PKEY* issuer_key,
              std::chrono::hours validity, bool ca, const ServingNames* names, std::string* error) {
  Cert cert(X509_new());
  if (!cert) {
    *error = OpenSslError("X509_new");
    return nullptr;
  }
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  // Valid from an hour ago (clock skew between replicas and the API server).
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(
      X509_getm_notAfter(cert.get()),
      static_cast<long>(std::chrono::duration_cast<std::chrono::seconds>(validity).count()));
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("skiff"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* issuer_cert = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer_cert));
  bool ok = true;
  if (ca) {
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_subject_key_identifier, "hash");
  } else {
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_key_usage,
                            "critical,digitalSignature,keyEncipherment");
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_ext_key_usage, "serverAuth");
    ok = ok && AddExtension(cert.get(), issuer_cert, NID_authority_key_identifier, "keyid");
    std::string san;
    for (const auto& d : names->dns) {
      san.append(san.empty() ? "" : ",").append("DNS:").append(d);
    }
    for (const auto& ip : names->ips) {
      san.append(san.empty() ? "" : ",").append("IP:").append(ip);
    }
    ok = ok && !san.empty() && AddExtension(cert.get(), issuer_cert, NID_subject_alt_name, san);
  }
  if (!ok) {
    *error = OpenSslError("adding certificate extensions");
    return nullptr;
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) {
    *error = OpenSslError("signing the certificate");
    return nullptr;
  }
  return cert;
}

std::string ServingName(const ServingNames& names) {
  return names.dns.empty() ? (names.ips.empty() ? "skiff-webhook" : names.ips[0]) : names.dns[0];
}

// Seconds from now until the certificate's notAfter (negative when expired).
long long SecondsLeft(X509* cert) {
  int days = 0;
  int secs = 0;
  if (ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(cert)) != 1) {
    return -1;
  }
  return static_cast<long long>(days) * 86400 + secs;
}

}  // namespace

CertBundle GenerateCerts(const ServingNames& names, std::chrono::hours ca_validity,
                         std::chrono::hours cert_validity, std::string* error) {
  Key ca_key = NewKey();
  if (!ca_key) {
    *error = OpenSslError("generating the CA key");
    return {};
  }
  Cert ca = MakeCert(ca_key.get(), "skiff webhook CA", nullptr, ca_key.get(), ca_validity, true,
                     nullptr, error);
  if (!ca) {
    return {};
  }
  CertBundle bundle;
  bundle.ca_pem = CertPem(ca.get());
  bundle.ca_key_pem = KeyPem(ca_key.get());
  if (!RenewServingCert(&bundle, names, cert_validity, error)) {
    return {};
  }
  return bundle;
}

bool RenewServingCert(CertBundle* bundle, const ServingNames& names,
                      std::chrono::hours cert_validity, std::string* error) {
  Cert ca = ReadCert(bundle->ca_pem);
  Key ca_key = ReadKey(bundle->ca_key_pem);
  if (!ca || !ca_key) {
    *error = "the CA certificate or key does not parse";
    return false;
  }
  Key key = NewKey();
  if (!key) {
    *error = OpenSslError("generating the serving key");
    return false;
  }
  Cert cert = MakeCert(key.get(), ServingName(names), ca.get(), ca_key.get(), cert_validity, false,
                       &names, error);
  if (!cert) {
    return false;
  }
  bundle->cert_pem = CertPem(cert.get());
  bundle->key_pem = KeyPem(key.get());
  return !bundle->cert_pem.empty() && !bundle->key_pem.empty();
}

CertState CheckCerts(const CertBundle& bundle, const ServingNames& names,
                     std::chrono::hours min_left, std::string* why) {
  const long long min_secs = std::chrono::duration_cast<std::chrono::seconds>(min_left).count();
  Cert ca = ReadCert(bundle.ca_pem);
  Key ca_key = ReadKey(bundle.ca_key_pem);
  if (!ca || !ca_key) {
    ERR_clear_error();
    *why = "no CA certificate and key";
    return CertState::kRenewAll;
  }
  if (X509_check_private_key(ca.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    *why = "the CA key does not match its certificate";
    return CertState::kRenewAll;
  }
  if (SecondsLeft(ca.get()) < min_secs) {
    *why = "the CA expires soon";
    return CertState::kRenewAll;
  }
  Cert cert = ReadCert(bundle.cert_pem);
  Key key = ReadKey(bundle.key_pem);
  if (!cert || !key) {
    ERR_clear_error();
    *why = "no serving certificate and key";
    return CertState::kRenewServingCert;
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    *why = "the serving key does not match its certificate";
    return CertState::kRenewServingCert;
  }
  if (X509_verify(cert.get(), X509_get0_pubkey(ca.get())) != 1) {
    ERR_clear_error();
    *why = "the serving certificate is not signed by the CA";
    return CertState::kRenewServingCert;
  }
  if (SecondsLeft(cert.get()) < min_secs) {
    *why = "the serving certificate expires soon";
    return CertState::kRenewServingCert;
  }
  for (const auto& d : names.dns) {
    if (X509_check_host(cert.get(), d.c_str(), d.size(), 0, nullptr) != 1) {
      *why = "the serving certificate is not for " + d;
      return CertState::kRenewServingCert;
    }
  }
  for (const auto& ip : names.ips) {
    if (X509_check_ip_asc(cert.get(), ip.c_str(), 0) != 1) {
      *why = "the serving certificate is not for " + ip;
      return CertState::kRenewServingCert;
    }
  }
  return CertState::kGood;
}

}  // namespace skiff::webhook

#pragma once
// The webhook's own certificate authority and serving certificate (OpenSSL): made at start
// when none is kept (in a Secret, or a directory in file mode), checked on every sync, and
// renewed before they expire. The CA's key is kept with it, so a new serving certificate
// does not change the CA bundle the API server trusts.
#include <chrono>
#include <string>
#include <vector>

namespace skiff::webhook {

struct CertBundle {
  std::string ca_pem;
  std::string ca_key_pem;
  std::string cert_pem;  // the serving certificate, signed by the CA
  std::string key_pem;
  bool operator==(const CertBundle&) const = default;
};

// The names the serving certificate is for.
struct ServingNames {
  std::vector<std::string> dns;  // "skiff-operator.skiff-system.svc", "localhost", ...
  std::vector<std::string> ips;  // "127.0.0.1"
};

// A new CA (valid `ca_validity`) and serving certificate (valid `cert_validity`), EC P-256.
// Empty on failure, with `*error`.
CertBundle GenerateCerts(const ServingNames& names, std::chrono::hours ca_validity,
                         std::chrono::hours cert_validity, std::string* error);

// A new serving certificate from the CA of `bundle` (kept); false with `*error` on failure.
bool RenewServingCert(CertBundle* bundle, const ServingNames& names,
                      std::chrono::hours cert_validity, std::string* error);

enum class CertState {
  kGood,
  kRenewServingCert,  // the CA is fine; the serving certificate is not (names, expiry)
  kRenewAll,          // nothing usable (missing, unparsable, CA expiring, key mismatch)
};
// Whether `bundle` serves `names` for at least `min_left` more; `*why` says what is wrong.
CertState CheckCerts(const CertBundle& bundle, const ServingNames& names,
                     std::chrono::hours min_left, std::string* why);

}  // namespace skiff::webhook

#pragma once
// Where the webhook's certificates are kept, and who keeps the API server's trust in them
// current:
// - KubeCertStore: a Secret (type kubernetes.io/tls, plus the CA and its key) that every
//   replica reads, so all serve the same certificate; the first replica to find none
//   creates it (a create conflict means another one did: its Secret is used). The leader
//   also writes the CA into the caBundle of every webhook of the
//   ValidatingWebhookConfiguration and of the injection's MutatingWebhookConfiguration,
//   and puts it back if it changes.
// - DirCertStore (file mode): ca.crt, ca.key, tls.crt, tls.key in a directory.
// Both renew the serving certificate (and, when it expires, the CA) in good time.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "operator/source/kube/client.h"
#include "operator/webhook/certs.h"

namespace skiff::webhook {

struct CertPolicy {
  std::chrono::hours ca_validity{24 * 365 * 10};
  std::chrono::hours cert_validity{24 * 365};
  std::chrono::hours renew_before{24 * 30};  // renew when less than this is left
};

// Loads or makes the certificates in `dir`; false with `*error`.
bool LoadOrCreateInDir(const std::string& dir, const ServingNames& names, const CertPolicy& policy,
                       CertBundle* out, std::string* error);

struct KubeCertOptions {
  std::string namespace_;  // of the Secret
  std::string secret_name = "skiff-webhook-certs";
  std::string webhook_config = "skiff-validation";  // ValidatingWebhookConfiguration
  // The MutatingWebhookConfiguration of sidecar injection (empty: none).
  std::string mutating_webhook_config = "skiff-injection";
  ServingNames names;
  CertPolicy policy;
  std::chrono::milliseconds interval{5000};
};

class KubeCertStore {
 public:
  KubeCertStore(std::unique_ptr<kube::Client> client, KubeCertOptions options,
                std::function<bool()> is_leader,
                std::function<void(const CertBundle&)> on_certificates);
  ~KubeCertStore();
  KubeCertStore(const KubeCertStore&) = delete;
  KubeCertStore& operator=(const KubeCertStore&) = delete;

  void Start();  // syncs on a thread, every `interval`
  void Stop();
  // One round: the Secret (all replicas), then the caBundle (leader). False on an error,
  // which is logged; the next round tries again.
  bool Sync();

  std::atomic<uint64_t> ca_bundle_updates{0};
  std::atomic<uint64_t> secret_writes{0};
  std::atomic<uint64_t> sync_errors{0};

 private:
  bool SyncSecret();
  // The caBundle of every webhook of one configuration (`resource`: its API resource).
  bool SyncCaBundle(const std::string& resource, const std::string& kind, const std::string& name);

  std::unique_ptr<kube::Client> client_;
  KubeCertOptions options_;
  std::function<bool()> is_leader_;
  std::function<void(const CertBundle&)> on_certificates_;
  CertBundle current_;
  std::string last_error_;                               // logged once until it changes
  std::map<std::string, std::string> ca_bundle_errors_;  // by configuration kind, the same
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace skiff::webhook

#include "operator/webhook/cert_store.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace skiff::webhook {

namespace fs = std::filesystem;

namespace {

bool ReadFile(const fs::path& p, std::string* out) {
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

bool WriteFile(const fs::path& p, const std::string& data, bool secret) {
  fs::path tmp = p;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return false;
    }
    out << data;
    if (!out) {
      return false;
    }
  }
  ::chmod(tmp.c_str(), secret ? 0600 : 0644);
  std::error_code ec;
  fs::rename(tmp, p, ec);
  return !ec;
}

// Brings `bundle` to a usable state for `names`; true when it changed.
bool Refresh(CertBundle* bundle, const ServingNames& names, const CertPolicy& policy,
             std::string* why, std::string* error) {
  switch (CheckCerts(*bundle, names, policy.renew_before, why)) {
    case CertState::kGood:
      return false;
    case CertState::kRenewServingCert:
      if (!RenewServingCert(bundle, names, policy.cert_validity, error)) {
        return false;
      }
      return true;
    case CertState::kRenewAll: {
      CertBundle fresh = GenerateCerts(names, policy.ca_validity, policy.cert_validity, error);
      if (fresh.ca_pem.empty()) {
        return false;
      }
      *bundle = std::move(fresh);
      return true;
    }
  }
  return false;
}

}  // namespace

bool LoadOrCreateInDir(const std::string& dir, const ServingNames& names, const CertPolicy& policy,
                       CertBundle* out, std::string* error) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  CertBundle b;
  fs::path d(dir);
  ReadFile(d / "ca.crt", &b.ca_pem);
  ReadFile(d / "ca.key", &b.ca_key_pem);
  ReadFile(d / "tls.crt", &b.cert_pem);
  ReadFile(d / "tls.key", &b.key_pem);
  std::string why;
  error->clear();
  bool changed = Refresh(&b, names, policy, &why, error);
  if (!error->empty()) {
    return false;
  }
  if (changed) {
    spdlog::info("webhook: new certificates in {} ({})", dir, why);
    if (!WriteFile(d / "ca.crt", b.ca_pem, false) || !WriteFile(d / "ca.key", b.ca_key_pem, true) ||
        !WriteFile(d / "tls.crt", b.cert_pem, false) ||
        !WriteFile(d / "tls.key", b.key_pem, true)) {
      *error = "cannot write the certificates to " + dir;
      return false;
    }
  }
  *out = std::move(b);
  return true;
}

KubeCertStore::KubeCertStore(std::unique_ptr<kube::Client> client, KubeCertOptions options,
                             std::function<bool()> is_leader,
                             std::function<void(const CertBundle&)> on_certificates)
    : client_(std::move(client)),
      options_(std::move(options)),
      is_leader_(std::move(is_leader)),
      on_certificates_(std::move(on_certificates)) {}

KubeCertStore::~KubeCertStore() { Stop(); }

void KubeCertStore::Start() {
  thread_ = std::thread([this] {
    for (;;) {
      Sync();
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, options_.interval, [this] { return stop_; })) {
        return;
      }
    }
  });
}

void KubeCertStore::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  client_->Cancel();
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool KubeCertStore::Sync() {
  bool ok = SyncSecret();
  if (ok && is_leader_()) {
    ok = SyncCaBundle("validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
                      options_.webhook_config);
    if (!options_.mutating_webhook_config.empty()) {
      ok = SyncCaBundle("mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
                        options_.mutating_webhook_config) &&
           ok;
    }
  }
  if (ok) {
    last_error_.clear();
  } else {
    sync_errors.fetch_add(1, std::memory_order_relaxed);
  }
  return ok;
}

bool KubeCertStore::SyncSecret() {
  const std::string base = "/api/v1/namespaces/" + options_.namespace_ + "/secrets";
  const std::string path = base + "/" + options_.secret_name;
  auto report = [this](const std::string& what) {
    if (what != last_error_) {
      spdlog::error("webhook: {}", what);
      last_error_ = what;
    }
    return false;
  };
  kube::Response get = client_->Get(path);
  CertBundle bundle;
  std::string resource_version;
  if (get.ok()) {
    const auto& data = get.body.value("data", nlohmann::json::object());
    auto field = [&](const char* key, std::string* out) {
      if (data.contains(key) && data[key].is_string()) {
        Base64Decode(data[key].get<std::string>(), out);
      }
    };
    field("ca.crt", &bundle.ca_pem);
    field("ca.key", &bundle.ca_key_pem);
    field("tls.crt", &bundle.cert_pem);
    field("tls.key", &bundle.key_pem);
    resource_version = get.body["metadata"].value("resourceVersion", "");
  } else if (get.status != 404) {
    return report("reading Secret " + options_.namespace_ + "/" + options_.secret_name + ": " +
                  get.Describe());
  }
  std::string why;
  std::string error;
  bool changed = Refresh(&bundle, options_.names, options_.policy, &why, &error);
  if (!error.empty()) {
    return report("making certificates: " + error);
  }
  if (changed) {
    nlohmann::json secret = {{"apiVersion", "v1"},
                             {"kind", "Secret"},
                             {"type", "kubernetes.io/tls"},
                             {"metadata",
                              {{"name", options_.secret_name},
                               {"namespace", options_.namespace_},
                               {"labels", {{"app.kubernetes.io/managed-by", "skiff-operator"}}}}},
                             {"data",
                              {{"ca.crt", Base64Encode(bundle.ca_pem)},
                               {"ca.key", Base64Encode(bundle.ca_key_pem)},
                               {"tls.crt", Base64Encode(bundle.cert_pem)},
                               {"tls.key", Base64Encode(bundle.key_pem)}}}};
    kube::Response put;
    if (get.status == 404) {
      put = client_->Send("POST", base, secret);
    } else {
      secret["metadata"]["resourceVersion"] = resource_version;  // optimistic lock
      put = client_->Send("PUT", path, secret);
    }
    if (put.status == 409) {
      return true;  // another replica wrote it first: the next round reads theirs
    }
    if (!put.ok()) {
      return report("writing Secret " + options_.namespace_ + "/" + options_.secret_name + ": " +
                    put.Describe());
    }
    secret_writes.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("webhook: new certificates in Secret {}/{} ({})", options_.namespace_,
                 options_.secret_name, why);
  }
  if (!(bundle == current_)) {
    current_ = bundle;
    on_certificates_(current_);
  }
  return true;
}

bool KubeCertStore::SyncCaBundle(const std::string& resource, const std::string& kind,
                                 const std::string& name) {
  const std::string path = "/apis/admissionregistration.k8s.io/v1/" + resource + "/" + name;
  // Each configuration's problem is logged once until it changes (not in turn with the
  // other's).
  auto report = [this, &kind](const std::string& what) {
    std::string& last = ca_bundle_errors_[kind];
    if (what != last) {
      spdlog::error("webhook: {}", what);
      last = what;
    }
    return false;
  };
  kube::Response get = client_->Get(path);
  if (!get.ok()) {
    return report("reading " + kind + " " + name + ": " + get.Describe() +
                  (get.status == 404 ? " (kubectl apply -k manifests/ creates it)" : ""));
  }
  ca_bundle_errors_[kind].clear();
  std::string ca = Base64Encode(current_.ca_pem);
  nlohmann::json config = get.body;
  bool changed = false;
  if (config.contains("webhooks") && config["webhooks"].is_array()) {
    for (auto& w : config["webhooks"]) {
      auto& cc = w["clientConfig"];
      if (cc.value("caBundle", "") != ca) {
        cc["caBundle"] = ca;
        changed = true;
      }
    }
  }
  if (!changed) {
    return true;
  }
  kube::Response put = client_->Send("PUT", path, config);  // resourceVersion: optimistic lock
  if (put.status == 409) {
    return true;  // changed meanwhile: the next round looks again
  }
  if (!put.ok()) {
    return report("updating the caBundle of " + kind + " " + name + ": " + put.Describe());
  }
  ca_bundle_updates.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("webhook: caBundle of {} {} set to the current CA", kind, name);
  return true;
}

}  // namespace skiff::webhook

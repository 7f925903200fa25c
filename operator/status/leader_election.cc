#include "operator/status/leader_election.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>

#include "operator/status/time.h"

namespace skiff::status {

std::string DefaultIdentity() {
  const char* pod = std::getenv("POD_NAME");
  if (pod != nullptr && *pod != '\0') {
    return pod;
  }
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  return std::string(host) + "-" + std::to_string(::getpid());
}

LeaderElection::LeaderElection(std::unique_ptr<kube::Client> client, LeaseOptions options,
                               std::function<void(bool)> on_change)
    : client_(std::move(client)), options_(std::move(options)), on_change_(std::move(on_change)) {
  if (options_.identity.empty()) {
    options_.identity = DefaultIdentity();
  }
}

LeaderElection::~LeaderElection() { Stop(); }

void LeaderElection::Start() {
  std::lock_guard<std::mutex> lock(thread_mu_);
  thread_ = std::thread([this] { Run(); });
}

void LeaderElection::Stop() {
  std::lock_guard<std::mutex> lock(thread_mu_);
  stop_.Stop();
  client_->Cancel();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void LeaderElection::SetLeader(bool on) {
  if (leader_.exchange(on ? 1 : 0) != (on ? 1 : 0)) {
    spdlog::info("kube: {} the lease {}/{} as {}", on ? "holding" : "lost", options_.namespace_,
                 options_.name, options_.identity);
    if (on_change_) {
      on_change_(on);
    }
  }
}

void LeaderElection::Run() {
  const std::string leases =
      "/apis/coordination.k8s.io/v1/namespaces/" + options_.namespace_ + "/leases";
  const std::string path = leases + "/" + options_.name;
  std::string observed;  // the lease record as last seen, to notice changes
  auto observed_at = std::chrono::steady_clock::now();
  auto last_renew = std::chrono::steady_clock::time_point{};
  while (true) {
    kube::Response get = client_->Get(path);
    auto now = std::chrono::steady_clock::now();
    std::string micro = NowRfc3339(true);
    int64_t duration = options_.lease_duration.count();
    if (get.status == 404) {
      nlohmann::json lease = {
          {"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", options_.name}, {"namespace", options_.namespace_}}},
          {"spec",
           {{"holderIdentity", options_.identity},
            {"leaseDurationSeconds", duration},
            {"acquireTime", micro},
            {"renewTime", micro},
            {"leaseTransitions", 0}}}};
      kube::Response c = client_->Send("POST", leases, lease);
      if (c.ok()) {
        last_renew = now;
        SetLeader(true);
      } else if (c.status != 409) {
        spdlog::warn("kube: creating lease {}: {}", path, c.Describe());
      }
    } else if (get.ok()) {
      auto spec = get.body.value("spec", nlohmann::json::object());
      std::string holder = spec.value("holderIdentity", "");
      std::string record = spec.dump();
      if (record != observed) {
        observed = record;
        observed_at = now;
      }
      int64_t their = spec.value("leaseDurationSeconds", duration);
      bool expired = now > observed_at + std::chrono::seconds(their);
      if (holder == options_.identity || holder.empty() || expired) {
        auto lease = get.body;
        if (holder != options_.identity) {
          lease["spec"]["acquireTime"] = micro;
          lease["spec"]["leaseTransitions"] = spec.value("leaseTransitions", 0) + 1;
        }
        lease["spec"]["holderIdentity"] = options_.identity;
        lease["spec"]["leaseDurationSeconds"] = duration;
        lease["spec"]["renewTime"] = micro;
        kube::Response u = client_->Send("PUT", path, lease);  // resourceVersion: optimistic lock
        if (u.ok()) {
          last_renew = now;
          observed = u.body.value("spec", nlohmann::json::object()).dump();
          observed_at = now;
          SetLeader(true);
        } else if (u.status != 409) {
          spdlog::warn("kube: renewing lease {}: {}", path, u.Describe());
        }
      } else {
        SetLeader(false);
      }
    } else {
      spdlog::warn("kube: reading lease {}: {}", path, get.Describe());
    }
    if (leader() && now - last_renew > options_.renew_deadline) {
      SetLeader(false);  // could not renew in time: stop writing
    }
    if (!stop_.Sleep(kube::Jitter(
            std::chrono::duration_cast<std::chrono::milliseconds>(options_.retry_period)))) {
      return;
    }
  }
}

}  // namespace skiff::status

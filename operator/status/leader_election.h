#pragma once
// Leader election with a coordination.k8s.io Lease, as client-go's leaderelection: the
// holder renews it every retry period; another replica takes it over once it was not
// renewed for the lease duration (as this replica observed it: no clock is compared across
// machines); a holder that could not renew within the renew deadline stops leading. Only
// the leader writes status, Events and the webhook's caBundle; every replica serves.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "operator/source/kube/client.h"
#include "operator/source/kube/reflector.h"

namespace skiff::status {

struct LeaseOptions {
  std::string namespace_ = "skiff-system";
  std::string name = "skiff-operator";
  std::string identity;  // this replica (DefaultIdentity() when empty)
  std::chrono::seconds lease_duration{15};
  std::chrono::seconds renew_deadline{10};
  std::chrono::seconds retry_period{2};
};

// $POD_NAME, else hostname-pid.
std::string DefaultIdentity();

class LeaderElection {
 public:
  // `on_change` is called (on the election's thread) when this replica starts or stops
  // leading.
  LeaderElection(std::unique_ptr<kube::Client> client, LeaseOptions options,
                 std::function<void(bool leader)> on_change);
  ~LeaderElection();
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  void Start();
  void Stop();
  [[nodiscard]] bool leader() const { return leader_.load() != 0; }
  [[nodiscard]] const LeaseOptions& options() const { return options_; }

 private:
  void Run();
  void SetLeader(bool on);

  std::unique_ptr<kube::Client> client_;
  LeaseOptions options_;
  std::function<void(bool)> on_change_;
  std::atomic<int> leader_{0};
  kube::StopSignal stop_;
  std::thread thread_;
  std::mutex thread_mu_;
};

}  // namespace skiff::status

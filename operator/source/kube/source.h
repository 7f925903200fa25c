#pragma once
// The Kubernetes source: list + watch of Gateways, VirtualServices, DestinationRules,
// Services, EndpointSlices and Pods through the API server, as client-go's reflector does
// (resourceVersion, bookmarks, randomised watch timeouts, relist on 410 Gone, jittered
// back-off, watches that end at once count as errors). Every change hands the whole set of
// decoded objects on (the translator is pure and fast). The elected leader (a
// coordination.k8s.io Lease) writes status conditions and Events; every replica serves.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "operator/source/file/load.h"
#include "operator/source/kube/client.h"
#include "operator/translate/translate.h"

namespace skiff::kube {

struct SourceOptions {
  std::string namespace_;  // watch one namespace; empty = all
  std::string istio_version = "v1";
  std::string lease_namespace;  // default: the config's namespace, else skiff-system
  std::string lease_name = "skiff-operator";
  std::string identity;  // default: $POD_NAME or hostname-pid
  std::chrono::seconds lease_duration{15};
  std::chrono::seconds renew_deadline{10};
  std::chrono::seconds retry_period{2};
  bool leader_election = true;  // false: never write status (read-only replica)
};

struct SourceMetrics {
  std::atomic<uint64_t> watch_restarts{0};  // watches that ended and were started again
  std::atomic<uint64_t> relists{0};         // lists after 410 Gone or errors
  std::atomic<uint64_t> watch_errors{0};
  std::atomic<uint64_t> events_received{0};
  std::atomic<uint64_t> status_writes{0};
  std::atomic<uint64_t> status_write_errors{0};
  std::atomic<uint64_t> k8s_events_created{0};
  std::atomic<int> leader{0};
};

class Source {
 public:
  Source(std::unique_ptr<Client> client, SourceOptions options,
         std::function<void(source::LoadResult)> on_change);
  ~Source();
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  void Start();
  void Stop();
  // After each translation: the statuses to write (leader only; deduplicated).
  void OnStatuses(const std::vector<translate::ResourceStatus>& statuses);

  [[nodiscard]] const SourceMetrics& metrics() const { return metrics_; }
  [[nodiscard]] bool synced() const;  // every kind listed once
  [[nodiscard]] bool leader() const { return metrics_.leader.load() != 0; }

 private:
  struct Resource;
  struct StoredObject {
    nlohmann::json meta;  // metadata of the API object (uid, generation, resourceVersion)
    nlohmann::json status;
    api::Object object;
  };
  void RunReflector(Resource* r);
  bool List(Resource* r, std::string* resource_version);
  void Apply(Resource* r, const std::string& type, nlohmann::json obj);
  void Publish();
  void RunPublisher();
  void RunLeaderElection();
  void WriteStatuses(std::vector<translate::ResourceStatus> statuses);
  bool Sleep(std::chrono::milliseconds d);  // false when stopping

  std::unique_ptr<Client> client_;
  SourceOptions options_;
  std::function<void(source::LoadResult)> on_change_;
  std::vector<std::unique_ptr<Resource>> resources_;
  std::vector<std::thread> threads_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool dirty_ = false;
  std::map<std::string, StoredObject> store_;   // "Kind/ns/name"
  std::map<std::string, std::string> written_;  // status last written per object key
  std::map<std::string, std::string> evented_;  // event message last created per key
  std::vector<translate::ResourceStatus> pending_statuses_;
  bool statuses_pending_ = false;
  SourceMetrics metrics_;
};

}  // namespace skiff::kube

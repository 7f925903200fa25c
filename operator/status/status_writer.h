#pragma once
// The status writer (leader only): after each translation it writes the status of every
// Gateway, VirtualService and DestinationRule whose status differs from what the API server
// has - conditions with the field path of every problem, observedGeneration, and
// lastTransitionTime kept while a condition does not change - through the status
// subresource, and a Warning Event for a resource that is not accepted (once per generation
// and message). It never translates: the statuses of the last translation are kept, so a
// new leader writes them at once, and a status someone else changed (seen by the
// reflectors) is checked and put back alone.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "operator/source/kube/client.h"
#include "operator/source/kube/observed.h"
#include "operator/translate/translate.h"

namespace skiff::status {

struct StatusWriterOptions {
  std::string istio_version = "v1";  // of the status subresource written to
  std::string identity;              // reportingInstance of Events
};

struct StatusMetrics {
  std::atomic<uint64_t> status_writes{0};
  std::atomic<uint64_t> status_write_errors{0};
  std::atomic<uint64_t> k8s_events_created{0};
};

class StatusWriter {
 public:
  // `observed` outlives the writer; `is_leader` says whether to write at all.
  StatusWriter(std::unique_ptr<kube::Client> client, StatusWriterOptions options,
               const kube::ObservedObjects* observed, std::function<bool()> is_leader);
  ~StatusWriter();
  StatusWriter(const StatusWriter&) = delete;
  StatusWriter& operator=(const StatusWriter&) = delete;

  void Start();
  void Stop();

  // The statuses of a translation: every one is checked (and written where it differs).
  void Submit(const std::vector<translate::ResourceStatus>& statuses);
  // The API server's status of one object changed ("Kind/ns/name"): check that one.
  void Recheck(const std::string& key);
  // This replica became the leader: write everything once.
  void OnLeader();

  [[nodiscard]] const StatusMetrics& metrics() const { return metrics_; }

 private:
  void Run();
  void Write(const translate::ResourceStatus& st);

  std::unique_ptr<kube::Client> client_;
  StatusWriterOptions options_;
  const kube::ObservedObjects* const observed_;
  std::function<bool()> is_leader_;
  StatusMetrics metrics_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<std::string, translate::ResourceStatus> latest_;  // by "Kind/ns/name"
  bool check_all_ = false;
  std::set<std::string> to_check_;
  bool forget_ = false;  // a new leader: clear written_ and evented_ first
  // Only the writer thread touches these.
  std::map<std::string, std::string> written_;  // status last written per object key
  std::map<std::string, std::string> evented_;  // event message last created per key
  std::thread thread_;
};

}  // namespace skiff::status

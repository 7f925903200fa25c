#include "operator/status/status_writer.h"

#include <spdlog/spdlog.h>

#include "operator/status/time.h"

namespace skiff::status {

StatusWriter::StatusWriter(std::unique_ptr<kube::Client> client, StatusWriterOptions options,
                           const kube::ObservedObjects* observed, std::function<bool()> is_leader)
    : client_(std::move(client)),
      options_(std::move(options)),
      observed_(observed),
      is_leader_(std::move(is_leader)) {}

StatusWriter::~StatusWriter() { Stop(); }

void StatusWriter::Start() {
  thread_ = std::thread([this] { Run(); });
}

void StatusWriter::Stop() {
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

void StatusWriter::Submit(const std::vector<translate::ResourceStatus>& statuses) {
  std::map<std::string, translate::ResourceStatus> latest;
  for (const auto& st : statuses) {
    latest.emplace(kube::ObservedObjects::Key(api::KindName(st.kind), st.namespace_, st.name), st);
  }
  std::lock_guard<std::mutex> lock(mu_);
  latest_ = std::move(latest);
  check_all_ = true;
  cv_.notify_all();
}

void StatusWriter::Recheck(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (latest_.count(key) > 0) {
    to_check_.insert(key);
    cv_.notify_all();
  }
}

void StatusWriter::OnLeader() {
  std::lock_guard<std::mutex> lock(mu_);
  forget_ = true;
  check_all_ = true;
  cv_.notify_all();
}

void StatusWriter::Run() {
  while (true) {
    std::vector<translate::ResourceStatus> work;
    bool forget = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || check_all_ || !to_check_.empty(); });
      if (stop_) {
        return;
      }
      forget = forget_;
      forget_ = false;
      if (check_all_) {
        work.reserve(latest_.size());
        for (const auto& [key, st] : latest_) {
          work.push_back(st);
        }
      } else {
        for (const auto& key : to_check_) {
          auto it = latest_.find(key);
          if (it != latest_.end()) {
            work.push_back(it->second);
          }
        }
      }
      check_all_ = false;
      to_check_.clear();
    }
    if (forget) {
      written_.clear();  // write everything once as the new leader
      evented_.clear();
    }
    if (!is_leader_()) {
      continue;
    }
    for (const auto& st : work) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) {
          return;
        }
      }
      Write(st);
    }
  }
}

void StatusWriter::Write(const translate::ResourceStatus& st) {
  std::string kind = api::KindName(st.kind);
  std::string key = kube::ObservedObjects::Key(kind, st.namespace_, st.name);
  auto seen = observed_->Get(key);
  if (!seen) {
    return;
  }
  const nlohmann::json& current = seen->status;
  int64_t generation = seen->generation;
  // Conditions, keeping lastTransitionTime when a condition did not change.
  nlohmann::json conditions = nlohmann::json::array();
  for (const auto& c : st.conditions) {
    std::string ltt = NowRfc3339(false);
    if (current.is_object() && current.contains("conditions")) {
      for (const auto& old : current["conditions"]) {
        if (old.value("type", "") == c.type && old.value("status", "") == c.status &&
            old.contains("lastTransitionTime")) {
          ltt = old["lastTransitionTime"].get<std::string>();
        }
      }
    }
    conditions.push_back({{"type", c.type},
                          {"status", c.status},
                          {"reason", c.reason},
                          {"message", c.message},
                          {"observedGeneration", generation},
                          {"lastTransitionTime", ltt}});
  }
  nlohmann::json status = {{"conditions", conditions}, {"observedGeneration", generation}};
  // Already there (our own earlier write, read back by the watch)?
  auto strip = [](nlohmann::json s) {
    if (s.is_object() && s.contains("conditions")) {
      for (auto& c : s["conditions"]) {
        c.erase("lastTransitionTime");
      }
    }
    return s;
  };
  std::string want = strip(status).dump();
  if (current.is_object() && strip(current).dump() == want) {
    written_[key] = want;
    return;
  }
  if (written_[key] == want + "@" + seen->resource_version) {
    return;
  }
  std::string plural = kind == "Gateway"          ? "gateways"
                       : kind == "VirtualService" ? "virtualservices"
                       : kind == "ServiceEntry"   ? "serviceentries"
                                                  : "destinationrules";
  std::string path = "/apis/networking.istio.io/" + options_.istio_version + "/namespaces/" +
                     st.namespace_ + "/" + plural + "/" + st.name + "/status";
  kube::Response resp = client_->Send("PATCH", path, {{"status", status}});
  if (resp.ok()) {
    metrics_.status_writes.fetch_add(1, std::memory_order_relaxed);
    written_[key] = want + "@" + seen->resource_version;
  } else {
    metrics_.status_write_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("kube: writing the status of {} {}/{}: {}", kind, st.namespace_, st.name,
                 resp.Describe());
  }
  // An Event for a resource that is not accepted, once per generation and message.
  if (st.Accepted()) {
    return;
  }
  std::string message;
  for (const auto& c : st.conditions) {
    if (c.status == "False") {
      message += (message.empty() ? "" : "; ") + c.message;
    }
  }
  std::string ev_key = key + "@" + std::to_string(generation);
  if (evented_[ev_key] == message) {
    return;
  }
  evented_[ev_key] = message;
  std::string now = NowRfc3339(false);
  nlohmann::json event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"generateName", st.name + "."}, {"namespace", st.namespace_}}},
      {"involvedObject",
       {{"apiVersion", "networking.istio.io/" + options_.istio_version},
        {"kind", kind},
        {"name", st.name},
        {"namespace", st.namespace_},
        {"uid", seen->uid},
        {"resourceVersion", seen->resource_version}}},
      {"reason", "Invalid"},
      {"message", message.substr(0, 1024)},
      {"type", "Warning"},
      {"source", {{"component", "skiff-operator"}}},
      {"reportingComponent", "skiff-operator"},
      {"reportingInstance", options_.identity},
      {"firstTimestamp", now},
      {"lastTimestamp", now},
      {"count", 1}};
  kube::Response er =
      client_->Send("POST", "/api/v1/namespaces/" + st.namespace_ + "/events", event);
  if (er.ok()) {
    metrics_.k8s_events_created.fetch_add(1, std::memory_order_relaxed);
  } else {
    spdlog::warn("kube: creating an event for {} {}/{}: {}", kind, st.namespace_, st.name,
                 er.Describe());
  }
}

}  // namespace skiff::status

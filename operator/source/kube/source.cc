#include "operator/source/kube/source.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <random>

#include "operator/api/decode.h"

namespace skiff::kube {

struct Source::Resource {
  std::string kind;         // "VirtualService"
  std::string api_version;  // "networking.istio.io/v1"
  std::string plural;       // "virtualservices"
  std::atomic<bool> synced{false};

  [[nodiscard]] std::string Path(const std::string& ns) const {
    std::string base =
        api_version.find('/') == std::string::npos ? "/api/" + api_version : "/apis/" + api_version;
    return ns.empty() ? base + "/" + plural : base + "/namespaces/" + ns + "/" + plural;
  }
};

namespace {

std::string NowRfc3339(bool micro) {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  if (micro) {
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(us % 1000000));
  } else {
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  }
  return buf;
}

std::string Key(const std::string& kind, const std::string& ns, const std::string& name) {
  return kind + "/" + ns + "/" + name;
}

thread_local std::mt19937_64 rng{std::random_device{}()};

std::chrono::milliseconds Jitter(std::chrono::milliseconds base) {
  std::uniform_real_distribution<double> d(1.0, 1.5);
  return std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(base.count()) * d(rng)));
}

}  // namespace

Source::Source(std::unique_ptr<Client> client, SourceOptions options,
               std::function<void(source::LoadResult)> on_change)
    : client_(std::move(client)), options_(std::move(options)), on_change_(std::move(on_change)) {
  std::string istio = "networking.istio.io/" + options_.istio_version;
  auto add = [this](const char* kind, const std::string& api_version, const char* plural) {
    auto r = std::make_unique<Resource>();
    r->kind = kind;
    r->api_version = api_version;
    r->plural = plural;
    resources_.push_back(std::move(r));
  };
  add("Gateway", istio, "gateways");
  add("VirtualService", istio, "virtualservices");
  add("DestinationRule", istio, "destinationrules");
  add("Service", "v1", "services");
  add("EndpointSlice", "discovery.k8s.io/v1", "endpointslices");
  add("Pod", "v1", "pods");
  if (options_.identity.empty()) {
    const char* pod = std::getenv("POD_NAME");
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    options_.identity = pod != nullptr ? pod : std::string(host) + "-" + std::to_string(::getpid());
  }
  if (options_.lease_namespace.empty()) {
    options_.lease_namespace =
        client_->config().namespace_.empty() ? "skiff-system" : client_->config().namespace_;
  }
}

Source::~Source() { Stop(); }

void Source::Start() {
  for (auto& r : resources_) {
    threads_.emplace_back([this, p = r.get()] { RunReflector(p); });
  }
  threads_.emplace_back([this] { RunPublisher(); });
  if (options_.leader_election) {
    threads_.emplace_back([this] { RunLeaderElection(); });
  }
}

void Source::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && threads_.empty()) {
      return;
    }
    stop_ = true;
  }
  cv_.notify_all();
  client_->Cancel();
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
  threads_.clear();
}

bool Source::synced() const {
  return std::all_of(resources_.begin(), resources_.end(),
                     [](const auto& r) { return r->synced.load(); });
}

bool Source::Sleep(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_; });
  return !stop_;
}

void Source::Apply(Resource* r, const std::string& type, nlohmann::json obj) {
  if (!obj.is_object() || !obj.contains("metadata")) {
    return;
  }
  obj["kind"] = r->kind;
  obj["apiVersion"] = r->api_version;
  const auto& md = obj["metadata"];
  std::string ns = md.value("namespace", "");
  std::string name = md.value("name", "");
  std::string key = Key(r->kind, ns, name);
  if (type == "DELETED") {
    std::lock_guard<std::mutex> lock(mu_);
    store_.erase(key);
    dirty_ = true;
    cv_.notify_all();
    return;
  }
  StoredObject so;
  if (!api::DecodeObject(obj, "kube " + r->kind + " " + ns + "/" + name, &so.object)) {
    return;
  }
  so.meta = md;
  so.status = obj.value("status", nlohmann::json());
  std::lock_guard<std::mutex> lock(mu_);
  store_[key] = std::move(so);
  dirty_ = true;
  cv_.notify_all();
}

bool Source::List(Resource* r, std::string* resource_version) {
  std::vector<nlohmann::json> items;
  std::string cont;
  do {
    std::string path = r->Path(options_.namespace_) + "?limit=500";
    if (!cont.empty()) {
      path += "&continue=" + cont;
    }
    Response resp = client_->Get(path);
    if (!resp.ok()) {
      if (resp.status == 410 && !cont.empty()) {
        cont.clear();  // the continue token expired: start the list again
        items.clear();
        continue;
      }
      spdlog::warn("kube: list {}: {}", r->plural, resp.Describe());
      return false;
    }
    for (auto& item : resp.body.value("items", nlohmann::json::array())) {
      items.push_back(std::move(item));
    }
    cont = resp.body["metadata"].value("continue", "");
    *resource_version = resp.body["metadata"].value("resourceVersion", "");
  } while (!cont.empty());
  // Replace this kind's objects with the list.
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = store_.begin(); it != store_.end();) {
      if (it->first.compare(0, r->kind.size() + 1, r->kind + "/") == 0) {
        it = store_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& item : items) {
    Apply(r, "ADDED", std::move(item));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
  r->synced = true;
  return true;
}

void Source::RunReflector(Resource* r) {
  std::chrono::milliseconds backoff{800};
  const std::chrono::milliseconds kMaxBackoff{30000};
  std::string rv;
  bool need_list = true;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        return;
      }
    }
    if (need_list) {
      if (!List(r, &rv)) {
        if (!Sleep(Jitter(backoff))) {
          return;
        }
        backoff = std::min(backoff * 2, kMaxBackoff);
        continue;
      }
      need_list = false;
    }
    std::uniform_int_distribution<int> timeout(300, 600);  // 5-10 minutes, as client-go
    std::string path = r->Path(options_.namespace_) +
                       "?watch=true&allowWatchBookmarks=true&resourceVersion=" + rv +
                       "&timeoutSeconds=" + std::to_string(timeout(rng));
    auto started = std::chrono::steady_clock::now();
    bool gone = false;
    int events = 0;
    Response resp = client_->Watch(
        path,
        [&](const nlohmann::json& ev) {
          std::string type = ev.value("type", "");
          const auto& obj = ev.contains("object") ? ev["object"] : nlohmann::json();
          if (obj.is_object() && obj.contains("metadata") &&
              obj["metadata"].contains("resourceVersion")) {
            rv = obj["metadata"]["resourceVersion"].get<std::string>();
          }
          if (type == "ERROR") {
            int code = obj.is_object() ? obj.value("code", 0) : 0;
            if (code == 410) {
              gone = true;  // too old resource version
            } else {
              spdlog::warn("kube: watch {}: error event: {}", r->plural,
                           obj.is_object() ? obj.value("message", "") : "");
            }
            return false;
          }
          metrics_.events_received.fetch_add(1, std::memory_order_relaxed);
          if (type == "BOOKMARK") {
            return true;
          }
          Apply(r, type, obj);
          return true;
        },
        &events);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        return;
      }
    }
    metrics_.watch_restarts.fetch_add(1, std::memory_order_relaxed);
    if (gone || resp.status == 410) {
      spdlog::info("kube: watch {}: resource version {} is too old (410 Gone); relisting",
                   r->plural, rv);
      metrics_.relists.fetch_add(1, std::memory_order_relaxed);
      need_list = true;
      continue;
    }
    auto lasted = std::chrono::steady_clock::now() - started;
    bool immediate = events == 0 && lasted < std::chrono::seconds(1);
    if (!resp.ok() || immediate) {
      // An error, or a watch that ended at once with nothing: back off, then relist.
      metrics_.watch_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("kube: watch {} ended: {}", r->plural,
                   resp.ok() ? "closed at once with no events" : resp.Describe());
      if (!Sleep(Jitter(backoff))) {
        return;
      }
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;  // watch again from the last resourceVersion (a 410 then forces a relist)
    }
    backoff = std::chrono::milliseconds(800);  // a healthy watch ended by its timeout
  }
}

void Source::RunPublisher() {
  while (true) {
    source::LoadResult result;
    std::vector<translate::ResourceStatus> statuses;
    bool publish = false;
    bool write = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || (dirty_ && synced()) || statuses_pending_; });
      if (stop_) {
        return;
      }
      if (dirty_ && synced()) {
        dirty_ = false;
        publish = true;
        result.objects.reserve(store_.size());
        for (const auto& [key, so] : store_) {
          result.objects.push_back(so.object);
        }
      }
      if (statuses_pending_) {
        statuses_pending_ = false;
        statuses.swap(pending_statuses_);
        write = true;
      }
    }
    if (publish) {
      on_change_(std::move(result));
    }
    if (write && leader()) {
      WriteStatuses(std::move(statuses));
    }
  }
}

void Source::OnStatuses(const std::vector<translate::ResourceStatus>& statuses) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_statuses_ = statuses;
  statuses_pending_ = true;
  cv_.notify_all();
}

void Source::WriteStatuses(std::vector<translate::ResourceStatus> statuses) {
  for (const auto& st : statuses) {
    std::string kind = api::KindName(st.kind);
    std::string key = Key(kind, st.namespace_, st.name);
    nlohmann::json meta;
    nlohmann::json current;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        return;
      }
      auto it = store_.find(key);
      if (it == store_.end()) {
        continue;
      }
      meta = it->second.meta;
      current = it->second.status;
    }
    int64_t generation = meta.value("generation", int64_t{0});
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
      continue;
    }
    if (written_[key] == want + "@" + meta.value("resourceVersion", "")) {
      continue;
    }
    std::string plural = kind == "Gateway"          ? "gateways"
                         : kind == "VirtualService" ? "virtualservices"
                                                    : "destinationrules";
    std::string path = "/apis/networking.istio.io/" + options_.istio_version + "/namespaces/" +
                       st.namespace_ + "/" + plural + "/" + st.name + "/status";
    Response resp = client_->Send("PATCH", path, {{"status", status}});
    if (resp.ok()) {
      metrics_.status_writes.fetch_add(1, std::memory_order_relaxed);
      written_[key] = want + "@" + meta.value("resourceVersion", "");
    } else {
      metrics_.status_write_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("kube: writing the status of {} {}/{}: {}", kind, st.namespace_, st.name,
                   resp.Describe());
    }
    // An Event for a resource that is not accepted, once per generation and message.
    if (!st.Accepted()) {
      std::string message;
      for (const auto& c : st.conditions) {
        if (c.status == "False") {
          message += (message.empty() ? "" : "; ") + c.message;
        }
      }
      std::string ev_key = key + "@" + std::to_string(generation);
      if (evented_[ev_key] == message) {
        continue;
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
            {"uid", meta.value("uid", "")},
            {"resourceVersion", meta.value("resourceVersion", "")}}},
          {"reason", "Invalid"},
          {"message", message.substr(0, 1024)},
          {"type", "Warning"},
          {"source", {{"component", "skiff-operator"}}},
          {"reportingComponent", "skiff-operator"},
          {"reportingInstance", options_.identity},
          {"firstTimestamp", now},
          {"lastTimestamp", now},
          {"count", 1}};
      Response er = client_->Send("POST", "/api/v1/namespaces/" + st.namespace_ + "/events", event);
      if (er.ok()) {
        metrics_.k8s_events_created.fetch_add(1, std::memory_order_relaxed);
      } else {
        spdlog::warn("kube: creating an event for {} {}/{}: {}", kind, st.namespace_, st.name,
                     er.Describe());
      }
    }
  }
}

void Source::RunLeaderElection() {
  const std::string path = "/apis/coordination.k8s.io/v1/namespaces/" + options_.lease_namespace +
                           "/leases/" + options_.lease_name;
  std::string observed;  // the lease record as last seen, to notice changes
  auto observed_at = std::chrono::steady_clock::now();
  auto last_renew = std::chrono::steady_clock::time_point{};
  auto set_leader = [this](bool on) {
    if (metrics_.leader.exchange(on ? 1 : 0) != (on ? 1 : 0)) {
      spdlog::info("kube: {} the lease {}/{} as {}", on ? "holding" : "lost",
                   options_.lease_namespace, options_.lease_name, options_.identity);
      if (on) {
        std::lock_guard<std::mutex> lock(mu_);
        written_.clear();  // write everything once as the new leader
        evented_.clear();
        dirty_ = true;  // re-translate so statuses are produced again
        cv_.notify_all();
      }
    }
  };
  while (true) {
    Response get = client_->Get(path);
    auto now = std::chrono::steady_clock::now();
    std::string micro = NowRfc3339(true);
    int64_t duration = options_.lease_duration.count();
    if (get.status == 404) {
      nlohmann::json lease = {
          {"apiVersion", "coordination.k8s.io/v1"},
          {"kind", "Lease"},
          {"metadata", {{"name", options_.lease_name}, {"namespace", options_.lease_namespace}}},
          {"spec",
           {{"holderIdentity", options_.identity},
            {"leaseDurationSeconds", duration},
            {"acquireTime", micro},
            {"renewTime", micro},
            {"leaseTransitions", 0}}}};
      Response c = client_->Send(
          "POST", "/apis/coordination.k8s.io/v1/namespaces/" + options_.lease_namespace + "/leases",
          lease);
      if (c.ok()) {
        last_renew = now;
        set_leader(true);
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
        Response u = client_->Send("PUT", path, lease);  // resourceVersion: optimistic lock
        if (u.ok()) {
          last_renew = now;
          observed = u.body.value("spec", nlohmann::json::object()).dump();
          observed_at = now;
          set_leader(true);
        } else if (u.status != 409) {
          spdlog::warn("kube: renewing lease {}: {}", path, u.Describe());
        }
      } else {
        set_leader(false);
      }
    } else {
      spdlog::warn("kube: reading lease {}: {}", path, get.Describe());
    }
    if (leader() && now - last_renew > options_.renew_deadline) {
      set_leader(false);  // could not renew in time: stop writing
    }
    if (!Sleep(
            Jitter(std::chrono::duration_cast<std::chrono::milliseconds>(options_.retry_period)))) {
      return;
    }
  }
}

}  // namespace skiff::kube

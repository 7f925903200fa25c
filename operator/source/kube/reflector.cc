#include "operator/source/kube/reflector.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

namespace skiff::kube {

namespace {
thread_local std::mt19937_64 rng{std::random_device{}()};
}  // namespace

std::chrono::milliseconds Jitter(std::chrono::milliseconds base) {
  std::uniform_real_distribution<double> d(1.0, 1.5);
  return std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(base.count()) * d(rng)));
}

std::string ResourceType::Path(const std::string& ns) const {
  std::string base =
      api_version.find('/') == std::string::npos ? "/api/" + api_version : "/apis/" + api_version;
  return ns.empty() ? base + "/" + plural : base + "/namespaces/" + ns + "/" + plural;
}

void StopSignal::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

bool StopSignal::stopped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

bool StopSignal::Sleep(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_; });
  return !stop_;
}

Reflector::Reflector(Client* client, ResourceType type, std::string namespace_, Handler handler,
                     StopSignal* stop, ReflectorMetrics* metrics)
    : client_(client),
      type_(std::move(type)),
      namespace_(std::move(namespace_)),
      handler_(std::move(handler)),
      stop_(stop),
      metrics_(metrics) {}

bool Reflector::List(std::string* resource_version) {
  std::vector<nlohmann::json> items;
  std::string cont;
  do {
    std::string path = type_.Path(namespace_) + "?limit=500";
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
      if ((resp.status == 404 || resp.status == 403) && type_.optional && cont.empty()) {
        if (!absent_) {
          absent_ = true;
          spdlog::warn("kube: list {}: {}: {}; none are read until they can be", type_.plural,
                       resp.Describe(),
                       resp.status == 404
                           ? "the API server does not serve them (is their CRD installed?)"
                           : "forbidden (does the operator's ClusterRole grant them?)");
          handler_.on_list({});
        }
        return false;  // listed again after the backoff
      }
      spdlog::warn("kube: list {}: {}", type_.plural, resp.Describe());
      return false;
    }
    for (auto& item : resp.body.value("items", nlohmann::json::array())) {
      items.push_back(std::move(item));
    }
    cont = resp.body["metadata"].value("continue", "");
    *resource_version = resp.body["metadata"].value("resourceVersion", "");
  } while (!cont.empty());
  if (absent_) {
    absent_ = false;
    spdlog::info("kube: {} are served now", type_.plural);
  }
  handler_.on_list(std::move(items));
  return true;
}

void Reflector::Run() {
  std::chrono::milliseconds backoff{800};
  const std::chrono::milliseconds kMaxBackoff{30000};
  std::string rv;
  bool need_list = true;
  while (!stop_->stopped()) {
    if (need_list) {
      if (!List(&rv)) {
        // (A kind whose CRD is not installed is asked for again within 10 s.)
        auto wait = Jitter(backoff);
        if (absent_) {
          wait = std::min(wait, std::chrono::milliseconds(10000));
        }
        if (!stop_->Sleep(wait)) {
          return;
        }
        backoff = std::min(backoff * 2, kMaxBackoff);
        continue;
      }
      need_list = false;
    }
    std::uniform_int_distribution<int> timeout(300, 600);  // 5-10 minutes, as client-go
    std::string path = type_.Path(namespace_) +
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
              spdlog::warn("kube: watch {}: error event: {}", type_.plural,
                           obj.is_object() ? obj.value("message", "") : "");
            }
            return false;
          }
          metrics_->events_received.fetch_add(1, std::memory_order_relaxed);
          if (type == "BOOKMARK") {
            return true;
          }
          handler_.on_event(type, obj);
          return true;
        },
        &events);
    if (stop_->stopped()) {
      return;
    }
    metrics_->watch_restarts.fetch_add(1, std::memory_order_relaxed);
    if (gone || resp.status == 410) {
      spdlog::info("kube: watch {}: resource version {} is too old (410 Gone); relisting",
                   type_.plural, rv);
      metrics_->relists.fetch_add(1, std::memory_order_relaxed);
      need_list = true;
      continue;
    }
    auto lasted = std::chrono::steady_clock::now() - started;
    bool immediate = events == 0 && lasted < std::chrono::seconds(1);
    if (!resp.ok() || immediate) {
      // An error, or a watch that ended at once with nothing: back off, then relist.
      metrics_->watch_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("kube: watch {} ended: {}", type_.plural,
                   resp.ok() ? "closed at once with no events" : resp.Describe());
      if (!stop_->Sleep(Jitter(backoff))) {
        return;
      }
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;  // watch again from the last resourceVersion (a 410 then forces a relist)
    }
    backoff = std::chrono::milliseconds(800);  // a healthy watch ended by its timeout
  }
}

}  // namespace skiff::kube

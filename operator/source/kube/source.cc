#include "operator/source/kube/source.h"

#include <spdlog/spdlog.h>

#include <set>

#include "operator/api/decode.h"

namespace skiff::kube {

struct Source::Kind {
  ResourceType type;
  api::Kind kind = api::Kind::kGateway;
  bool istio = false;      // has a status the status writer writes
  std::string namespace_;  // watched in this namespace ("" = the source's)
  std::atomic<bool> listed{false};
};

Source::Source(std::unique_ptr<Client> client, SourceOptions options, source::Sink* sink,
               ObservedObjects* observed)
    : client_(std::move(client)), options_(std::move(options)), sink_(sink), observed_(observed) {
  std::string istio = "networking.istio.io/" + options_.istio_version;
  auto add = [this](const char* kind, api::Kind k, const std::string& api_version,
                    const char* plural, bool is_istio, const std::string& ns = std::string(),
                    bool optional = false) {
    auto r = std::make_unique<Kind>();
    r->type = {kind, api_version, plural, optional};
    r->kind = k;
    r->istio = is_istio;
    r->namespace_ = ns;
    kinds_.push_back(std::move(r));
  };
  add("Gateway", api::Kind::kGateway, istio, "gateways", true);
  add("VirtualService", api::Kind::kVirtualService, istio, "virtualservices", true);
  add("DestinationRule", api::Kind::kDestinationRule, istio, "destinationrules", true);
  // Optional: clusters that installed skiff's first three CRDs only still sync.
  add("ServiceEntry", api::Kind::kServiceEntry, istio, "serviceentries", true, "", true);
  add("Service", api::Kind::kService, "v1", "services", false);
  add("EndpointSlice", api::Kind::kEndpointSlice, "discovery.k8s.io/v1", "endpointslices", false);
  add("Pod", api::Kind::kPod, "v1", "pods", false);
  if (options_.secret_namespaces.empty()) {
    add("Secret", api::Kind::kSecret, "v1", "secrets", false);
  } else {
    for (const auto& ns : options_.secret_namespaces) {
      add("Secret", api::Kind::kSecret, "v1", "secrets", false, ns);
    }
  }
  for (auto& k : kinds_) {
    Reflector::Handler handler;
    handler.on_list = [this, p = k.get()](std::vector<nlohmann::json> items) {
      OnList(p, std::move(items));
    };
    handler.on_event = [this, p = k.get()](const std::string& type, const nlohmann::json& obj) {
      OnEvent(p, type, obj);
    };
    reflectors_.push_back(std::make_unique<Reflector>(
        client_.get(), k->type, k->namespace_.empty() ? options_.namespace_ : k->namespace_,
        std::move(handler), &stop_, &metrics_));
  }
}

Source::~Source() { Stop(); }

void Source::Start() {
  std::lock_guard<std::mutex> lock(threads_mu_);
  for (auto& r : reflectors_) {
    threads_.emplace_back([p = r.get()] { p->Run(); });
  }
}

void Source::Stop() {
  std::lock_guard<std::mutex> lock(threads_mu_);
  stop_.Stop();
  client_->Cancel();
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
  threads_.clear();
}

bool Source::Decode(Kind* k, nlohmann::json* obj, api::Object* out) {
  if (!obj->is_object() || !obj->contains("metadata")) {
    return false;
  }
  (*obj)["kind"] = k->type.kind;  // list items have neither
  (*obj)["apiVersion"] = k->type.api_version;
  const auto& md = (*obj)["metadata"];
  std::string origin =
      "kube " + k->type.kind + " " + md.value("namespace", "") + "/" + md.value("name", "");
  if (!api::DecodeObject(*obj, origin, out)) {
    return false;
  }
  if (out->kind == api::Kind::kSecret && !out->As<api::Secret>().HasTls()) {
    return false;  // a Secret without TLS keys: never kept (tokens, passwords, ...)
  }
  if (k->istio && observed_ != nullptr) {
    // Before the store has it: a translation it causes finds its generation here.
    Observed o;
    o.uid = md.value("uid", "");
    o.generation = md.value("generation", int64_t{0});
    o.resource_version = md.value("resourceVersion", "");
    o.status = obj->value("status", nlohmann::json());
    observed_->Set(ObservedObjects::Key(k->type.kind, out->meta.namespace_, out->meta.name),
                   std::move(o));
  }
  return true;
}

void Source::OnList(Kind* k, std::vector<nlohmann::json> items) {
  std::vector<api::Object> objects;
  objects.reserve(items.size());
  std::set<std::string> keys;
  for (auto& item : items) {
    api::Object o;
    if (Decode(k, &item, &o)) {
      keys.insert(ObservedObjects::Key(k->type.kind, o.meta.namespace_, o.meta.name));
      objects.push_back(std::move(o));
    }
  }
  if (k->istio && observed_ != nullptr) {
    observed_->EraseKindExcept(k->type.kind, keys);
  }
  sink_->ReplaceKind(k->kind, std::move(objects), k->namespace_);
  if (!k->listed.exchange(true) && listed_.fetch_add(1) + 1 == kinds_.size()) {
    sink_->Synced();  // every kind listed once: the store may translate
  }
}

void Source::OnEvent(Kind* k, const std::string& type, nlohmann::json obj) {
  if (type == "DELETED") {
    if (!obj.is_object() || !obj.contains("metadata")) {
      return;
    }
    const auto& md = obj["metadata"];
    std::string ns = md.value("namespace", "");
    std::string name = md.value("name", "");
    if (ns.empty()) {
      ns = "default";  // as the decoder does
    }
    if (k->istio && observed_ != nullptr) {
      observed_->Erase(ObservedObjects::Key(k->type.kind, ns, name));
    }
    sink_->Delete(k->kind, ns, name);
    return;
  }
  api::Object o;
  if (Decode(k, &obj, &o)) {
    sink_->Upsert(std::move(o));
  } else if (k->kind == api::Kind::kSecret && obj.is_object() && obj.contains("metadata")) {
    // A Secret that no longer holds TLS keys: gone, as far as skiff is concerned.
    const auto& md = obj["metadata"];
    std::string ns = md.value("namespace", "");
    sink_->Delete(k->kind, ns.empty() ? "default" : ns, md.value("name", ""));
  }
}

}  // namespace skiff::kube

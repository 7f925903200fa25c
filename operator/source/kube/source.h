#pragma once
// The Kubernetes source: a reflector (list + watch) per kind - Gateways, VirtualServices,
// DestinationRules, Services, EndpointSlices, Pods and TLS Secrets - whose objects are decoded into
// the same api::Objects the file source makes and handed to the store: a list as the kind's whole
// content, a watch event as one object. The store is told it is synced once every kind was listed.
// Of the Istio kinds it also keeps what the status writer needs (uid, generation, resourceVersion,
// status) in ObservedObjects.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "operator/source/kube/client.h"
#include "operator/source/kube/observed.h"
#include "operator/source/kube/reflector.h"
#include "operator/source/source.h"

namespace skiff::kube {

struct SourceOptions {
  std::string namespace_;  // watch one namespace; empty = all
  std::string istio_version = "v1";
  // The namespaces whose TLS Secrets are watched (one reflector each, so that a Role in
  // each is all the access needed, as Istio's gateways read their own namespace's);
  // empty: `namespace_` (all namespaces when that is empty too). Secrets that hold no TLS
  // keys are not kept.
  std::vector<std::string> secret_namespaces;
};

using SourceMetrics = ReflectorMetrics;

class Source final : public source::Source {
 public:
  // `sink` and `observed` (may be null) outlive the source.
  Source(std::unique_ptr<Client> client, SourceOptions options, source::Sink* sink,
         ObservedObjects* observed);
  ~Source() override;
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;

  void Start() override;
  void Stop() override;

  [[nodiscard]] const SourceMetrics& metrics() const { return metrics_; }
  [[nodiscard]] bool synced() const { return listed_.load() == reflectors_.size(); }

 private:
  struct Kind;
  void OnList(Kind* k, std::vector<nlohmann::json> items);
  void OnEvent(Kind* k, const std::string& type, nlohmann::json object);
  // Decodes `obj` (of kind k) into `out`; false when it is not an object skiff decodes.
  bool Decode(Kind* k, nlohmann::json* obj, api::Object* out);

  std::unique_ptr<Client> client_;
  SourceOptions options_;
  source::Sink* const sink_;
  ObservedObjects* const observed_;
  StopSignal stop_;
  SourceMetrics metrics_;
  std::vector<std::unique_ptr<Kind>> kinds_;
  std::vector<std::unique_ptr<Reflector>> reflectors_;
  std::atomic<size_t> listed_{0};  // kinds listed at least once
  std::vector<std::thread> threads_;
  std::mutex threads_mu_;
};

}  // namespace skiff::kube

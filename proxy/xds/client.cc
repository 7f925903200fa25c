#include "proxy/xds/client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <random>

#include "proxy/config/config.h"
#include "proxy/config/dns.h"

namespace skiff::proxy {

using xds::AssembleSnapshot;
using xds::kTypeOrder;
using xds::ResourceName;
using xds::ResourceVersion;
using xds::ShortType;
using xds::TypedResources;

XdsClient::XdsClient(XdsClientOptions options, ConfigStore* store, std::function<void()> on_publish)
    : options_(std::move(options)), store_(store), on_publish_(std::move(on_publish)) {}

XdsClient::~XdsClient() { Stop(); }

void XdsClient::Start() {
  // (The proxy has one xDS client: it owns the process's DNS cache's change callback.)
  DnsCache::Default().OnChange([this] { ReapplyForDns(); });
  thread_ = std::thread([this] { Run(); });
}

void XdsClient::Stop() {
  stop_ = true;
  DnsCache::Default().OnChange(nullptr);  // (waits for a rebuild in progress)
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (context_ != nullptr) {
      context_->TryCancel();
    }
  }
  if (thread_.joinable()) {
    thread_.join();
  }
}

std::string XdsClient::last_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_error_;
}

std::map<std::string, std::string> XdsClient::versions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return versions_;
}

bool XdsClient::complete(std::string* missing) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const char* type : kTypeOrder) {
    if (accepted_types_.count(type) == 0) {
      out += (out.empty() ? "" : ", ") + ShortType(type);
    }
  }
  if (missing != nullptr) {
    *missing = out;
  }
  return out.empty();
}

namespace {

// The NACK message for a response over the limit, or empty.
std::string CheckSize(const std::string& type_url, size_t size, int64_t limit) {
  if (limit <= 0 || size <= static_cast<size_t>(limit)) {
    return "";
  }
  return ShortType(type_url) + ": the response is " + std::to_string(size) +
         " bytes, more than --xds-max-response-bytes " + std::to_string(limit) + "; not applied";
}

}  // namespace

bool XdsClient::TryApply(const TypedResources& candidate, std::string* error) {
  std::lock_guard<std::mutex> lock(apply_mu_);
  return ApplyLocked(candidate, /*adopt=*/true, error);
}

void XdsClient::ReapplyForDns() {
  std::lock_guard<std::mutex> lock(apply_mu_);
  if (config_version_ == 0) {
    return;  // nothing accepted yet
  }
  std::string error;
  if (!ApplyLocked(accepted_, /*adopt=*/false, &error)) {
    spdlog::warn("xDS: rebuilding the configuration for new DNS answers: {}", error);
  }
}

bool XdsClient::ApplyLocked(const TypedResources& candidate, bool adopt, std::string* error) {
  v1::Snapshot snapshot;
  if (!AssembleSnapshot(candidate, &snapshot, error)) {
    return false;
  }
  auto config = Config::Build(std::move(snapshot), options_.port_map, config_version_ + 1, error,
                              /*strict_references=*/false, /*dns_names=*/true);
  if (config == nullptr) {
    return false;
  }
  ++config_version_;
  if (adopt) {
    accepted_ = candidate;
  }
  // The DNS names its endpoints use are resolved (again, every 5 s) in the background; a
  // change rebuilds this configuration with their new addresses.
  if (!config->dns_names().empty() || dns_used_) {
    dns_used_ = true;
    DnsCache::Default().Want(config->dns_names());
  }
  store_->Publish(std::move(config));
  if (on_publish_) {
    on_publish_();
  }
  return true;
}

void XdsClient::Run() {
  // No transport cap (gRPC's default is 4 MiB): big route tables must arrive, and one over
  // --xds-max-response-bytes is NACKed by the session (visible in proxy-status) instead of
  // failing the stream on every reconnect.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel =
      grpc::CreateCustomChannel(options_.address, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::AggregatedDiscoveryService::NewStub(channel);
  std::mt19937_64 rng(std::random_device{}());
  auto backoff = std::chrono::milliseconds(500);
  while (!stop_) {
    bool progressed = options_.delta ? SessionDelta(stub.get()) : SessionSotw(stub.get());
    connected_ = false;
    if (stop_) {
      break;
    }
    if (progressed) {
      backoff = std::chrono::milliseconds(500);
    }
    // Jitter: a random wait between half the backoff and the backoff.
    std::uniform_int_distribution<int64_t> dist(backoff.count() / 2, backoff.count());
    auto wait = std::chrono::milliseconds(dist(rng));
    spdlog::warn("xDS stream to {} ended; reconnecting in {} ms", options_.address, wait.count());
    auto until = std::chrono::steady_clock::now() + wait;
    while (!stop_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
  }
}

bool XdsClient::SessionSotw(v1::AggregatedDiscoveryService::Stub* stub) {
  grpc::ClientContext ctx;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      return false;
    }
    context_ = &ctx;
  }
  auto stream = stub->StreamAggregatedResources(&ctx);
  bool progressed = false;
  bool ok = true;
  for (const char* type : kTypeOrder) {
    v1::DiscoveryRequest req;
    *req.mutable_node() = options_.node;
    req.set_type_url(type);
    {
      std::lock_guard<std::mutex> lock(mu_);
      req.set_version_info(versions_[type]);  // resume from what we have
    }
    ok = ok && stream->Write(req);
  }
  v1::DiscoveryResponse resp;
  while (ok && stream->Read(&resp)) {
    connected_ = true;
    progressed = true;
    v1::DiscoveryRequest req;
    *req.mutable_node() = options_.node;
    req.set_type_url(resp.type_url());
    req.set_response_nonce(resp.nonce());
    std::string error =
        CheckSize(resp.type_url(), resp.ByteSizeLong(), options_.max_response_bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      TypedResources candidate = accepted_;
      auto& map = candidate[resp.type_url()];
      map.clear();
      for (int i = 0; error.empty() && i < resp.resources_size(); ++i) {
        const auto& any = resp.resources(i);
        std::string name = ResourceName(any);
        if (name.empty()) {
          error =
              ShortType(resp.type_url()) + ": a resource cannot be decoded as " + resp.type_url();
          break;
        }
        map[name] = any;
      }
      if (error.empty() && TryApply(candidate, &error)) {
        versions_[resp.type_url()] = resp.version_info();
        accepted_types_.insert(resp.type_url());
        last_error_.clear();
      }
      req.set_version_info(versions_[resp.type_url()]);
      if (!error.empty()) {
        last_error_ = error;
      }
    }
    if (error.empty()) {
      accepted_count_.fetch_add(1);
      spdlog::info("xDS: accepted {} version {}", ShortType(resp.type_url()), resp.version_info());
    } else {
      rejected_count_.fetch_add(1);
      req.mutable_error_detail()->set_code(3);  // INVALID_ARGUMENT
      req.mutable_error_detail()->set_message(error);
      spdlog::error("xDS: rejected {} version {}: {}", ShortType(resp.type_url()),
                    resp.version_info(), error);
    }
    ok = stream->Write(req);
  }
  stream->WritesDone();
  auto status = stream->Finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    context_ = nullptr;
  }
  if (!status.ok() && !stop_) {
    spdlog::warn("xDS stream: {}", status.error_message());
  }
  return progressed;
}

bool XdsClient::SessionDelta(v1::AggregatedDiscoveryService::Stub* stub) {
  grpc::ClientContext ctx;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      return false;
    }
    context_ = &ctx;
  }
  auto stream = stub->DeltaAggregatedResources(&ctx);
  bool progressed = false;
  bool ok = true;
  for (const char* type : kTypeOrder) {
    v1::DeltaDiscoveryRequest req;
    *req.mutable_node() = options_.node;
    req.set_type_url(type);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [name, any] : accepted_[type]) {
        (*req.mutable_initial_resource_versions())[name] = ResourceVersion(any);
      }
    }
    ok = ok && stream->Write(req);
  }
  v1::DeltaDiscoveryResponse resp;
  while (ok && stream->Read(&resp)) {
    connected_ = true;
    progressed = true;
    v1::DeltaDiscoveryRequest req;
    *req.mutable_node() = options_.node;
    req.set_type_url(resp.type_url());
    req.set_response_nonce(resp.nonce());
    std::string error =
        CheckSize(resp.type_url(), resp.ByteSizeLong(), options_.max_response_bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      TypedResources candidate = accepted_;
      auto& map = candidate[resp.type_url()];
      for (int i = 0; error.empty() && i < resp.resources_size(); ++i) {
        const auto& r = resp.resources(i);
        if (r.resource().type_url() != resp.type_url()) {
          error = ShortType(resp.type_url()) + " \"" + r.name() + "\": resource has type " +
                  r.resource().type_url();
          break;
        }
        map[r.name()] = r.resource();
      }
      for (const auto& name : resp.removed_resources()) {
        map.erase(name);
      }
      // A response that changes nothing (the server confirming an empty or already current
      // type) is ACKed without rebuilding the configuration.
      bool unchanged = error.empty() && resp.resources_size() == 0 &&
                       resp.removed_resources_size() == 0 && accepted_.count(resp.type_url()) != 0;
      if (error.empty() && (unchanged || TryApply(candidate, &error))) {
        versions_[resp.type_url()] = resp.system_version_info();
        accepted_types_.insert(resp.type_url());
        last_error_.clear();
      } else {
        last_error_ = error;
      }
    }
    if (error.empty()) {
      accepted_count_.fetch_add(1);
      spdlog::info("xDS (delta): accepted {} ({} updated, {} removed)", ShortType(resp.type_url()),
                   resp.resources_size(), resp.removed_resources_size());
    } else {
      rejected_count_.fetch_add(1);
      req.mutable_error_detail()->set_code(3);
      req.mutable_error_detail()->set_message(error);
      spdlog::error("xDS (delta): rejected {}: {}", ShortType(resp.type_url()), error);
    }
    ok = stream->Write(req);
  }
  stream->WritesDone();
  auto status = stream->Finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    context_ = nullptr;
  }
  if (!status.ok() && !stop_) {
    spdlog::warn("xDS stream: {}", status.error_message());
  }
  return progressed;
}

}  // namespace skiff::proxy

// N simulated proxies (one ADS stream each, state of the world) against one operator.
// After all are synced, rewrites one VirtualService file and measures, per proxy, the time
// until it has received and ACKed the new route table. Prints p50/p99/max and the
// operator's RSS. The proxies are gRPC callback-API reactors (no thread per proxy, so the
// simulation itself stays cheap); --sync-client runs one thread per proxy with the blocking
// API instead (the original client), --separate-connections gives each proxy its own TCP
// connection (by default gRPC shares one among identical channels). Usage:
//   xds_bench --operator 127.0.0.1:15010 --operator-pid PID --file DIR/vs.yaml
//             --proxies 1000 [--changes 5] [--sync-client] [--separate-connections]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  std::string wanted_route_version;  // empty: none expected yet
  Clock::time_point change_start;
  std::vector<double> latencies_ms;
  int synced = 0;
  std::atomic<bool> stop{false};
};

std::string VsYaml(int n) {
  return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bench, "
         "namespace: default}\nspec:\n  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - match: "
         "[{uri: {prefix: /v" +
         std::to_string(n) + "}}]\n    route: [{destination: {host: svc}}]\n";
}

double RssMb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stod(line.substr(6)) / 1024.0;
    }
  }
  return 0;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, bool separate) {
  grpc::ChannelArguments args;
  if (separate) {
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  }
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

std::vector<skiff::v1::DiscoveryRequest> Subscriptions(int id) {
  skiff::v1::Node node;
  node.set_id("bench-" + std::to_string(id));
  node.set_role("gateway");
  node.set_namespace_("default");
  (*node.mutable_labels())["istio"] = "ingressgateway";
  std::vector<skiff::v1::DiscoveryRequest> out;
  for (const char* type : skiff::xds::kTypeOrder) {
    skiff::v1::DiscoveryRequest req;
    *req.mutable_node() = node;
    req.set_type_url(type);
    out.push_back(std::move(req));
  }
  return out;
}

skiff::v1::DiscoveryRequest Ack(const skiff::v1::DiscoveryResponse& resp) {
  skiff::v1::DiscoveryRequest ack;
  ack.set_type_url(resp.type_url());
  ack.set_version_info(resp.version_info());
  ack.set_response_nonce(resp.nonce());
  return ack;
}

// A route table arrived (and its ACK was handed to gRPC): the first syncs the proxy, later
// ones time the change.
void RouteReceived(Shared* shared, bool* counted) {
  std::lock_guard<std::mutex> lock(shared->mu);
  if (!*counted) {
    *counted = true;
    ++shared->synced;
  } else {
    shared->latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - shared->change_start).count());
  }
  shared->cv.notify_all();
}

// The original client: one thread per proxy, blocking API.
void RunSyncProxy(int id, const std::string& address, bool separate, Shared* shared) {
  auto stub = skiff::v1::AggregatedDiscoveryService::NewStub(NewChannel(address, separate));
  grpc::ClientContext ctx;
  auto stream = stub->StreamAggregatedResources(&ctx);
  for (const auto& req : Subscriptions(id)) {
    stream->Write(req);
  }
  bool counted = false;
  skiff::v1::DiscoveryResponse resp;
  while (!shared->stop && stream->Read(&resp)) {
    stream->Write(Ack(resp));
    if (resp.type_url() == skiff::xds::kRouteTableType) {
      RouteReceived(shared, &counted);
    }
  }
  ctx.TryCancel();
  stream->Finish();
}

// One proxy as a callback-API reactor: reads responses, queues ACKs (one write at a time).
class CallbackProxy final
    : public grpc::ClientBidiReactor<skiff::v1::DiscoveryRequest, skiff::v1::DiscoveryResponse> {
 public:
  CallbackProxy(int id, const std::string& address, bool separate, Shared* shared)
      : shared_(shared),
        stub_(skiff::v1::AggregatedDiscoveryService::NewStub(NewChannel(address, separate))) {
    stub_->async()->StreamAggregatedResources(&ctx_, this);
    for (auto& req : Subscriptions(id)) {
      Send(std::move(req));
    }
    StartRead(&resp_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      return;
    }
    Send(Ack(resp_));
    if (resp_.type_url() == skiff::xds::kRouteTableType) {
      RouteReceived(shared_, &counted_);
    }
    StartRead(&resp_);
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.pop_front();
    if (ok && !queue_.empty()) {
      StartWrite(&queue_.front());
    }
  }
  void OnDone(const grpc::Status& /*status*/) override {}

 private:
  void Send(skiff::v1::DiscoveryRequest req) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(req));
    if (queue_.size() == 1) {
      StartWrite(&queue_.front());
    }
  }

  Shared* shared_;
  std::unique_ptr<skiff::v1::AggregatedDiscoveryService::Stub> stub_;
  grpc::ClientContext ctx_;
  skiff::v1::DiscoveryResponse resp_;
  std::mutex mu_;
  std::deque<skiff::v1::DiscoveryRequest> queue_;  // front: the write in flight
  bool counted_ = false;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  std::string address = "127.0.0.1:15010";
  std::string file;
  int64_t proxies = 1000;
  int64_t changes = 5;
  int64_t pid = 0;
  skiff::FlagSet flags("xds_bench", "Time from a VirtualService change until N proxies ACK it.");
  flags.AddString("operator", &address, "operator xDS address", "HOST:PORT");
  flags.AddString("file", &file, "the VirtualService file the operator watches", "FILE");
  flags.AddInt("proxies", &proxies, 1, 100000, "simulated proxies (default 1000)");
  flags.AddInt("changes", &changes, 1, 1000, "changes to time (default 5)");
  flags.AddInt("operator-pid", &pid, 0, 1 << 30, "operator pid, for its RSS");
  bool sync_client = false;
  bool separate = false;
  flags.AddBool("sync-client", &sync_client, "one thread per proxy, blocking gRPC API");
  flags.AddBool("separate-connections", &separate, "one TCP connection per proxy");
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  if (file.empty()) {
    std::fprintf(stderr, "xds_bench: --file is required\n");
    return 2;
  }
  std::ofstream(file) << VsYaml(0);
  Shared shared;
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<CallbackProxy>> reactors;
  auto t0 = Clock::now();
  for (int i = 0; i < proxies; ++i) {
    if (sync_client) {
      threads.emplace_back(RunSyncProxy, i, address, separate, &shared);
    } else {
      reactors.push_back(std::make_unique<CallbackProxy>(i, address, separate, &shared));
    }
  }
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    bool ok = shared.cv.wait_for(lock, std::chrono::seconds(120),
                                 [&] { return shared.synced == proxies; });
    if (!ok) {
      std::fprintf(stderr, "only %d of %ld proxies synced\n", shared.synced,
                   static_cast<long>(proxies));
      shared.stop = true;
    }
  }
  double connect_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (int c = 1; c <= changes && !shared.stop; ++c) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    {
      std::lock_guard<std::mutex> lock(shared.mu);
      shared.latencies_ms.clear();
      shared.change_start = Clock::now();
    }
    std::string tmp = file + ".tmp";
    std::ofstream(tmp) << VsYaml(c);
    std::rename(tmp.c_str(), file.c_str());
    std::unique_lock<std::mutex> lock(shared.mu);
    if (!shared.cv.wait_for(lock, std::chrono::seconds(60), [&] {
          return static_cast<int64_t>(shared.latencies_ms.size()) == proxies;
        })) {
      std::fprintf(stderr, "change %d: only %zu of %ld proxies updated\n", c,
                   shared.latencies_ms.size(), static_cast<long>(proxies));
    }
    std::printf("change %d: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%zu proxies)\n", c,
                Percentile(shared.latencies_ms, 0.5), Percentile(shared.latencies_ms, 0.99),
                Percentile(shared.latencies_ms, 1.0), shared.latencies_ms.size());
    all.insert(all.end(), shared.latencies_ms.begin(), shared.latencies_ms.end());
  }
  double rss = pid > 0 ? RssMb(static_cast<int>(pid)) : 0;
  std::printf(
      "proxies=%ld client=%s%s connect_and_sync_s=%.2f all_changes: p50_ms=%.1f p99_ms=%.1f "
      "max_ms=%.1f "
      "operator_rss_mb=%.1f\n",
      static_cast<long>(proxies), sync_client ? "sync" : "callback",
      separate ? ",separate-connections" : "", connect_s, Percentile(all, 0.5),
      Percentile(all, 0.99), Percentile(all, 1.0), rss);
  std::printf("goals: p99 <= 100 ms with holdoff 0: %s; operator RSS <= 100 MB: %s\n",
              Percentile(all, 0.99) <= 100 ? "met" : "NOT met", rss <= 100 ? "met" : "NOT met");
  shared.stop = true;
  std::fflush(stdout);
  std::_Exit(0);  // 1,000 blocked streams: skip orderly teardown
}

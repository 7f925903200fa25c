// A hostile xDS client for the operator's memory-bound tests: ADS streams (state of the
// world), each claiming a group of its own (labels flood=<prefix>-<n>), subscribing to every
// type. Two modes:
//   churn  --streams N --concurrency K: N streams, K open at a time; each reads its first
//          response (the server had to compute the group's snapshot) and goes away.
//   hold   --hold: opens N streams (K threads) and keeps them open until stdin closes,
//          after printing one line of counts ("held ...").
// At the end prints {"served": S, "refused": R, "errors": E, "first_error": "..."}:
// served = got a response, refused = finished RESOURCE_EXHAUSTED.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "proto/resources.h"
#include "skiff/v1/discovery.grpc.pb.h"

namespace {

using Stream = grpc::ClientReaderWriter<skiff::v1::DiscoveryRequest, skiff::v1::DiscoveryResponse>;

struct Counts {
  std::atomic<int64_t> served{0};
  std::atomic<int64_t> refused{0};
  std::atomic<int64_t> errors{0};
  std::mutex mu;
  std::string first_error;
  void Error(const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
    } else {
      ++errors;
    }
    std::lock_guard<std::mutex> lock(mu);
    if (first_error.empty()) {
      first_error = std::to_string(s.error_code()) + ": " + s.error_message();
    }
  }
};

struct Open {
  std::unique_ptr<grpc::ClientContext> ctx;
  std::unique_ptr<Stream> stream;
};

// Opens one stream for group `n` and reads its first response; false if it was refused
// or failed (then it is finished and counted).
bool OpenOne(skiff::v1::AggregatedDiscoveryService::Stub* stub, const std::string& prefix,
             int64_t n, std::chrono::seconds deadline, Counts* counts, Open* out) {
  out->ctx = std::make_unique<grpc::ClientContext>();
  out->ctx->set_deadline(std::chrono::system_clock::now() + deadline);
  out->stream = stub->StreamAggregatedResources(out->ctx.get());
  bool ok = true;
  for (const char* type : skiff::xds::kTypeOrder) {
    skiff::v1::DiscoveryRequest req;
    auto* node = req.mutable_node();
    node->set_id(prefix + "-" + std::to_string(n));
    node->set_role("gateway");
    (*node->mutable_labels())["istio"] = "ingressgateway";
    (*node->mutable_labels())["flood"] = prefix + "-" + std::to_string(n);
    req.set_type_url(type);
    ok = ok && out->stream->Write(req);
  }
  skiff::v1::DiscoveryResponse resp;
  if (ok && out->stream->Read(&resp)) {
    ++counts->served;
    return true;
  }
  counts->Error(out->stream->Finish());
  out->stream.reset();
  return false;
}

void Close(Open* o) {
  if (o->stream == nullptr) {
    return;
  }
  o->ctx->TryCancel();
  (void)o->stream->Finish();
  o->stream.reset();
}

}  // namespace

int main(int argc, char** argv) {
  std::string address;
  std::string prefix = "flood";
  int64_t streams = 1000;
  int64_t concurrency = 16;
  bool hold = false;
  skiff::FlagSet flags("xds_flood", "Opens many xDS streams with distinct groups.");
  flags.AddString("operator", &address, "the operator's xDS address", "HOST:PORT");
  flags.AddString("prefix", &prefix, "label prefix of the groups (default flood)", "NAME");
  flags.AddInt("streams", &streams, 1, 1000000, "streams to open (default 1000)");
  flags.AddInt("concurrency", &concurrency, 1, 1024, "threads (default 16)");
  flags.AddBool("hold", &hold, "keep the streams open until stdin closes");
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  Counts counts;
  std::atomic<int64_t> next{0};
  std::vector<std::vector<Open>> held(static_cast<size_t>(concurrency));
  std::vector<std::thread> threads;
  for (int64_t t = 0; t < concurrency; ++t) {
    threads.emplace_back([&, t] {
      grpc::ChannelArguments args;
      args.SetInt("skiff.flood.channel", static_cast<int>(t));  // one connection per thread
      args.SetMaxReceiveMessageSize(-1);
      auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
      auto stub = skiff::v1::AggregatedDiscoveryService::NewStub(channel);
      for (int64_t n = next.fetch_add(1); n < streams; n = next.fetch_add(1)) {
        Open o;
        if (!OpenOne(stub.get(), prefix, n, std::chrono::seconds(hold ? 3600 : 60), &counts, &o)) {
          continue;
        }
        if (hold) {
          held[static_cast<size_t>(t)].push_back(std::move(o));
        } else {
          Close(&o);
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  if (hold) {
    std::printf("held served=%lld refused=%lld errors=%lld\n",
                static_cast<long long>(counts.served.load()),
                static_cast<long long>(counts.refused.load()),
                static_cast<long long>(counts.errors.load()));
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    for (auto& v : held) {
      for (auto& o : v) {
        Close(&o);
      }
    }
  }
  std::string err;
  for (char c : counts.first_error) {
    err += (c == '"' || c == '\\') ? '\'' : c;
  }
  std::printf("{\"served\": %lld, \"refused\": %lld, \"errors\": %lld, \"first_error\": \"%s\"}\n",
              static_cast<long long>(counts.served.load()),
              static_cast<long long>(counts.refused.load()),
              static_cast<long long>(counts.errors.load()), err.c_str());
  return 0;
}

// coolstore-stock: the catalog's stock lookup as a gRPC service (coolstore.v1.Stock), with
// the same chaos switch as the catalog (SetChaos: a share of lookups fail with a gRPC
// status), and server reflection so that grpcurl can call it without the .proto.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "common/flags.h"
#include "common/logging.h"
#include "coolstore/v1/stock.grpc.pb.h"

namespace {

std::atomic<bool> g_stop{false};

class StockService final : public coolstore::v1::Stock::Service {
 public:
  explicit StockService(std::string version) : version_(std::move(version)) {}

  grpc::Status Lookup(grpc::ServerContext* /*context*/, const coolstore::v1::StockRequest* req,
                      coolstore::v1::StockReply* reply) override {
    if (int code = Chaos(); code != 0) {
      return {static_cast<grpc::StatusCode>(code), "chaos: the stock service is failing"};
    }
    if (req->item_id().empty()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "item_id: required"};
    }
    reply->set_item_id(req->item_id());
    // A stable quantity per item, so callers can check what they got.
    int q = 0;
    for (char c : req->item_id()) {
      q = (q * 31 + static_cast<unsigned char>(c)) % 1000;
    }
    reply->set_quantity(q);
    reply->set_version(version_);
    return grpc::Status::OK;
  }

  grpc::Status SetChaos(grpc::ServerContext* /*context*/, const coolstore::v1::ChaosRequest* req,
                        coolstore::v1::ChaosReply* /*reply*/) override {
    if (req->percentage() < 0 || req->percentage() > 100) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "percentage: must be within 0..100"};
    }
    if (req->code() < 0 || req->code() > 16) {
      return {grpc::StatusCode::INVALID_ARGUMENT, "code: must be a gRPC status code (0..16)"};
    }
    std::lock_guard<std::mutex> lock(mu_);
    percentage_ = req->percentage();
    code_ = req->code() == 0 ? 14 : req->code();
    spdlog::info("chaos: {}% of lookups fail with gRPC status {}", percentage_, code_);
    return grpc::Status::OK;
  }

 private:
  int Chaos() {
    std::lock_guard<std::mutex> lock(mu_);
    if (percentage_ <= 0) {
      return 0;
    }
    return std::uniform_real_distribution<double>(0, 100)(rng_) < percentage_ ? code_ : 0;
  }

  std::string version_;
  std::mutex mu_;
  double percentage_ = 0;
  int code_ = 14;
  std::mt19937_64 rng_{std::random_device{}()};
};

int Run(int argc, char** argv) {
  std::string address = "127.0.0.1";
  int64_t port = 9090;
  std::string version = "v1";
  std::string log_level = "info";
  skiff::FlagSet flags("coolstore-stock",
                       "The coolstore catalog's stock lookup over gRPC (coolstore.v1.Stock).");
  flags.AddString("address", &address, "listen address (default 127.0.0.1)", "ADDR");
  flags.AddInt("port", &port, 1, 65535, "listen port (default 9090)");
  flags.AddString("service-version", &version, "the version label in replies (default v1)", "NAME");
  skiff::AddLogLevelFlag(flags, &log_level);
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  if (!skiff::SetupLogging("coolstore-stock", log_level)) {
    return skiff::kExitUsage;
  }
  StockService service(version);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::string host = address.find(':') != std::string::npos ? "[" + address + "]" : address;
  int bound = 0;
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(),
                           &bound);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound == 0) {
    std::fprintf(stderr, "coolstore-stock: cannot listen on %s:%lld\n", address.c_str(),
                 static_cast<long long>(port));
    return EXIT_FAILURE;
  }
  spdlog::info("coolstore-stock {} listening on {}:{} (gRPC, h2c)", version, address, bound);
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGINT, [](int) { g_stop = true; });
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }

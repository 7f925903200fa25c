// coolstore-stock-client: calls coolstore.v1.Stock with the gRPC C++ library, as an app in
// the mesh would: N unary lookups (or one SetChaos), and prints what came back as JSON:
// {"calls": N, "codes": {"0": n, "14": m}, "versions": {"v1": n}, "messages": {...}}.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common/flags.h"
#include "coolstore/v1/stock.grpc.pb.h"

namespace {

int Run(int argc, char** argv) {
  std::string target = "127.0.0.1:9090";
  std::string authority;
  std::string item = "329299";
  int64_t calls = 1;
  int64_t deadline_ms = 10000;
  std::string chaos;  // "PERCENT[:CODE]"
  skiff::FlagSet flags("coolstore-stock-client",
                       "Calls the coolstore stock service over gRPC (h2c) and prints the "
                       "status codes it got, as JSON.");
  flags.AddString("target", &target, "HOST:PORT to connect to (default 127.0.0.1:9090)",
                  "HOST:PORT");
  flags.AddString("authority", &authority, ":authority of the calls (default: the target)", "NAME");
  flags.AddString("item", &item, "the item to look up (default 329299)", "ID");
  flags.AddInt("calls", &calls, 1, 1000000, "unary Lookup calls to make, one after another");
  flags.AddInt("deadline-ms", &deadline_ms, 1, 3600000,
               "each call's deadline (grpc-timeout), default 10000");
  flags.AddString("set-chaos", &chaos,
                  "call SetChaos instead: PERCENT[:CODE] of lookups fail with CODE (default 14)",
                  "PERCENT[:CODE]");
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  grpc::ChannelArguments args;
  if (!authority.empty()) {
    args.SetString(GRPC_ARG_DEFAULT_AUTHORITY, authority);
  }
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  auto stub = coolstore::v1::Stock::NewStub(channel);
  auto deadline = [&] {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms);
  };
  if (!chaos.empty()) {
    coolstore::v1::ChaosRequest req;
    size_t colon = chaos.find(':');
    req.set_percentage(std::strtod(chaos.substr(0, colon).c_str(), nullptr));
    if (colon != std::string::npos) {
      req.set_code(std::atoi(chaos.c_str() + colon + 1));
    }
    coolstore::v1::ChaosReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    grpc::Status st = stub->SetChaos(&ctx, req, &reply);
    std::printf("%s\n", nlohmann::json({{"code", static_cast<int>(st.error_code())},
                                        {"message", st.error_message()}})
                            .dump()
                            .c_str());
    return st.ok() ? 0 : 1;
  }
  std::map<std::string, int> codes;
  std::map<std::string, int> versions;
  std::map<std::string, int> messages;
  for (int64_t i = 0; i < calls; ++i) {
    coolstore::v1::StockRequest req;
    req.set_item_id(item);
    coolstore::v1::StockReply reply;
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    grpc::Status st = stub->Lookup(&ctx, req, &reply);
    ++codes[std::to_string(static_cast<int>(st.error_code()))];
    if (st.ok()) {
      ++versions[reply.version()];
    } else if (messages.size() < 16 || messages.count(st.error_message()) != 0) {
      ++messages[st.error_message()];
    }
  }
  nlohmann::json out = {
      {"calls", calls}, {"codes", codes}, {"versions", versions}, {"messages", messages}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }

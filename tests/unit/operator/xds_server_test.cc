// The xDS server's ACK/NACK bookkeeping, over real gRPC on 127.0.0.1 (in process).
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <thread>

#include "operator/api/decode.h"
#include "operator/xds/server.h"

namespace {

using skiff::v1::DiscoveryRequest;
using skiff::v1::DiscoveryResponse;

std::shared_ptr<const skiff::translate::Translator> Inputs(const std::string& prefix) {
  auto decoded = skiff::api::DecodeDocuments(
      "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n"
      "  selector: {istio: ingressgateway}\n  servers:\n"
      "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n"
      "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n"
      "  hosts: [\"*\"]\n  gateways: [gw]\n  http:\n  - match: [{uri: {prefix: " +
          prefix + "}}]\n    route: [{destination: {host: svc}}]\n",
      "test");
  return std::make_shared<skiff::translate::Translator>(std::move(decoded.objects));
}

struct Fixture {
  Fixture() {
    server.Update(Inputs("/a"));
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(static_cast<skiff::v1::AggregatedDiscoveryService::Service*>(&server));
    builder.RegisterService(static_cast<skiff::v1::ProxyStatusService::Service*>(&server));
    grpc_server = builder.BuildAndStart();
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                  grpc::InsecureChannelCredentials());
  }
  ~Fixture() {
    server.Shutdown();
    grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  std::string RouteState() {
    auto stub = skiff::v1::ProxyStatusService::NewStub(channel);
    grpc::ClientContext ctx;
    skiff::v1::ProxyStatusRequest req;
    skiff::v1::ProxyStatusResponse resp;
    REQUIRE(stub->ListProxies(&ctx, req, &resp).ok());
    REQUIRE(resp.proxies_size() == 1);
    for (const auto& t : resp.proxies(0).types()) {
      if (t.type_url() == skiff::xds::kRouteTableType) {
        return t.state();
      }
    }
    return "";
  }

  skiff::xds::XdsServer server;
  int port = 0;
  std::unique_ptr<grpc::Server> grpc_server;
  std::shared_ptr<grpc::Channel> channel;
};

DiscoveryRequest Subscribe(const std::string& version = "") {
  DiscoveryRequest req;
  req.mutable_node()->set_id("p1");
  req.mutable_node()->set_role("gateway");
  (*req.mutable_node()->mutable_labels())["istio"] = "ingressgateway";
  req.set_type_url(skiff::xds::kRouteTableType);
  req.set_version_info(version);
  return req;
}

// Reads with a deadline by running the stream with a context deadline.
bool ReadWithin(grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>* stream,
                DiscoveryResponse* out) {
  return stream->Read(out);
}

}  // namespace

TEST_CASE("xds: a NACKed version is not re-sent, stale nonces are ignored, ACK syncs") {
  Fixture f;
  auto stub = skiff::v1::AggregatedDiscoveryService::NewStub(f.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->StreamAggregatedResources(&ctx);
  REQUIRE(stream->Write(Subscribe()));
  DiscoveryResponse first;
  REQUIRE(ReadWithin(stream.get(), &first));
  CHECK(first.resources_size() == 1);

  // A NACK with a stale nonce changes nothing.
  DiscoveryRequest stale = Subscribe();
  stale.set_response_nonce("not-the-nonce");
  stale.mutable_error_detail()->set_message("ignored");
  REQUIRE(stream->Write(stale));
  // NACK the real response.
  DiscoveryRequest nack = Subscribe();
  nack.set_response_nonce(first.nonce());
  nack.mutable_error_detail()->set_message("bad regex");
  REQUIRE(stream->Write(nack));
  for (int i = 0; i < 100 && f.RouteState() != "NACKED"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(f.RouteState() == "NACKED");
  CHECK(f.server.metrics().nacks.load() == 1);
  uint64_t pushes = f.server.metrics().pushes.load();
  CHECK(pushes == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(f.server.metrics().pushes.load() == pushes);  // not re-sent

  // A new snapshot is sent; its ACK makes the proxy SYNCED.
  f.server.Update(Inputs("/b"));
  DiscoveryResponse second;
  REQUIRE(ReadWithin(stream.get(), &second));
  CHECK(second.version_info() != first.version_info());
  DiscoveryRequest ack = Subscribe(second.version_info());
  ack.set_response_nonce(second.nonce());
  REQUIRE(stream->Write(ack));
  for (int i = 0; i < 100 && f.RouteState() != "SYNCED"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(f.RouteState() == "SYNCED");
  ctx.TryCancel();
}

TEST_CASE("xds: a proxy that reconnects with the current version gets nothing re-sent") {
  Fixture f;
  auto stub = skiff::v1::AggregatedDiscoveryService::NewStub(f.channel);
  std::string version;
  {
    grpc::ClientContext ctx;
    auto stream = stub->StreamAggregatedResources(&ctx);
    REQUIRE(stream->Write(Subscribe()));
    DiscoveryResponse r;
    REQUIRE(stream->Read(&r));
    version = r.version_info();
    ctx.TryCancel();
  }
  // The server counts a push after its write returns, which may be after the client read.
  for (int i = 0; i < 100 && f.server.metrics().pushes.load() != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  uint64_t pushes = f.server.metrics().pushes.load();
  REQUIRE(pushes == 1);
  grpc::ClientContext ctx;
  auto stream = stub->StreamAggregatedResources(&ctx);
  REQUIRE(stream->Write(Subscribe(version)));
  for (int i = 0; i < 100 && f.server.metrics().connected.load() != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(f.server.metrics().pushes.load() == pushes);
  CHECK(f.RouteState() == "SYNCED");
  ctx.TryCancel();
}

TEST_CASE("xds: delta sends what changed, an ACK syncs, a NACK is not re-sent") {
  Fixture f;
  auto stub = skiff::v1::AggregatedDiscoveryService::NewStub(f.channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->DeltaAggregatedResources(&ctx);
  skiff::v1::DeltaDiscoveryRequest sub;
  sub.mutable_node()->set_id("p1");
  sub.mutable_node()->set_role("gateway");
  (*sub.mutable_node()->mutable_labels())["istio"] = "ingressgateway";
  sub.set_type_url(skiff::xds::kRouteTableType);
  REQUIRE(stream->Write(sub));
  skiff::v1::DeltaDiscoveryResponse first;
  REQUIRE(stream->Read(&first));
  REQUIRE(first.resources_size() == 1);
  CHECK(first.removed_resources_size() == 0);
  skiff::v1::DeltaDiscoveryRequest ack;
  ack.set_type_url(skiff::xds::kRouteTableType);
  ack.set_response_nonce(first.nonce());
  REQUIRE(stream->Write(ack));
  for (int i = 0; i < 100 && f.RouteState() != "SYNCED"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(f.RouteState() == "SYNCED");

  f.server.Update(Inputs("/b"));
  skiff::v1::DeltaDiscoveryResponse second;
  REQUIRE(stream->Read(&second));
  REQUIRE(second.resources_size() == 1);
  CHECK(second.resources(0).name() == first.resources(0).name());
  CHECK(second.resources(0).version() != first.resources(0).version());
  CHECK(second.nonce() != first.nonce());
  skiff::v1::DeltaDiscoveryRequest nack;
  nack.set_type_url(skiff::xds::kRouteTableType);
  nack.set_response_nonce(second.nonce());
  nack.mutable_error_detail()->set_message("bad regex");
  REQUIRE(stream->Write(nack));
  for (int i = 0; i < 100 && f.RouteState() != "NACKED"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(f.RouteState() == "NACKED");
  CHECK(f.server.metrics().nacks.load() == 1);
  uint64_t pushes = f.server.metrics().pushes.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(f.server.metrics().pushes.load() == pushes);  // not re-sent
  ctx.TryCancel();
}

TEST_CASE("xds: streams of one group share one snapshot - Shutdown ends open streams") {
  Fixture f;
  auto stub = skiff::v1::AggregatedDiscoveryService::NewStub(f.channel);
  grpc::ClientContext ctx1;
  grpc::ClientContext ctx2;
  auto s1 = stub->StreamAggregatedResources(&ctx1);
  auto s2 = stub->StreamAggregatedResources(&ctx2);
  DiscoveryRequest sub = Subscribe();
  REQUIRE(s1->Write(sub));
  sub.mutable_node()->set_id("p2");
  REQUIRE(s2->Write(sub));
  DiscoveryResponse r1;
  DiscoveryResponse r2;
  REQUIRE(s1->Read(&r1));
  REQUIRE(s2->Read(&r2));
  CHECK(r1.version_info() == r2.version_info());
  CHECK(r1.resources_size() == 1);
  CHECK(r1.resources(0).SerializeAsString() == r2.resources(0).SerializeAsString());
  CHECK(r1.nonce() != r2.nonce());
  CHECK(f.server.metrics().translations.load() == 1);
  CHECK(f.server.metrics().connected.load() == 2);

  f.server.Shutdown();
  CHECK_FALSE(s1->Read(&r1));
  CHECK_FALSE(s2->Read(&r2));
  CHECK(s1->Finish().ok());
  CHECK(s2->Finish().ok());
  for (int i = 0; i < 100 && f.server.metrics().connected.load() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(f.server.metrics().connected.load() == 0);
}

TEST_CASE("xds: a sidecar's interception mode is part of its group") {
  skiff::v1::Node node;
  node.set_role("sidecar");
  node.set_namespace_("shop");
  (*node.mutable_labels())["app"] = "catalog";
  auto plain = skiff::xds::GroupOf(node);
  CHECK_FALSE(plain.capture);
  node.set_interception_mode("REDIRECT");
  auto captured = skiff::xds::GroupOf(node);
  CHECK(captured.capture);
  CHECK_FALSE(captured == plain);  // a separate snapshot: with capture and 15006
  node.set_interception_mode("NONE");
  CHECK_FALSE(skiff::xds::GroupOf(node).capture);
  node.set_role("gateway");
  node.set_interception_mode("REDIRECT");
  CHECK_FALSE(skiff::xds::GroupOf(node).capture);  // gateways are never captured
}

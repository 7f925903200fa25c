#include <catch2/catch.hpp>
#include <map>

#include "proxy/telemetry/access_log.h"
#include "proxy/telemetry/metrics.h"
#include "proxy/telemetry/tracing.h"

using namespace skiff::telemetry;

TEST_CASE("workload names from pod names, as Kubernetes controllers make them") {
  CHECK(WorkloadOfPod("catalog-v1-5d9f8c7b6d-x2x7q") == "catalog-v1");
  CHECK(WorkloadOfPod("node-agent-4kq2z") == "node-agent");
  CHECK(WorkloadOfPod("catalog-v1") == "catalog-v1");
  CHECK(WorkloadOfPod("web-0") == "web-0");
}

TEST_CASE("destination labels from a cluster and an endpoint's pod") {
  skiff::v1::Cluster c;
  c.set_service("catalog.shop.svc.cluster.local");
  c.set_service_name("catalog");
  c.set_service_namespace("shop");
  skiff::v1::Endpoint ep;
  ep.set_pod("shop/catalog-v2-7f9b8c6d5e-abcde");
  auto* l = ep.add_labels();
  l->set_name("app");
  l->set_value("catalog");
  l = ep.add_labels();
  l->set_name("version");
  l->set_value("v2");
  std::string text = DestinationLabels(&c, &ep);
  CHECK(text.find("destination_workload=\"catalog-v2\"") != std::string::npos);
  CHECK(text.find("destination_workload_namespace=\"shop\"") != std::string::npos);
  CHECK(text.find("destination_version=\"v2\"") != std::string::npos);
  CHECK(text.find("destination_service=\"catalog.shop.svc.cluster.local\"") != std::string::npos);
  CHECK(text.find("destination_canonical_service=\"catalog\"") != std::string::npos);
  std::string unknown = DestinationLabels(nullptr, nullptr);
  CHECK(unknown.find("destination_service=\"unknown\"") != std::string::npos);
}

TEST_CASE("worker metrics: one series per label set, summed at render") {
  WorkerMetrics a(SourceLabels({"istio-ingressgateway", "istio-system", "", ""}));
  WorkerMetrics b(SourceLabels({"istio-ingressgateway", "istio-system", "", ""}));
  std::string dest = DestinationLabels(nullptr, nullptr);
  a.Record(dest, 200, "-", 3.0, 100, 200);
  a.Record(dest, 200, "-", 700.0, 100, 200);
  b.Record(dest, 200, "-", 0.2, 100, 200);
  b.Record(dest, 503, "UH", 0.1, 100, 20);
  std::string out;
  RenderIstioMetrics({&a, &b}, &out);
  CHECK(out.find("response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\","
                 "connection_security_policy=\"unknown\"} 3\n") != std::string::npos);
  CHECK(out.find("response_flags=\"UH\",connection_security_policy=\"unknown\"} 1\n") !=
        std::string::npos);
  // Cumulative buckets: 0.2 <= 0.5; 3 <= 5; 700 <= 1000.
  CHECK(out.find("response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\","
                 "connection_security_policy=\"unknown\",le=\"0.5\"} 1\n") != std::string::npos);
  CHECK(out.find("connection_security_policy=\"unknown\",le=\"5\"} 2\n") != std::string::npos);
  CHECK(out.find("connection_security_policy=\"unknown\",le=\"1000\"} 3\n") != std::string::npos);
}

TEST_CASE("worker metrics: gRPC requests by their grpc-status") {
  WorkerMetrics a(SourceLabels({"istio-ingressgateway", "istio-system", "", ""}));
  std::string dest = DestinationLabels(nullptr, nullptr);
  a.Record(dest, 200, "-", 1.0, 10, 20, false, true, 0);
  a.Record(dest, 200, "-", 1.0, 10, 20, false, true, 14);
  a.Record(dest, 200, "-", 1.0, 10, 20, false, true, 14);
  a.Record(dest, 200, "-", 1.0, 10, 20, false, false, -1);
  std::string out;
  RenderIstioMetrics({&a}, &out);
  CHECK(out.find("request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"14\","
                 "response_flags=\"-\",connection_security_policy=\"unknown\"} 2\n") !=
        std::string::npos);
  CHECK(out.find("request_protocol=\"grpc\",response_code=\"200\",grpc_response_status=\"0\","
                 "response_flags=\"-\",connection_security_policy=\"unknown\"} 1\n") !=
        std::string::npos);
  CHECK(out.find("request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\","
                 "response_flags=\"-\",connection_security_policy=\"unknown\"} 1\n") !=
        std::string::npos);
}

TEST_CASE("trace context: W3C, B3 single and multi, sampling decisions") {
  uint64_t n = 0;
  auto rnd = [&n] { return ++n * 0x9E3779B97F4A7C15ULL; };
  auto headers = [](std::map<std::string, std::string> h) {
    return [h](std::string_view name) -> std::optional<std::string_view> {
      auto it = h.find(std::string(name));
      if (it == h.end()) {
        return std::nullopt;
      }
      return std::string_view(it->second);
    };
  };
  auto w3c = StartSpan(
      headers({{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}), 100,
      rnd);
  CHECK(TraceIdHex(w3c) == "4bf92f3577b34da6a3ce929d0e0e4736");
  CHECK(SpanIdHex(w3c.parent_id) == "00f067aa0ba902b7");
  CHECK_FALSE(w3c.sampled);  // the caller decided: not sampled, even at 100%
  auto bad = StartSpan(headers({{"traceparent", "00-zz-00f067aa0ba902b7-01"}}), 0, rnd);
  CHECK(bad.parent_id == 0);  // malformed: a new root trace
  CHECK(bad.trace_hi != 0);   // 128-bit
  auto single =
      StartSpan(headers({{"b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}}), 0, rnd);
  CHECK(single.sampled);
  CHECK(SpanIdHex(single.parent_id) == "e457b5a2e4d86bd1");
  auto multi = StartSpan(headers({{"x-b3-traceid", "a2fb4a1d1a96d312"},
                                  {"x-b3-spanid", "0020000000000001"},
                                  {"x-b3-flags", "1"}}),
                         0, rnd);
  CHECK(TraceIdHex(multi) == "a2fb4a1d1a96d312");
  CHECK(multi.sampled);
  CHECK(multi.debug);
  std::string head;
  AppendPropagationHeaders(multi, &head);
  CHECK(head.find("x-b3-traceid: a2fb4a1d1a96d312\r\n") != std::string::npos);
  CHECK(head.find("x-b3-parentspanid: 0020000000000001\r\n") != std::string::npos);
  CHECK(head.find("traceparent: 00-0000000000000000a2fb4a1d1a96d312-") != std::string::npos);
  CHECK(head.find("x-b3-flags: 1\r\n") != std::string::npos);
}

TEST_CASE("access log: Envoy's default text format") {
  AccessLogEntry e;
  e.start = std::chrono::system_clock::time_point(std::chrono::milliseconds(1460751420310));
  e.method = "POST";
  e.path = "/api/v1/locations";
  e.response_code = 204;
  e.bytes_received = 154;
  e.duration_ms = 226;
  e.upstream_service_time_ms = 100;
  e.x_forwarded_for = "10.0.35.28";
  e.user_agent = "nsq2http";
  e.request_id = "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2";
  e.authority = "locations";
  e.upstream_host = "10.0.2.1:80";
  std::string line;
  AppendTextLine(e, &line);
  CHECK(line ==
        "[2016-04-15T20:17:00.310Z] \"POST /api/v1/locations HTTP/1.1\" 204 - 154 0 226 100 "
        "\"10.0.35.28\" \"nsq2http\" \"cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2\" \"locations\" "
        "\"10.0.2.1:80\"\n");
}

TEST_CASE("worker metrics: TCP connections and bytes per destination and response flags") {
  WorkerMetrics a(SourceLabels({"istio-ingressgateway", "istio-system", "", ""}));
  WorkerMetrics b(SourceLabels({"istio-ingressgateway", "istio-system", "", ""}));
  std::string dest = DestinationLabels(nullptr, nullptr);
  TcpSeries* s = a.Tcp(dest, "-");
  CHECK(a.Tcp(dest, "") == s);  // no flags is "-"
  s->opened += 2;
  s->closed += 1;
  s->received_bytes += 100;
  s->sent_bytes += 1000;
  TcpSeries* other = b.Tcp(dest, "-");
  other->opened += 1;
  other->sent_bytes += 5;
  b.Tcp(dest, "UF")->opened += 1;
  std::string out;
  RenderIstioMetrics({&a, &b}, &out);
  const std::string tail =
      "request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"unknown\"}";
  CHECK(out.find("# TYPE istio_tcp_connections_opened_total counter\n") != std::string::npos);
  auto value = [&](const std::string& name, const std::string& flags_tail) {
    size_t at = out.find(name + "{");
    while (at != std::string::npos) {
      size_t end = out.find('\n', at);
      std::string line = out.substr(at, end - at);
      if (line.find(flags_tail) != std::string::npos) {
        return line.substr(line.rfind(' ') + 1);
      }
      at = out.find(name + "{", end);
    }
    return std::string("none");
  };
  CHECK(value("istio_tcp_connections_opened_total", tail) == "3");
  CHECK(value("istio_tcp_connections_closed_total", tail) == "1");
  CHECK(value("istio_tcp_received_bytes_total", tail) == "100");
  CHECK(value("istio_tcp_sent_bytes_total", tail) == "1005");
  CHECK(value("istio_tcp_connections_opened_total", "response_flags=\"UF\"") == "1");
  CHECK(out.find("reporter=\"source\",source_workload=\"istio-ingressgateway\"") !=
        std::string::npos);
}

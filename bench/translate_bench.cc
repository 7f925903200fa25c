// Translates N generated VirtualServices (each with a DestinationRule, a Service, an
// EndpointSlice and two Pods) for one gateway and prints wall time and peak RSS.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "operator/api/decode.h"
#include "operator/translate/translate.h"

namespace {

std::string Manifests(int i) {
  std::string n = "svc" + std::to_string(i);
  std::string ip1 = "10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) + ".1";
  std::string ip2 = "10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) + ".2";
  return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + n +
         ", namespace: bench}\nspec:\n  hosts: [" + n +
         ".example.com]\n  gateways: [ingress/gw]\n"
         "  http:\n  - match: [{uri: {prefix: /v2}}, {headers: {x-canary: {exact: \"1\"}}}]\n"
         "    route: [{destination: {host: " +
         n +
         ", subset: v2}}]\n"
         "  - route:\n    - {destination: {host: " +
         n +
         ", subset: v1}, weight: 90}\n"
         "    - {destination: {host: " +
         n +
         ", subset: v2}, weight: 10}\n"
         "    retries: {attempts: 3, retryOn: 5xx, perTryTimeout: 2s}\n    timeout: 10s\n"
         "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: " +
         n + ", namespace: bench}\nspec:\n  host: " + n +
         "\n  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n"
         "---\napiVersion: v1\nkind: Service\nmetadata: {name: " +
         n +
         ", namespace: bench}\nspec: {ports: [{name: http, port: 80, targetPort: 8080}]}\n"
         "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: " +
         n + "-a, namespace: bench, labels: {kubernetes.io/service-name: " + n +
         "}}\n"
         "addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n"
         "- {addresses: [" +
         ip1 + "], targetRef: {kind: Pod, name: " + n +
         "-v1}}\n"
         "- {addresses: [" +
         ip2 + "], targetRef: {kind: Pod, name: " + n +
         "-v2}}\n"
         "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " +
         n + "-v1, namespace: bench, labels: {app: " + n +
         ", version: v1}}\n"
         "status: {podIP: " +
         ip1 +
         "}\n"
         "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " +
         n + "-v2, namespace: bench, labels: {app: " + n +
         ", version: v2}}\n"
         "status: {podIP: " +
         ip2 + "}\n---\n";
}

double CurrentRssMb() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f != nullptr) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) {
      resident = 0;
    }
    std::fclose(f);
  }
  return static_cast<double>(resident) * 4096.0 / (1024.0 * 1024.0);
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 1000;
  if (n <= 0) {
    std::fprintf(stderr, "usage: bench_translate N (N > 0)\n");
    return 2;
  }
  std::string text =
      "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
      "ingress}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n"
      "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n";
  for (int i = 0; i < n; ++i) {
    text += Manifests(i);
  }
  auto t0 = std::chrono::steady_clock::now();
  auto decoded = skiff::api::DecodeDocuments(text, "bench");
  text.clear();
  text.shrink_to_fit();
  double rss_inputs = CurrentRssMb();  // the decoded objects the store would hold
  auto t1 = std::chrono::steady_clock::now();
  size_t objects = decoded.objects.size();
  skiff::translate::Translator translator(std::move(decoded.objects));
  auto t_index = std::chrono::steady_clock::now();
  skiff::translate::ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  auto snapshot = translator.Build(group);
  auto t2 = std::chrono::steady_clock::now();
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  size_t routes = 0;
  for (const auto& rt : snapshot.route_tables()) {
    for (const auto& vh : rt.virtual_hosts()) {
      routes += static_cast<size_t>(vh.routes_size());
    }
  }
  std::printf(
      "virtualservices=%d objects=%zu decode_ms=%.1f translate_ms=%.1f (index+status %.1f, "
      "snapshot %.1f) rss_inputs_mb=%.1f rss_after_mb=%.1f peak_rss_mb=%.1f "
      "vhosts=%d routes=%zu clusters=%d statuses=%zu\n",
      n, objects, Ms(t1 - t0), Ms(t2 - t1), Ms(t_index - t1), Ms(t2 - t_index), rss_inputs,
      CurrentRssMb(), ru.ru_maxrss / 1024.0,
      snapshot.route_tables_size() ? snapshot.route_tables(0).virtual_hosts_size() : 0, routes,
      snapshot.clusters_size(), translator.Statuses().size());
  return 0;
}

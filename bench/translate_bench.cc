// Translates N generated VirtualServices (each with a DestinationRule, a Service, an
// EndpointSlice and two Pods) for one gateway and prints time and memory.
//
//   bench_translate [--yaml] [--no-arena] [--release] [N]
//
// The manifests are JSON documents, as the Kubernetes API serves them (--yaml: the same
// objects as YAML, as in a config directory). Times: decode_ms (text -> objects) and
// translate_ms (Translator: index + statuses, then Build of the gateway's snapshot, on a
// protobuf arena with SnapshotArenaOptions() unless --no-arena), wall clock, plus
// translate_cpu_ms (this thread's CPU time: steadier on a busy machine) and
// translate_page_faults (minor faults while translating: first touches of memory new to the
// process). Memory, in MB:
//   rss_after_decode  RSS once decoded, the text freed: the objects plus the free memory
//                     the allocator keeps from decoding, which translation reuses.
//                     --release returns that to the system first (tcmalloc's
//                     ReleaseFreeMemory, or malloc_trim without tcmalloc), and this is
//                     measured after it: the objects alone, as a store holds them.
//   inputs_live       heap bytes in use once decoded (tcmalloc's count; -1 without it)
//   peak_decode       peak RSS while generating and decoding the text
//   peak_translate    peak RSS while translating (the peak is reset after decoding, via
//                     /proc/self/clear_refs; -1 if that is not possible)
//   peak_rss          peak RSS of the whole run (what `time -v` reports)
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "operator/api/decode.h"
#include "operator/translate/translate.h"

// gperftools' C API, when tcmalloc is linked (it is not in sanitizer builds).
extern "C" void MallocExtension_ReleaseFreeMemory() __attribute__((weak));
extern "C" int MallocExtension_GetNumericProperty(const char* property, size_t* value)
    __attribute__((weak));

namespace {

void AppendYaml(int i, std::string* out) {
  std::string n = "svc" + std::to_string(i);
  std::string ip1 = "10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) + ".1";
  std::string ip2 = "10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) + ".2";
  *out += "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + n +
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

// The same objects as AppendYaml, as one compact JSON document each.
void AppendJson(int i, std::string* out) {
  std::string n = "svc" + std::to_string(i);
  std::string ip1 = "10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) + ".1";
  std::string ip2 = "10." + std::to_string(i / 250 % 250) + "." + std::to_string(i % 250) + ".2";
  *out +=
      R"({"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":")" + n +
      R"(","namespace":"bench"},"spec":{"hosts":[")" + n +
      R"(.example.com"],"gateways":["ingress/gw"],"http":[{"match":[{"uri":{"prefix":"/v2"}},)"
      R"({"headers":{"x-canary":{"exact":"1"}}}],"route":[{"destination":{"host":")" +
      n + R"(","subset":"v2"}}]},{"route":[{"destination":{"host":")" + n +
      R"(","subset":"v1"},"weight":90},{"destination":{"host":")" + n +
      R"(","subset":"v2"},"weight":10}],)"
      R"("retries":{"attempts":3,"retryOn":"5xx","perTryTimeout":"2s"},"timeout":"10s"}]}})"
      "\n---\n"
      R"({"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":")" +
      n + R"(","namespace":"bench"},"spec":{"host":")" + n +
      R"(","subsets":[{"name":"v1","labels":{"version":"v1"}},)"
      R"({"name":"v2","labels":{"version":"v2"}}]}})"
      "\n---\n"
      R"({"apiVersion":"v1","kind":"Service","metadata":{"name":")" +
      n +
      R"(","namespace":"bench"},"spec":{"ports":[{"name":"http","port":80,"targetPort":8080}]}})"
      "\n---\n"
      R"({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":")" +
      n + R"(-a","namespace":"bench","labels":{"kubernetes.io/service-name":")" + n +
      R"("}},"addressType":"IPv4","ports":[{"name":"http","port":8080}],"endpoints":[)"
      R"({"addresses":[")" +
      ip1 + R"("],"targetRef":{"kind":"Pod","name":")" + n + R"(-v1"}},{"addresses":[")" + ip2 +
      R"("],"targetRef":{"kind":"Pod","name":")" + n +
      R"(-v2"}}]})"
      "\n---\n"
      R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":")" +
      n + R"(-v1","namespace":"bench","labels":{"app":")" + n +
      R"(","version":"v1"}},"status":{"podIP":")" + ip1 +
      R"("}})"
      "\n---\n"
      R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":")" +
      n + R"(-v2","namespace":"bench","labels":{"app":")" + n +
      R"(","version":"v2"}},"status":{"podIP":")" + ip2 +
      R"("}})"
      "\n---\n";
}

std::string Manifests(int n, bool yaml) {
  std::string gateway =
      yaml ? "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: "
             "ingress}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n"
             "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n---\n"
           : R"({"apiVersion":"networking.istio.io/v1","kind":"Gateway","metadata":{"name":"gw",)"
             R"("namespace":"ingress"},"spec":{"selector":{"istio":"ingressgateway"},"servers":)"
             R"([{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}})"
             "\n---\n";
  auto append = yaml ? AppendYaml : AppendJson;
  std::string sample;
  append(n - 1, &sample);  // the longest
  std::string text;
  text.reserve(gateway.size() + sample.size() * static_cast<size_t>(n));
  text += gateway;
  for (int i = 0; i < n; ++i) {
    append(i, &text);
  }
  return text;
}

// Current and peak resident set size from /proc/self/status, in MB.
double StatusMb(const char* field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) {
    return -1;
  }
  char line[256];
  double mb = -1;
  size_t len = std::strlen(field);
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, field, len) == 0 && line[len] == ':') {
      mb = std::strtod(line + len + 1, nullptr) / 1024.0;  // "VmRSS:  1234 kB"
      break;
    }
  }
  std::fclose(f);
  return mb;
}
double RssMb() { return StatusMb("VmRSS"); }
double PeakRssMb() { return StatusMb("VmHWM"); }

// Gives the memory the allocator holds free back to the system.
void ReleaseFreeMemory() {
  if (MallocExtension_ReleaseFreeMemory != nullptr) {
    MallocExtension_ReleaseFreeMemory();
  } else {
    malloc_trim(0);
  }
}

// Heap bytes in use, or -1 when the allocator does not say.
double LiveHeapMb() {
  size_t bytes = 0;
  if (MallocExtension_GetNumericProperty == nullptr ||
      MallocExtension_GetNumericProperty("generic.current_allocated_bytes", &bytes) == 0) {
    return -1;
  }
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

// Resets the peak RSS to the current RSS (Linux >= 4.0).
bool ResetPeakRss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (f == nullptr) {
    return false;
  }
  bool ok = std::fputs("5", f) >= 0;
  ok = std::fclose(f) == 0 && ok;
  return ok;
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

long MinorFaults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 1000;
  bool yaml = false;
  bool arena = true;
  bool release = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--yaml") {
      yaml = true;
    } else if (arg == "--no-arena") {
      arena = false;
    } else if (arg == "--release") {
      release = true;
    } else if (!arg.empty() && arg[0] != '-') {
      n = std::atoi(arg.c_str());
    } else {
      n = 0;
    }
  }
  if (n <= 0) {
    std::fprintf(stderr, "usage: bench_translate [--yaml] [--no-arena] [--release] [N] (N > 0)\n");
    return 2;
  }
  std::string text = Manifests(n, yaml);
  size_t text_mb = text.size() >> 20;

  auto t0 = std::chrono::steady_clock::now();
  auto decoded = skiff::api::DecodeDocuments(text, "bench");
  auto t1 = std::chrono::steady_clock::now();
  text.clear();
  text.shrink_to_fit();
  if (release) {
    ReleaseFreeMemory();
  }
  double rss_after_decode = RssMb();
  double inputs_live = LiveHeapMb();
  double peak_decode = PeakRssMb();
  bool reset = ResetPeakRss();

  auto t2 = std::chrono::steady_clock::now();
  double cpu0 = ThreadCpuMs();
  long faults0 = MinorFaults();
  size_t objects = decoded.objects.size();
  skiff::translate::Translator translator(std::move(decoded.objects));
  auto t_index = std::chrono::steady_clock::now();
  skiff::translate::ProxyGroup group;
  group.labels = {{"istio", "ingressgateway"}};
  google::protobuf::Arena snapshot_arena(skiff::translate::SnapshotArenaOptions());
  skiff::v1::Snapshot heap_snapshot;
  skiff::v1::Snapshot* snapshot =
      arena ? google::protobuf::Arena::CreateMessage<skiff::v1::Snapshot>(&snapshot_arena)
            : &heap_snapshot;
  translator.Build(group, snapshot);
  double cpu1 = ThreadCpuMs();
  long faults = MinorFaults() - faults0;
  auto t3 = std::chrono::steady_clock::now();
  double peak_translate = reset ? PeakRssMb() : -1;
  double peak = reset ? std::max(peak_decode, peak_translate) : PeakRssMb();

  size_t routes = 0;
  for (const auto& rt : snapshot->route_tables()) {
    for (const auto& vh : rt.virtual_hosts()) {
      routes += static_cast<size_t>(vh.routes_size());
    }
  }
  std::printf(
      "virtualservices=%d input=%s(%zuMB) objects=%zu snapshot=%s%s decode_ms=%.1f "
      "translate_ms=%.1f (index+status %.1f, snapshot %.1f) translate_cpu_ms=%.1f "
      "translate_page_faults=%ld "
      "rss_after_decode_mb=%.1f inputs_live_mb=%.1f peak_decode_mb=%.1f peak_translate_mb=%.1f "
      "peak_rss_mb=%.1f vhosts=%d routes=%zu clusters=%d statuses=%zu\n",
      n, yaml ? "yaml" : "json", text_mb, objects, arena ? "arena" : "heap",
      release ? " released" : "", Ms(t1 - t0), Ms(t3 - t2), Ms(t_index - t2), Ms(t3 - t_index),
      cpu1 - cpu0, faults, rss_after_decode, inputs_live, peak_decode, peak_translate, peak,
      snapshot->route_tables_size() ? snapshot->route_tables(0).virtual_hosts_size() : 0, routes,
      snapshot->clusters_size(), translator.Statuses().size());
  return 0;
}

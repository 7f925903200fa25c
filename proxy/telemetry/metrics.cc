#include "proxy/telemetry/metrics.h"

#include <charconv>
#include <cstdio>

namespace skiff::telemetry {

namespace {

// Prometheus label values escape backslash, double quote and newline.
void AppendLabel(std::string* out, std::string_view name, std::string_view value) {
  if (!out->empty()) {
    out->push_back(',');
  }
  out->append(name);
  out->append("=\"");
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out->push_back('\\');
      out->push_back(c);
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

std::string_view LabelOf(const v1::Endpoint& ep, std::string_view name) {
  for (const auto& l : ep.labels()) {
    if (l.name() == name) {
      return l.value();
    }
  }
  return {};
}

bool HashLike(std::string_view s, size_t min, size_t max) {
  if (s.size() < min || s.size() > max) {
    return false;
  }
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
      return false;
    }
  }
  return true;
}

std::string FormatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

std::string WorkloadOfPod(std::string_view pod) {
  // Deployment pods: <deployment>-<replicaset hash>-<5 chars>; StatefulSet/other: as is.
  size_t last = pod.rfind('-');
  if (last == std::string_view::npos || !HashLike(pod.substr(last + 1), 5, 5)) {
    return std::string(pod);
  }
  std::string_view rest = pod.substr(0, last);
  size_t prev = rest.rfind('-');
  if (prev != std::string_view::npos && HashLike(rest.substr(prev + 1), 6, 10)) {
    return std::string(rest.substr(0, prev));
  }
  return std::string(rest);  // a DaemonSet-style pod: <name>-<5 chars>
}

std::string SourceLabels(const SourceInfo& s) {
  std::string out;
  AppendLabel(&out, "reporter", "source");
  AppendLabel(&out, "source_workload", s.workload.empty() ? "unknown" : s.workload);
  AppendLabel(&out, "source_workload_namespace", s.namespace_.empty() ? "unknown" : s.namespace_);
  AppendLabel(&out, "source_principal", "unknown");
  AppendLabel(&out, "source_app", s.app.empty() ? "unknown" : s.app);
  AppendLabel(&out, "source_version", s.version.empty() ? "unknown" : s.version);
  AppendLabel(&out, "source_canonical_service",
              !s.app.empty() ? s.app : (s.workload.empty() ? "unknown" : s.workload));
  AppendLabel(&out, "source_canonical_revision", s.version.empty() ? "latest" : s.version);
  AppendLabel(&out, "source_cluster", "Kubernetes");
  return out;
}

std::string InboundSourceLabels() {
  std::string out;
  AppendLabel(&out, "reporter", "destination");
  AppendLabel(&out, "source_workload", "unknown");
  AppendLabel(&out, "source_workload_namespace", "unknown");
  AppendLabel(&out, "source_principal", "unknown");
  AppendLabel(&out, "source_app", "unknown");
  AppendLabel(&out, "source_version", "unknown");
  AppendLabel(&out, "source_canonical_service", "unknown");
  AppendLabel(&out, "source_canonical_revision", "latest");
  AppendLabel(&out, "source_cluster", "Kubernetes");
  return out;
}

v1::Endpoint SelfEndpoint(const SourceInfo& self, const std::string& pod_name) {
  v1::Endpoint ep;
  std::string pod = pod_name.empty() ? self.workload : pod_name;
  if (!self.namespace_.empty()) {
    pod = self.namespace_ + "/" + pod;
  }
  ep.set_pod(pod);
  if (!self.app.empty()) {
    auto* l = ep.add_labels();
    l->set_name("app");
    l->set_value(self.app);
  }
  if (!self.version.empty()) {
    auto* l = ep.add_labels();
    l->set_name("version");
    l->set_value(self.version);
  }
  return ep;
}

std::string DestinationLabels(const v1::Cluster* cluster, const v1::Endpoint* ep) {
  std::string out;
  std::string workload = "unknown";
  std::string workload_ns = "unknown";
  std::string_view app;
  std::string_view version;
  std::string_view canonical;
  std::string_view revision;
  if (ep != nullptr) {
    std::string_view pod = ep->pod();
    if (size_t slash = pod.find('/'); slash != std::string_view::npos) {
      workload_ns = std::string(pod.substr(0, slash));
      workload = WorkloadOfPod(pod.substr(slash + 1));
    } else if (!pod.empty()) {
      workload = WorkloadOfPod(pod);
    }
    app = LabelOf(*ep, "app");
    version = LabelOf(*ep, "version");
    canonical = LabelOf(*ep, "service.istio.io/canonical-name");
    revision = LabelOf(*ep, "service.istio.io/canonical-revision");
  }
  if (workload_ns == "unknown" && cluster != nullptr && ep != nullptr &&
      !cluster->service_namespace().empty()) {
    workload_ns = cluster->service_namespace();
  }
  AppendLabel(&out, "destination_workload", workload);
  AppendLabel(&out, "destination_workload_namespace", workload_ns);
  AppendLabel(&out, "destination_principal", "unknown");
  AppendLabel(&out, "destination_app", app.empty() ? "unknown" : app);
  AppendLabel(&out, "destination_version", version.empty() ? "unknown" : version);
  AppendLabel(&out, "destination_canonical_service",
              !canonical.empty() ? canonical : (!app.empty() ? app : std::string_view(workload)));
  AppendLabel(&out, "destination_canonical_revision",
              !revision.empty() ? revision : (!version.empty() ? version : "latest"));
  bool known = cluster != nullptr && !cluster->service().empty();
  AppendLabel(&out, "destination_service", known ? cluster->service() : "unknown");
  AppendLabel(&out, "destination_service_name",
              known && !cluster->service_name().empty() ? cluster->service_name() : "unknown");
  AppendLabel(
      &out, "destination_service_namespace",
      known && !cluster->service_namespace().empty() ? cluster->service_namespace() : "unknown");
  AppendLabel(&out, "destination_cluster", "Kubernetes");
  return out;
}

void WorkerMetrics::Record(std::string_view destination, int response_code,
                           std::string_view response_flags, double duration_ms,
                           uint64_t request_bytes, uint64_t response_bytes, bool inbound, bool grpc,
                           int grpc_status) {
  char code[16];
  auto [code_end, ec] = std::to_chars(code, code + sizeof code, response_code);
  (void)ec;
  const int code_len = static_cast<int>(code_end - code);
  char gcode[16];
  size_t gcode_len = 0;
  if (grpc && grpc_status >= 0) {
    auto g = std::to_chars(gcode, gcode + sizeof gcode, grpc_status);
    gcode_len = static_cast<size_t>(g.ptr - gcode);
  }
  key_.clear();
  key_.push_back(inbound ? 'i' : 'o');
  key_.push_back(grpc ? 'g' : 'h');
  key_.append(gcode, gcode_len);
  key_.push_back('\n');
  key_.append(destination);
  key_.push_back('\n');
  key_.append(code, static_cast<size_t>(code_len));
  key_.push_back('\n');
  key_.append(response_flags.empty() ? std::string_view("-") : response_flags);
  Series* s = nullptr;
  if (auto it = index_.find(key_); it != index_.end()) {
    s = it->second;
  } else {
    auto series = std::make_unique<Series>();
    std::string labels = inbound ? inbound_source_ : source_;
    labels.push_back(',');
    labels.append(destination);
    std::string tail;
    AppendLabel(&tail, "request_protocol", grpc ? "grpc" : "http");
    AppendLabel(&tail, "response_code", std::string_view(code, static_cast<size_t>(code_len)));
    AppendLabel(&tail, "grpc_response_status", std::string_view(gcode, gcode_len));
    AppendLabel(&tail, "response_flags", response_flags.empty() ? "-" : response_flags);
    AppendLabel(&tail, "connection_security_policy", "unknown");
    labels.push_back(',');
    labels.append(tail);
    series->labels = std::move(labels);
    s = series.get();
    {
      std::lock_guard<std::mutex> lock(mu_);
      series_.push_back(std::move(series));
    }
    index_.emplace(key_, s);
  }
  s->requests.fetch_add(1, std::memory_order_relaxed);
  s->duration.Observe(kDurationBuckets, duration_ms);
  s->request_bytes.Observe(kByteBuckets, static_cast<double>(request_bytes));
  s->response_bytes.Observe(kByteBuckets, static_cast<double>(response_bytes));
}

const std::string& UnknownDestinationLabels() {
  static const std::string* text = new std::string(DestinationLabels(nullptr, nullptr));
  return *text;
}

TcpSeries* WorkerMetrics::Tcp(std::string_view destination, std::string_view response_flags,
                              bool inbound) {
  if (response_flags.empty()) {
    response_flags = "-";
  }
  key_.clear();
  key_.push_back(inbound ? 'i' : 'o');
  key_.append(destination);
  key_.push_back('\n');
  key_.append(response_flags);
  if (auto it = tcp_index_.find(key_); it != tcp_index_.end()) {
    return it->second;
  }
  auto series = std::make_unique<TcpSeries>();
  std::string labels = inbound ? inbound_source_ : source_;
  labels.push_back(',');
  labels.append(destination);
  std::string tail;
  AppendLabel(&tail, "request_protocol", "tcp");
  AppendLabel(&tail, "response_flags", response_flags);
  AppendLabel(&tail, "connection_security_policy", "unknown");
  labels.push_back(',');
  labels.append(tail);
  series->labels = std::move(labels);
  TcpSeries* s = series.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    tcp_series_.push_back(std::move(series));
  }
  tcp_index_.emplace(key_, s);
  return s;
}

void WorkerMetrics::CollectTcp(std::vector<const TcpSeries*>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& s : tcp_series_) {
    out->push_back(s.get());
  }
}

void WorkerMetrics::Collect(std::vector<const Series*>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& s : series_) {
    out->push_back(s.get());
  }
}

namespace {

template <size_t N>
struct HistogramTotals {
  std::array<uint64_t, N> buckets{};
  uint64_t overflow = 0;
  uint64_t count = 0;
  uint64_t sum_milli = 0;
  void Add(const Histogram<N>& h) {
    for (size_t i = 0; i < N; ++i) {
      buckets[i] += h.buckets[i].load(std::memory_order_relaxed);
    }
    overflow += h.overflow.load(std::memory_order_relaxed);
    count += h.count.load(std::memory_order_relaxed);
    sum_milli += h.sum_milli.load(std::memory_order_relaxed);
  }
};

struct Totals {
  uint64_t requests = 0;
  HistogramTotals<kDurationBuckets.size()> duration;
  HistogramTotals<kByteBuckets.size()> request_bytes;
  HistogramTotals<kByteBuckets.size()> response_bytes;
};

template <size_t N>
void RenderHistogram(std::string* out, std::string_view name, const std::string& labels,
                     const std::array<double, N>& bounds, const HistogramTotals<N>& h) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < N; ++i) {
    cumulative += h.buckets[i];
    out->append(name);
    out->append("_bucket{");
    out->append(labels);
    out->append(",le=\"");
    out->append(FormatDouble(bounds[i]));
    out->append("\"} ");
    out->append(std::to_string(cumulative));
    out->push_back('\n');
  }
  // Counts may be read mid-update: +Inf is at least the sum of the buckets.
  uint64_t total = std::max(h.count, cumulative + h.overflow);
  out->append(name);
  out->append("_bucket{");
  out->append(labels);
  out->append(",le=\"+Inf\"} ");
  out->append(std::to_string(total));
  out->push_back('\n');
  out->append(name);
  out->append("_sum{");
  out->append(labels);
  out->append("} ");
  out->append(FormatDouble(static_cast<double>(h.sum_milli) / 1000.0));
  out->push_back('\n');
  out->append(name);
  out->append("_count{");
  out->append(labels);
  out->append("} ");
  out->append(std::to_string(total));
  out->push_back('\n');
}

}  // namespace

void RenderIstioMetrics(const std::vector<const WorkerMetrics*>& workers, std::string* out) {
  std::vector<const Series*> all;
  for (const auto* w : workers) {
    w->Collect(&all);
  }
  std::map<std::string_view, Totals> totals;
  for (const Series* s : all) {
    Totals& t = totals[s->labels];
    t.requests += s->requests.load(std::memory_order_relaxed);
    t.duration.Add(s->duration);
    t.request_bytes.Add(s->request_bytes);
    t.response_bytes.Add(s->response_bytes);
  }
  out->append("# TYPE istio_requests_total counter\n");
  for (const auto& [labels, t] : totals) {
    out->append("istio_requests_total{");
    out->append(labels);
    out->append("} ");
    out->append(std::to_string(t.requests));
    out->push_back('\n');
  }
  auto render = [&](const char* name, auto member, const auto& bounds) {
    out->append("# TYPE ");
    out->append(name);
    out->append(" histogram\n");
    for (const auto& [labels, t] : totals) {
      RenderHistogram(out, name, std::string(labels), bounds, t.*member);
    }
  };
  render("istio_request_duration_milliseconds", &Totals::duration, kDurationBuckets);
  render("istio_request_bytes", &Totals::request_bytes, kByteBuckets);
  render("istio_response_bytes", &Totals::response_bytes, kByteBuckets);

  std::vector<const TcpSeries*> tcp;
  for (const auto* w : workers) {
    w->CollectTcp(&tcp);
  }
  struct TcpTotals {
    uint64_t opened = 0, closed = 0, received = 0, sent = 0;
  };
  std::map<std::string_view, TcpTotals> tcp_totals;
  for (const TcpSeries* s : tcp) {
    TcpTotals& t = tcp_totals[s->labels];
    t.opened += s->opened.load(std::memory_order_relaxed);
    t.closed += s->closed.load(std::memory_order_relaxed);
    t.received += s->received_bytes.load(std::memory_order_relaxed);
    t.sent += s->sent_bytes.load(std::memory_order_relaxed);
  }
  auto counter = [&](const char* name, uint64_t TcpTotals::*member) {
    out->append("# TYPE ");
    out->append(name);
    out->append(" counter\n");
    for (const auto& [labels, t] : tcp_totals) {
      out->append(name);
      out->push_back('{');
      out->append(labels);
      out->append("} ");
      out->append(std::to_string(t.*member));
      out->push_back('\n');
    }
  };
  if (!tcp_totals.empty()) {
    counter("istio_tcp_connections_opened_total", &TcpTotals::opened);
    counter("istio_tcp_connections_closed_total", &TcpTotals::closed);
    counter("istio_tcp_received_bytes_total", &TcpTotals::received);
    counter("istio_tcp_sent_bytes_total", &TcpTotals::sent);
  }
}

}  // namespace skiff::telemetry

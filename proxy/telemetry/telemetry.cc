#include "proxy/telemetry/telemetry.h"

namespace skiff::telemetry {

void WorkerTelemetry::Flush() {
  if (log_items > 0) {
    owner->log_offload()->Submit(&log_batch, log_items);
    log_items = 0;
  }
  if (span_items > 0) {
    owner->span_offload()->Submit(&span_batch, span_items);
    span_items = 0;
  }
}

std::unique_ptr<Telemetry> Telemetry::Create(TelemetryOptions options, std::string* error) {
  std::unique_ptr<Telemetry> t(new Telemetry());
  t->options_ = std::move(options);
  t->source_labels_ = SourceLabels(t->options_.source);
  const auto& s = t->options_.source;
  std::string service = !s.app.empty() ? s.app : (s.workload.empty() ? "unknown" : s.workload);
  t->span_service_ = service + "." + (s.namespace_.empty() ? "default" : s.namespace_);
  if (!t->options_.access_log.empty()) {
    auto sink = FileSink(t->options_.access_log, error);
    if (!sink) {
      return nullptr;
    }
    t->log_ = std::make_unique<Offload>("access-log", 64u << 20, std::chrono::milliseconds(200),
                                        std::move(sink));
  }
  if (!t->options_.zipkin_address.empty()) {
    t->spans_ = std::make_unique<Offload>("zipkin", 16u << 20, std::chrono::milliseconds(1000),
                                          ZipkinSink(t->options_.zipkin_address));
  }
  return t;
}

Telemetry::~Telemetry() { Stop(); }

void Telemetry::Stop() {
  if (log_) {
    log_->Stop();
  }
  if (spans_) {
    spans_->Stop();
  }
}

WorkerTelemetry* Telemetry::NewWorker() {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.push_back(std::make_unique<WorkerTelemetry>(this, source_labels_));
  return workers_.back().get();
}

void Telemetry::RenderMetrics(std::string* out) const {
  std::vector<const WorkerMetrics*> metrics;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& w : workers_) {
      metrics.push_back(&w->metrics);
    }
  }
  RenderIstioMetrics(metrics, out);
}

void Telemetry::AppendStats(std::vector<std::pair<std::string, uint64_t>>* out) const {
  if (log_) {
    out->emplace_back("access_log_written", log_->delivered());
    out->emplace_back("access_log_dropped", log_->dropped());
    out->emplace_back("access_log_write_failed", log_->failed());
  }
  if (spans_) {
    out->emplace_back("tracing_spans_sent", spans_->delivered());
    out->emplace_back("tracing_spans_dropped", spans_->dropped());
    out->emplace_back("tracing_spans_failed", spans_->failed());
  }
}

}  // namespace skiff::telemetry

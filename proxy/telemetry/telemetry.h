#pragma once
// The proxy's telemetry as a whole: Istio metrics per worker, the access log and span
// reporting through background threads. Workers get a WorkerTelemetry each and flush its
// batches once per loop turn.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proxy/telemetry/access_log.h"
#include "proxy/telemetry/metrics.h"
#include "proxy/telemetry/offload.h"
#include "proxy/telemetry/tracing.h"

namespace skiff::telemetry {

struct TelemetryOptions {
  bool metrics = true;
  std::string access_log;  // path or "stdout"; empty = off
  bool access_log_json = false;
  std::string zipkin_address;   // host:port; empty = tracing off
  double trace_sampling = 1.0;  // percent, as Istio's default
  SourceInfo source;
  std::string node_id;
};

class Telemetry;

struct WorkerTelemetry {
  explicit WorkerTelemetry(Telemetry* t, std::string source_labels)
      : owner(t), metrics(std::move(source_labels)) {}
  Telemetry* owner;
  WorkerMetrics metrics;
  std::string log_batch;
  uint64_t log_items = 0;
  std::string span_batch;  // comma-separated span objects
  uint64_t span_items = 0;
  // On the worker thread: hands the batches to the background threads.
  void Flush();
};

class Telemetry {
 public:
  // Opens the access log; on failure returns nullptr with `error` set.
  static std::unique_ptr<Telemetry> Create(TelemetryOptions options, std::string* error);
  ~Telemetry();

  WorkerTelemetry* NewWorker();
  [[nodiscard]] const TelemetryOptions& options() const { return options_; }
  [[nodiscard]] bool metrics() const { return options_.metrics; }
  [[nodiscard]] bool access_log() const { return log_ != nullptr; }
  [[nodiscard]] bool json() const { return options_.access_log_json; }
  [[nodiscard]] bool tracing() const { return spans_ != nullptr; }
  [[nodiscard]] const std::string& span_service_name() const { return span_service_; }

  Offload* log_offload() { return log_.get(); }
  Offload* span_offload() { return spans_.get(); }
  // Prometheus text of Istio's metrics over all workers.
  void RenderMetrics(std::string* out) const;
  // Counters of the background writers, for the proxy's own stats.
  void AppendStats(std::vector<std::pair<std::string, uint64_t>>* out) const;
  void Stop();

 private:
  Telemetry() = default;
  TelemetryOptions options_;
  std::string source_labels_;
  std::string span_service_;
  std::unique_ptr<Offload> log_;
  std::unique_ptr<Offload> spans_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<WorkerTelemetry>> workers_;
};

}  // namespace skiff::telemetry

#pragma once
// A small Kubernetes REST client on cpprestsdk: JSON requests, and watches read as a
// stream of events. Blocking calls, made from the source's own threads.
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "operator/source/kube/config.h"

namespace skiff::kube {

struct Response {
  int status = 0;  // HTTP status; 0 = transport error (see error)
  nlohmann::json body;
  std::string error;  // transport error, or the API's Status message
  [[nodiscard]] bool ok() const { return status >= 200 && status < 300; }
  // "404 Not Found: ..." / "connection refused", for logs and errors.
  [[nodiscard]] std::string Describe() const;
};

class Client {
 public:
  explicit Client(ClusterConfig config);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Response Get(const std::string& path);
  // method: POST, PUT, PATCH (merge patch) or DELETE.
  Response Send(const std::string& method, const std::string& path, const nlohmann::json& body);
  // Runs a watch: `on_event` gets each event object ({"type": ..., "object": ...}) and
  // returns false to stop. Returns when the server ends the stream, on an error, on Cancel()
  // or when on_event says stop. `events` counts the events delivered.
  Response Watch(const std::string& path,
                 const std::function<bool(const nlohmann::json&)>& on_event, int* events);
  // Aborts requests in flight (shutdown).
  void Cancel();

  [[nodiscard]] const ClusterConfig& config() const { return config_; }

 private:
  struct Impl;
  ClusterConfig config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::kube

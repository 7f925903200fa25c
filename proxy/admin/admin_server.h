#pragma once
// The admin HTTP server (default 127.0.0.1:15000) on its own thread: /ready,
// /config_dump, /clusters, /stats and /stats/prometheus. One request per connection.
#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace skiff::proxy {

class AdminServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain";
    std::string body;
  };
  using Handler = std::function<Response(const std::string& path)>;

  AdminServer(std::string address, uint16_t port, Handler handler);
  ~AdminServer();
  // Binds (port 0 picks one); returns false with `error` set.
  bool Start(std::string* error);
  void Stop();
  [[nodiscard]] uint16_t port() const { return port_; }

 private:
  void Serve();
  void HandleConnection(int fd);

  std::string address_;
  uint16_t port_;
  Handler handler_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace skiff::proxy

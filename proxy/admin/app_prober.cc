#include "proxy/admin/app_prober.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace skiff::proxy {

namespace {

using Clock = std::chrono::steady_clock;

bool Printable(const std::string& s) {
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

HttpResponse Answer(int status, const std::string& body) {
  HttpResponse r;
  r.status = status;
  r.body = body + "\n";
  return r;
}

}  // namespace

// One probe in flight.
struct AppProber::Running {
  AppProbe probe;
  HttpReply reply;
  int fd = -1;
  bool connected = false;
  std::string out;
  size_t written = 0;
  std::string in;
  Clock::time_point deadline;
};

AppProber::~AppProber() { Stop(); }

bool AppProber::Configure(const std::string& probers_json, const std::string& app_address,
                          std::string* error) {
  if (!app_address.empty()) {
    address_ = app_address;
  }
  unsigned char buf[16];
  if (::inet_pton(AF_INET, address_.c_str(), buf) != 1 &&
      ::inet_pton(AF_INET6, address_.c_str(), buf) != 1) {
    *error = "the app's address \"" + address_ + "\" is not an IP address";
    return false;
  }
  if (probers_json.empty()) {
    return true;
  }
  auto j = nlohmann::json::parse(probers_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "not a JSON object";
    return false;
  }
  for (const auto& [path, spec] : j.items()) {
    std::string at = "\"" + path + "\"";
    if (path.rfind("/app-health/", 0) != 0 || !Printable(path) || !spec.is_object()) {
      *error = at + ": expected /app-health/<container>/<probe> with an object";
      return false;
    }
    AppProbe p;
    const nlohmann::json* target = nullptr;
    if (spec.contains("httpGet") && spec["httpGet"].is_object()) {
      target = &spec["httpGet"];
      p.kind = AppProbe::Kind::kHttp;
      std::string scheme = target->value("scheme", "HTTP");
      if (scheme != "HTTP") {
        *error = at + ".httpGet.scheme: only HTTP";
        return false;
      }
      p.path = target->value("path", "/");
      if (p.path.empty() || p.path[0] != '/' || !Printable(p.path) ||
          p.path.find(' ') != std::string::npos) {
        *error = at + ".httpGet.path: \"" + p.path + "\" is not a path";
        return false;
      }
      if (target->contains("httpHeaders") && (*target)["httpHeaders"].is_array()) {
        for (const auto& h : (*target)["httpHeaders"]) {
          std::string name = h.value("name", "");
          std::string value = h.value("value", "");
          if (name.empty() || !Printable(name) || name.find(':') != std::string::npos ||
              !Printable(value)) {
            *error = at + ".httpGet.httpHeaders: invalid header \"" + name + "\"";
            return false;
          }
          p.headers.emplace_back(std::move(name), std::move(value));
        }
      }
    } else if (spec.contains("tcpSocket") && spec["tcpSocket"].is_object()) {
      target = &spec["tcpSocket"];
      p.kind = AppProbe::Kind::kTcp;
    } else {
      *error = at + ": expected httpGet or tcpSocket";
      return false;
    }
    if (!target->contains("port") || !(*target)["port"].is_number_integer() ||
        (*target)["port"].get<int64_t>() < 1 || (*target)["port"].get<int64_t>() > 65535) {
      *error = at + ": port must be a number 1-65535";
      return false;
    }
    p.port = static_cast<uint16_t>((*target)["port"].get<int64_t>());
    if (spec.contains("timeoutSeconds") && spec["timeoutSeconds"].is_number_integer()) {
      int64_t t = std::clamp<int64_t>(spec["timeoutSeconds"].get<int64_t>(), 1, 25);
      p.timeout = std::chrono::seconds(t);
    }
    probes_[path] = std::move(p);
  }
  return true;
}

const AppProbe* AppProber::Find(const std::string& path) const {
  auto it = probes_.find(path);
  return it == probes_.end() ? nullptr : &it->second;
}

void AppProber::Start() {
  if (probes_.empty() || thread_.joinable()) {
    return;
  }
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { Run(); });
}

void AppProber::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t r = ::write(wake_fd_, &one, sizeof one);
    (void)r;
    thread_.join();
  }
  if (wake_fd_ >= 0) {
    ::close(wake_fd_);
    wake_fd_ = -1;
  }
}

void AppProber::Probe(const AppProbe& probe, HttpReply reply) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && thread_.joinable() && running_ < kMaxProbes) {
      ++running_;
      queue_.emplace_back(probe, std::move(reply));
      uint64_t one = 1;
      ssize_t r = ::write(wake_fd_, &one, sizeof one);
      (void)r;
      return;
    }
  }
  reply(Answer(503, "too many app probes at once"));
}

void AppProber::Run() {
  std::vector<Running> running;
  auto finish = [this](Running& r, int status, const std::string& body) {
    if (r.fd >= 0) {
      ::close(r.fd);
      r.fd = -1;
    }
    r.reply(Answer(status, body));
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
  };
  auto where = [this](const Running& r) {
    return (address_.find(':') != std::string::npos ? "[" + address_ + "]" : address_) + ":" +
           std::to_string(r.probe.port);
  };
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        break;
      }
      for (auto& [probe, reply] : queue_) {
        Running r;
        r.probe = std::move(probe);
        r.reply = std::move(reply);
        r.deadline = Clock::now() + r.probe.timeout;
        running.push_back(std::move(r));
      }
      queue_.clear();
    }
    // Start the new ones.
    for (auto& r : running) {
      if (r.fd >= 0 || r.connected) {
        continue;
      }
      sockaddr_storage ss{};
      socklen_t len = 0;
      auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
      auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
      if (::inet_pton(AF_INET, address_.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(r.probe.port);
        len = sizeof(sockaddr_in);
      } else {
        ::inet_pton(AF_INET6, address_.c_str(), &v6->sin6_addr);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(r.probe.port);
        len = sizeof(sockaddr_in6);
      }
      r.fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (r.fd >= 0 && ss.ss_family == AF_INET) {
        // From 127.0.0.6, as Istio's agent: the pod's capture rules send the proxy's own
        // connections to its pod's address to the inbound listener, except from there.
        sockaddr_in src{};
        src.sin_family = AF_INET;
        ::inet_pton(AF_INET, "127.0.0.6", &src.sin_addr);
        if (::bind(r.fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
          finish(r, 503, std::string("app probe: cannot bind 127.0.0.6: ") + std::strerror(errno));
          r.connected = true;
          continue;
        }
      }
      if (r.fd < 0 ||
          (::connect(r.fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS)) {
        finish(r, 503, "app probe: cannot connect to " + where(r) + ": " + std::strerror(errno));
        r.connected = true;  // done (fd closed)
      }
    }
    running.erase(
        std::remove_if(running.begin(), running.end(), [](const Running& r) { return r.fd < 0; }),
        running.end());
    std::vector<pollfd> fds{{wake_fd_, POLLIN, 0}};
    auto now = Clock::now();
    int timeout = -1;
    for (auto& r : running) {
      short events = !r.connected || r.written < r.out.size() ? POLLOUT : POLLIN;
      fds.push_back({r.fd, events, 0});
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(r.deadline - now).count();
      int t = static_cast<int>(std::max<int64_t>(0, ms));
      timeout = timeout < 0 ? t : std::min(timeout, t);
    }
    ::poll(fds.data(), fds.size(), timeout);
    if ((fds[0].revents & POLLIN) != 0) {
      uint64_t v;
      ssize_t n = ::read(wake_fd_, &v, sizeof v);
      (void)n;
    }
    now = Clock::now();
    for (size_t i = 0; i < running.size(); ++i) {
      Running& r = running[i];
      short revents = fds[i + 1].revents;
      if (revents == 0) {
        if (now >= r.deadline) {
          finish(r, 503,
                 "app probe: " + where(r) + " did not answer within " +
                     std::to_string(r.probe.timeout.count() / 1000) + "s");
        }
        continue;
      }
      if (!r.connected) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(r.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          finish(r, 503, "app probe: cannot connect to " + where(r) + ": " + std::strerror(err));
          continue;
        }
        r.connected = true;
        if (r.probe.kind == AppProbe::Kind::kTcp) {
          finish(r, 200, "app probe: " + where(r) + " accepts connections");
          continue;
        }
        bool host = std::any_of(r.probe.headers.begin(), r.probe.headers.end(), [](const auto& h) {
          return strcasecmp(h.first.c_str(), "host") == 0;
        });
        r.out = "GET " + r.probe.path + " HTTP/1.1\r\n";
        if (!host) {
          r.out += "Host: " + where(r) + "\r\n";
        }
        r.out += "User-Agent: kube-probe/skiff\r\n";
        for (const auto& [k, v] : r.probe.headers) {
          r.out += k + ": " + v + "\r\n";
        }
        r.out += "Connection: close\r\n\r\n";
      }
      if (r.written < r.out.size()) {
        ssize_t n = ::send(r.fd, r.out.data() + r.written, r.out.size() - r.written, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          finish(r, 503, "app probe: " + where(r) + ": " + std::strerror(errno));
        } else if (n > 0) {
          r.written += static_cast<size_t>(n);
        }
        continue;
      }
      char buf[1024];
      ssize_t n = ::recv(r.fd, buf, sizeof buf, 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      if (n > 0 && r.in.size() < 4096) {
        r.in.append(buf, static_cast<size_t>(n));
      }
      size_t eol = r.in.find("\r\n");
      if (eol == std::string::npos && n > 0 && r.in.size() < 4096) {
        continue;  // the status line is not complete yet
      }
      // "HTTP/1.1 200 OK": the app's status is the answer (kubelet passes 200-399).
      int status = 0;
      if (r.in.rfind("HTTP/1.", 0) == 0 && r.in.size() >= 12 && r.in[8] == ' ') {
        status = std::atoi(r.in.substr(9, 3).c_str());
      }
      if (status >= 200 && status <= 599) {
        finish(r, status,
               "app probe: " + where(r) + r.probe.path + " answered " + std::to_string(status));
      } else {
        finish(r, 503, "app probe: " + where(r) + r.probe.path + " did not answer HTTP");
      }
    }
    running.erase(
        std::remove_if(running.begin(), running.end(), [](const Running& r) { return r.fd < 0; }),
        running.end());
  }
  for (auto& r : running) {
    if (r.fd >= 0) {
      ::close(r.fd);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  queue_.clear();  // replies dropped: the servers have stopped
}

}  // namespace skiff::proxy

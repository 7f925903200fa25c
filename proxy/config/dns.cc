#include "proxy/config/dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>

namespace skiff::proxy {

DnsCache& DnsCache::Default() {
  static auto* cache = new DnsCache(&DnsCache::SystemResolve);  // never destroyed
  return *cache;
}

std::optional<std::vector<std::string>> DnsCache::SystemResolve(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &res);
  if (rc == EAI_NONAME || rc == EAI_NODATA) {
    return std::vector<std::string>();  // an answer: the name has no (IPv4) addresses
  }
  if (rc != 0) {
    return std::nullopt;  // no answer (EAI_AGAIN, ...): the last addresses stay
  }
  std::vector<std::string> out;
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (a->ai_family != AF_INET) {
      continue;
    }
    char text[INET_ADDRSTRLEN];
    const auto* sin = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if (::inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)) != nullptr) {
      out.emplace_back(text);
    }
  }
  ::freeaddrinfo(res);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

DnsCache::DnsCache(Resolver resolver, std::chrono::milliseconds refresh)
    : resolver_(std::move(resolver)), refresh_(refresh) {}

DnsCache::~DnsCache() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

std::optional<std::vector<std::string>> DnsCache::Lookup(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = resolved_.find(name);
  if (it == resolved_.end()) {
    return std::nullopt;
  }
  return it->second;
}

void DnsCache::Want(const std::set<std::string>& names) {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::string> wanted;
  for (const auto& n : names) {
    if (wanted.size() >= kMaxNames) {
      spdlog::warn(
          "DNS: the configuration uses {} endpoint names; only the first {} are "
          "resolved",
          names.size(), kMaxNames);
      break;
    }
    wanted.insert(n);
    fresh_names_ = fresh_names_ || resolved_.find(n) == resolved_.end();
  }
  std::erase_if(resolved_, [&](const auto& kv) { return wanted.count(kv.first) == 0; });
  wanted_ = std::move(wanted);
  if (!thread_.joinable() && !wanted_.empty()) {
    thread_ = std::thread([this] { Run(); });
  }
  cv_.notify_all();
}

void DnsCache::OnChange(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(callback_mu_);
  on_change_ = std::move(fn);
}

void DnsCache::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    std::set<std::string> names = wanted_;
    fresh_names_ = false;
    lock.unlock();
    std::map<std::string, std::optional<std::vector<std::string>>> results;
    for (const auto& n : names) {
      results[n] = resolver_(n);  // blocking; outside the lock
    }
    lock.lock();
    bool changed = false;
    for (auto& [n, r] : results) {
      if (wanted_.count(n) == 0) {
        continue;  // no longer wanted while it was looked up
      }
      auto it = resolved_.find(n);
      if (!r) {
        continue;  // a failed lookup keeps the last addresses (as Envoy does)
      }
      if (it == resolved_.end() || it->second != *r) {
        resolved_[n] = std::move(*r);
        changed = true;
      }
    }
    if (changed) {
      lock.unlock();
      {
        std::lock_guard<std::mutex> callback(callback_mu_);
        if (on_change_) {
          on_change_();
        }
      }
      lock.lock();
    }
    cv_.wait_for(lock, refresh_, [this] { return stop_ || fresh_names_; });
  }
}

}  // namespace skiff::proxy

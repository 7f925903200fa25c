#pragma once
// Endpoint addresses that are DNS names (a ServiceEntry with resolution DNS), resolved as
// Envoy's STRICT_DNS clusters are: every IPv4 address of the name is an endpoint, looked up
// again every refresh interval (Envoy's dns_refresh_rate, 5 s). One background thread
// resolves the names the current configuration uses; Config::Build reads the cache (a name
// not resolved yet has no endpoints), and a change of any name's addresses calls the change
// callback, which rebuilds the configuration.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace skiff::proxy {

class DnsCache {
 public:
  // Resolves one name: its addresses (sorted, unique; none when the name does not exist or
  // has no addresses), or nullopt when there was no answer (the last addresses stay).
  using Resolver = std::function<std::optional<std::vector<std::string>>(const std::string&)>;

  // The process's cache, used by Config::Build; its thread starts on the first Want().
  static DnsCache& Default();
  // getaddrinfo, IPv4 only (as Istio's V4_ONLY lookup family on a single-stack cluster).
  static std::optional<std::vector<std::string>> SystemResolve(const std::string& name);

  explicit DnsCache(Resolver resolver,
                    std::chrono::milliseconds refresh = std::chrono::milliseconds(5000));
  ~DnsCache();
  DnsCache(const DnsCache&) = delete;
  DnsCache& operator=(const DnsCache&) = delete;

  // The addresses of `name` as last resolved; nullopt when it has not resolved (yet).
  [[nodiscard]] std::optional<std::vector<std::string>> Lookup(const std::string& name) const;
  // The names the configuration uses now: new ones are resolved at once, names no longer
  // wanted are forgotten. At most kMaxNames are kept (the rest are never resolved).
  void Want(const std::set<std::string>& names);
  // Called (on the resolver's thread) after a pass in which some name's addresses changed.
  // Replacing it (or clearing it with nullptr) waits for a call in progress to return.
  void OnChange(std::function<void()> fn);
  static constexpr size_t kMaxNames = 4096;

 private:
  void Run();

  Resolver resolver_;
  std::chrono::milliseconds refresh_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> wanted_;
  std::map<std::string, std::vector<std::string>> resolved_;
  std::mutex callback_mu_;           // held while on_change_ runs; taken before mu_
  std::function<void()> on_change_;  // guarded by callback_mu_
  bool fresh_names_ = false;         // names wanted that were not looked up yet
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace skiff::proxy

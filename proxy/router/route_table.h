#pragma once
// Compiled routing: host -> virtual host (exact, then longest wildcard, then "*"), then
// the first route whose match holds. Built once per config from the snapshot protos,
// immutable afterwards and shared by all workers.
#include <re2/re2.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/policy/retry_policy.h"
#include "skiff/v1/config.pb.h"

namespace skiff::router {

// Like Envoy, the proxy refuses regexes whose compiled RE2 program is larger than a limit
// (default 100), bounding the cost of matching; configs with such regexes are rejected.
void SetMaxRegexProgramSize(int size);
int MaxRegexProgramSize();

class StringMatcher {
 public:
  // Returns an error text, or empty on success.
  std::string Init(const v1::StringMatch& m);
  [[nodiscard]] bool Matches(std::string_view value) const;
  [[nodiscard]] bool empty() const { return type_ == Type::kNone; }
  [[nodiscard]] bool is_prefix() const { return type_ == Type::kPrefix; }
  [[nodiscard]] bool is_exact() const { return type_ == Type::kExact; }
  [[nodiscard]] const std::string& value() const { return value_; }

 private:
  enum class Type { kNone, kExact, kPrefix, kRegex };
  Type type_ = Type::kNone;
  std::string value_;
  bool ignore_case_ = false;
  std::unique_ptr<RE2> re_;
};

struct HeaderMatcher {
  std::string name;  // lower case
  std::optional<StringMatcher> value;
};

// What a request looks like to the matcher.
struct RequestView {
  std::string_view method;
  std::string_view path;   // without the query string
  std::string_view query;  // after '?', without it
  std::string_view scheme;
  std::string_view authority;
  uint32_t port = 0;  // listener port (as configured)
  // Returns the first value of a header (lower-case name) or nullopt.
  const std::function<std::optional<std::string_view>(std::string_view)>* header = nullptr;
};

struct Route {
  const v1::Route* proto = nullptr;  // owned by the Config's snapshot
  StringMatcher uri, scheme, method, authority;
  std::vector<HeaderMatcher> headers, without_headers;
  std::vector<std::pair<std::string, std::optional<StringMatcher>>> query_params;
  uint32_t port = 0;
  std::unique_ptr<RE2> rewrite_regex;
  uint64_t total_weight = 0;
  policy::RetryPolicy retry;
  std::vector<StringMatcher> cors_origins;           // corsPolicy.allowOrigins, compiled
  std::optional<std::chrono::milliseconds> timeout;  // unset: no overall timeout

  [[nodiscard]] bool Matches(const RequestView& req) const;
};

struct VirtualHost {
  std::string name;
  std::vector<Route> routes;
};

// Hashes std::string and std::string_view alike, so lookups need no allocation.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

class RouteTable {
 public:
  // Compiles a route table; it keeps pointers into `proto`, which must outlive it. On
  // error returns false and sets `error` to a message naming
  // the field ("route_tables[http.80].virtual_hosts[1].routes[0].match.uri.regex: ...").
  bool Init(const v1::RouteTable& proto, std::string* error);
  // Exact authority, exact host without port, longest wildcard suffix, then "*".
  [[nodiscard]] const VirtualHost* FindVirtualHost(std::string_view authority) const;
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] size_t route_count() const;

 private:
  std::string name_;
  std::vector<std::unique_ptr<VirtualHost>> hosts_;
  std::unordered_map<std::string, const VirtualHost*, StringHash, std::equal_to<>> exact_;
  std::vector<std::pair<std::string, const VirtualHost*>>
      suffixes_;  // ".example.com", longest first
  const VirtualHost* any_ = nullptr;
};

// Splits "host:port" / "[v6]:port"; returns the host part.
std::string_view HostWithoutPort(std::string_view authority);

}  // namespace skiff::router

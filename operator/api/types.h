#pragma once
// Typed Istio (networking.istio.io Gateway, VirtualService, DestinationRule) and core
// Kubernetes (Service, EndpointSlice, Pod) objects, as decoded from JSON or YAML. Only the
// fields skiff uses are modelled; unknown fields are reported as warnings by the decoder.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace skiff::api {

using Duration = std::chrono::nanoseconds;
using Labels = std::map<std::string, std::string>;

enum class Kind { kGateway, kVirtualService, kDestinationRule, kService, kEndpointSlice, kPod };
const char* KindName(Kind kind);

// A problem found while decoding or validating, with the field path it is about
// ("spec.http[0].retries.perTryTimeout").
struct Message {
  enum class Level { kError, kWarning };
  Level level = Level::kError;
  std::string path;
  std::string text;
  [[nodiscard]] std::string Format() const;  // "path: text"
  bool operator==(const Message&) const = default;
};

struct ObjectMeta {
  std::string name;
  std::string namespace_;  // "default" when absent
  std::string uid;
  std::string resource_version;
  std::string creation_timestamp;
  int64_t generation = 0;
  Labels labels;
  Labels annotations;
  bool operator==(const ObjectMeta&) const = default;
};

// ---- Istio -----------------------------------------------------------------------------

struct StringMatch {
  enum class Type { kUnset, kExact, kPrefix, kRegex };
  Type type = Type::kUnset;
  std::string value;
  bool operator==(const StringMatch&) const = default;
};

struct PortSelector {
  uint32_t number = 0;
  bool operator==(const PortSelector&) const = default;
};

struct Destination {
  std::string host;
  std::string subset;
  std::optional<uint32_t> port;
  bool operator==(const Destination&) const = default;
};

struct HeaderOperations {
  std::vector<std::pair<std::string, std::string>> set;
  std::vector<std::pair<std::string, std::string>> add;
  std::vector<std::string> remove;
  bool operator==(const HeaderOperations&) const = default;
};

struct Headers {
  HeaderOperations request;
  HeaderOperations response;
  bool operator==(const Headers&) const = default;
};

struct RouteDestination {
  Destination destination;
  int64_t weight = 0;
  bool weight_set = false;
  Headers headers;
  bool operator==(const RouteDestination&) const = default;
};

struct HTTPMatchRequest {
  std::string name;
  std::optional<StringMatch> uri, scheme, method, authority;
  std::vector<std::pair<std::string, StringMatch>> headers;
  std::vector<std::pair<std::string, StringMatch>> without_headers;
  std::vector<std::pair<std::string, StringMatch>> query_params;
  bool ignore_uri_case = false;
  uint32_t port = 0;
  Labels source_labels;
  std::vector<std::string> gateways;
  bool operator==(const HTTPMatchRequest&) const = default;
};

struct HTTPRetry {
  int64_t attempts = 0;
  std::optional<Duration> per_try_timeout;
  std::string retry_on;
  bool operator==(const HTTPRetry&) const = default;
};

struct Percent {
  double value = 100.0;
  bool operator==(const Percent&) const = default;
};

struct HTTPFaultDelay {
  std::optional<Duration> fixed_delay;
  std::optional<Percent> percentage;
  bool operator==(const HTTPFaultDelay&) const = default;
};

struct HTTPFaultAbort {
  int64_t http_status = 0;
  std::optional<Percent> percentage;
  bool operator==(const HTTPFaultAbort&) const = default;
};

struct HTTPFaultInjection {
  std::optional<HTTPFaultDelay> delay;
  std::optional<HTTPFaultAbort> abort;
  bool operator==(const HTTPFaultInjection&) const = default;
};

struct HTTPMirrorPolicy {
  Destination destination;
  std::optional<Percent> percentage;
  bool operator==(const HTTPMirrorPolicy&) const = default;
};

struct HTTPRewrite {
  std::string uri;
  std::string authority;
  std::optional<std::pair<std::string, std::string>> uri_regex;  // match, rewrite
  bool operator==(const HTTPRewrite&) const = default;
};

struct HTTPRedirect {
  std::string uri;
  std::string authority;
  uint32_t port = 0;
  std::string scheme;
  int64_t redirect_code = 0;
  bool operator==(const HTTPRedirect&) const = default;
};

struct HTTPDirectResponse {
  int64_t status = 0;
  std::string body;
  bool operator==(const HTTPDirectResponse&) const = default;
};

struct CorsPolicy {
  std::vector<StringMatch> allow_origins;
  std::vector<std::string> allow_methods, allow_headers, expose_headers;
  std::optional<Duration> max_age;
  bool allow_credentials = false;
  bool operator==(const CorsPolicy&) const = default;
};

struct HTTPRoute {
  std::string name;
  std::vector<HTTPMatchRequest> match;
  std::vector<RouteDestination> route;
  std::optional<HTTPRedirect> redirect;
  std::optional<HTTPDirectResponse> direct_response;
  std::optional<HTTPRewrite> rewrite;
  std::optional<Duration> timeout;
  std::optional<HTTPRetry> retries;
  std::optional<HTTPFaultInjection> fault;
  std::vector<HTTPMirrorPolicy> mirrors;  // `mirror` + `mirrorPercentage` and `mirrors`
  std::optional<CorsPolicy> cors_policy;
  Headers headers;
  bool operator==(const HTTPRoute&) const = default;
};

struct VirtualService {
  std::vector<std::string> hosts;
  std::vector<std::string> gateways;
  std::vector<HTTPRoute> http;
  std::vector<std::string> export_to;
  bool operator==(const VirtualService&) const = default;
};

struct ServerPort {
  uint32_t number = 0;
  std::string protocol;
  std::string name;
  bool operator==(const ServerPort&) const = default;
};

struct Server {
  std::optional<ServerPort> port;
  std::vector<std::string> hosts;
  std::string bind;
  std::string name;
  bool has_tls = false;
  bool operator==(const Server&) const = default;
};

struct Gateway {
  Labels selector;
  std::vector<Server> servers;
  bool operator==(const Gateway&) const = default;
};

struct LoadBalancerSettings {
  enum class Simple { kUnset, kRoundRobin, kLeastRequest, kRandom, kPassthrough };
  Simple simple = Simple::kUnset;
  struct ConsistentHash {
    std::string http_header_name;
    std::string cookie_name, cookie_path;
    std::optional<Duration> cookie_ttl;
    bool use_source_ip = false;
    std::string http_query_parameter_name;
    bool operator==(const ConsistentHash&) const = default;
  };
  std::optional<ConsistentHash> consistent_hash;
  bool operator==(const LoadBalancerSettings&) const = default;
};

struct ConnectionPoolSettings {
  int64_t max_connections = 0;
  std::optional<Duration> connect_timeout;
  int64_t http1_max_pending_requests = 0;
  int64_t http2_max_requests = 0;
  int64_t max_requests_per_connection = 0;
  int64_t max_retries = 0;
  std::optional<Duration> idle_timeout;
  bool operator==(const ConnectionPoolSettings&) const = default;
};

struct OutlierDetection {
  int64_t consecutive_5xx_errors = 0;
  int64_t consecutive_gateway_errors = 0;
  std::optional<Duration> interval;
  std::optional<Duration> base_ejection_time;
  int64_t max_ejection_percent = 0;
  int64_t min_health_percent = 0;
  bool operator==(const OutlierDetection&) const = default;
};

struct TrafficPolicy {
  std::optional<LoadBalancerSettings> load_balancer;
  std::optional<ConnectionPoolSettings> connection_pool;
  std::optional<OutlierDetection> outlier_detection;
  bool operator==(const TrafficPolicy&) const = default;
};

struct Subset {
  std::string name;
  Labels labels;
  std::optional<TrafficPolicy> traffic_policy;
  bool operator==(const Subset&) const = default;
};

struct DestinationRule {
  std::string host;
  std::optional<TrafficPolicy> traffic_policy;
  std::vector<Subset> subsets;
  std::vector<std::string> export_to;
  bool operator==(const DestinationRule&) const = default;
};

// ---- Kubernetes core -----------------------------------------------------------------

struct ServicePort {
  std::string name;
  uint32_t port = 0;
  std::string target_port;  // number or named port, as text; empty = same as port
  std::string protocol;
  bool operator==(const ServicePort&) const = default;
};

struct Service {
  std::vector<ServicePort> ports;
  Labels selector;
  std::string cluster_ip;
  bool operator==(const Service&) const = default;
};

struct EndpointSlice {
  std::string service_name;  // label kubernetes.io/service-name
  std::string address_type;
  struct Endpoint {
    std::vector<std::string> addresses;
    bool ready = true;  // conditions.ready; absent means ready
    std::string target_kind, target_name, target_namespace;
    bool operator==(const Endpoint&) const = default;
  };
  std::vector<Endpoint> endpoints;
  struct Port {
    std::string name;
    uint32_t port = 0;
    bool operator==(const Port&) const = default;
  };
  std::vector<Port> ports;
  bool operator==(const EndpointSlice&) const = default;
};

struct Pod {
  std::string pod_ip;
  bool ready = false;
  bool operator==(const Pod&) const = default;
};

using Spec = std::variant<Gateway, VirtualService, DestinationRule, Service, EndpointSlice, Pod>;

// One decoded object. `messages` holds what decoding and validation found; an object with
// any error-level message is invalid and is not translated.
struct Object {
  Kind kind = Kind::kGateway;
  std::string api_version;
  ObjectMeta meta;
  Spec spec;
  std::string origin;  // "file.yaml document 2", or "kube" for API objects
  std::vector<Message> messages;

  [[nodiscard]] bool Valid() const;
  [[nodiscard]] std::string Ref() const;  // "VirtualService default/catalog"
  template <typename T>
  const T& As() const {
    return std::get<T>(spec);
  }
  bool operator==(const Object& o) const {
    return kind == o.kind && api_version == o.api_version && meta == o.meta && spec == o.spec;
  }
};

}  // namespace skiff::api

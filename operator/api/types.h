#pragma once
// Typed Istio (networking.istio.io Gateway, VirtualService, DestinationRule) and core
// Kubernetes (Service, EndpointSlice, Pod) objects, as decoded from JSON or YAML. Only the
// fields skiff uses are modelled; unknown fields are reported as warnings by the decoder.
#include <algorithm>
#include <chrono>
#include <compare>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace skiff::api {

using Duration = std::chrono::nanoseconds;

// A string map sorted by key, in one block: labels, selectors and annotations hold a few
// entries each, which a std::map would scatter over the heap (one node per entry). It has
// the part of std::map's interface that skiff uses, and iterates and compares the same.
class Labels {
 public:
  using value_type = std::pair<std::string, std::string>;
  using const_iterator = std::vector<value_type>::const_iterator;

  Labels() = default;
  // Of equal keys, the first one counts (as in a std::map).
  Labels(std::initializer_list<value_type> entries) {
    for (const auto& [key, value] : entries) {
      emplace(key, value);
    }
  }

  [[nodiscard]] const_iterator begin() const { return entries_.begin(); }
  [[nodiscard]] const_iterator end() const { return entries_.end(); }
  [[nodiscard]] size_t size() const { return entries_.size(); }
  [[nodiscard]] bool empty() const { return entries_.empty(); }
  [[nodiscard]] const_iterator find(std::string_view key) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, KeyLess());
    return it != entries_.end() && it->first == key ? it : entries_.end();
  }
  [[nodiscard]] size_t count(std::string_view key) const { return find(key) == end() ? 0 : 1; }

  // The value of `key`, inserted empty if absent.
  std::string& operator[](std::string_view key) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, KeyLess());
    if (it == entries_.end() || it->first != key) {
      it = entries_.emplace(it, std::string(key), std::string());
    }
    return it->second;
  }
  // Inserts `key` unless it is there.
  std::pair<const_iterator, bool> emplace(std::string key, std::string value) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, KeyLess());
    if (it != entries_.end() && it->first == key) {
      return {it, false};
    }
    return {entries_.emplace(it, std::move(key), std::move(value)), true};
  }
  void reserve(size_t n) { entries_.reserve(n); }

  bool operator==(const Labels&) const = default;
  auto operator<=>(const Labels&) const = default;

 private:
  struct KeyLess {
    bool operator()(const value_type& entry, std::string_view key) const {
      return entry.first < key;
    }
  };
  std::vector<value_type> entries_;
};

// An optional value kept on the heap, for large fields that are rarely set: the structs
// holding them (and so every Object, whose spec is a variant of them) stay small. Reads
// like std::optional; copies are deep and comparison is by value.
template <typename T>
class Boxed {
 public:
  // Implicit, as std::optional's: `field = value;` and `field = std::nullopt;` work.
  Boxed() = default;
  Boxed(std::nullopt_t) {}
  Boxed(T value) : ptr_(std::make_unique<T>(std::move(value))) {}
  Boxed(const Boxed& o) : ptr_(o.ptr_ ? std::make_unique<T>(*o.ptr_) : nullptr) {}
  Boxed(Boxed&&) noexcept = default;
  Boxed& operator=(const Boxed& o) {
    if (this != &o) {
      ptr_ = o.ptr_ ? std::make_unique<T>(*o.ptr_) : nullptr;
    }
    return *this;
  }
  Boxed& operator=(Boxed&&) noexcept = default;
  ~Boxed() = default;

  [[nodiscard]] bool has_value() const { return ptr_ != nullptr; }
  explicit operator bool() const { return ptr_ != nullptr; }
  const T& operator*() const { return *ptr_; }
  T& operator*() { return *ptr_; }
  const T* operator->() const { return ptr_.get(); }
  T* operator->() { return ptr_.get(); }
  // The value, or nullptr when absent.
  [[nodiscard]] const T* get() const { return ptr_.get(); }

  friend bool operator==(const Boxed& a, const Boxed& b) {
    return a.has_value() == b.has_value() && (!a.has_value() || *a == *b);
  }

 private:
  std::unique_ptr<T> ptr_;
};

enum class Kind {
  kGateway,
  kVirtualService,
  kDestinationRule,
  kServiceEntry,
  kService,
  kEndpointSlice,
  kPod,
  kSecret
};
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

// Fields are in the order translation reads them in (hot first): it reads every object.
struct ObjectMeta {
  std::string name;
  std::string namespace_;  // "default" when absent
  std::string creation_timestamp;
  int64_t generation = 0;
  Labels labels;
  std::string uid;
  std::string resource_version;
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
  Boxed<Headers> headers;  // absent when no header operations are set
  bool operator==(const RouteDestination&) const = default;
};

struct HTTPMatchRequest {
  std::string name;
  std::optional<StringMatch> uri;
  Boxed<StringMatch> scheme, method, authority;
  std::vector<std::pair<std::string, StringMatch>> headers;
  std::vector<std::pair<std::string, StringMatch>> without_headers;
  std::vector<std::pair<std::string, StringMatch>> query_params;
  bool ignore_uri_case = false;
  uint32_t port = 0;
  Labels source_labels;
  std::string source_namespace;
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
  std::string grpc_status;  // a gRPC status name (UNAVAILABLE, ...)
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
  std::string prefix_rewrite;  // replaces the matched uri prefix in the Location
  bool derive_port = false;    // derivePort: FROM_REQUEST_PORT
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

// http[].delegate: the routes of another VirtualService (one without hosts), inlined.
struct Delegate {
  std::string name;
  std::string namespace_;  // the root VirtualService's when empty
  bool operator==(const Delegate&) const = default;
};

struct HTTPRoute {
  std::string name;
  Boxed<Delegate> delegate;
  std::vector<HTTPMatchRequest> match;
  std::vector<RouteDestination> route;
  Boxed<HTTPRedirect> redirect;
  Boxed<HTTPDirectResponse> direct_response;
  Boxed<HTTPRewrite> rewrite;
  std::optional<Duration> timeout;
  std::optional<HTTPRetry> retries;
  Boxed<HTTPFaultInjection> fault;
  std::vector<HTTPMirrorPolicy> mirrors;  // `mirror` + `mirrorPercentage` and `mirrors`
  Boxed<CorsPolicy> cors_policy;
  Boxed<Headers> headers;  // absent when no header operations are set
  bool operator==(const HTTPRoute&) const = default;
};

// A tls: route (SNI routing of TLS passed through unterminated).
struct TLSMatchAttributes {
  std::vector<std::string> sni_hosts;
  uint32_t port = 0;
  std::vector<std::string> gateways;
  bool operator==(const TLSMatchAttributes&) const = default;
};

struct TLSRoute {
  std::vector<TLSMatchAttributes> match;
  std::vector<RouteDestination> route;
  bool operator==(const TLSRoute&) const = default;
};

// A tcp: route's match (Istio's L4MatchAttributes; destinationSubnets is not matched).
struct L4MatchAttributes {
  uint32_t port = 0;
  std::vector<std::string> gateways;
  Labels source_labels;
  std::string source_namespace;
  bool destination_subnets = false;  // set: skiff never matches it (warned)
  bool operator==(const L4MatchAttributes&) const = default;
};

// A tcp: route: served at a Gateway's TCP servers.
struct TCPRoute {
  std::vector<L4MatchAttributes> match;
  std::vector<RouteDestination> route;
  bool operator==(const TCPRoute&) const = default;
};

struct VirtualService {
  std::vector<std::string> hosts;
  std::vector<std::string> gateways;
  std::vector<HTTPRoute> http;
  std::vector<std::string> export_to;
  size_t tcp_routes = 0;
  size_t tls_routes = 0;
  std::vector<TLSRoute> tls;  // decoded when valid
  std::vector<TCPRoute> tcp;  // decoded when valid
  // No hosts: a delegate, whose routes a root VirtualService's http[].delegate inlines.
  [[nodiscard]] bool IsDelegate() const { return hosts.empty(); }
  bool operator==(const VirtualService&) const = default;
};

struct ServerPort {
  uint32_t number = 0;
  std::string protocol;
  std::string name;
  bool operator==(const ServerPort&) const = default;
};

// A Gateway server's tls (Istio's ServerTLSSettings).
struct ServerTLSSettings {
  std::string mode;  // SIMPLE, MUTUAL, OPTIONAL_MUTUAL, PASSTHROUGH (default), ...
  // Where the certificate comes from: a Secret of the Gateway's namespace, or files on the
  // proxy's disk (Istio's file mode).
  std::string credential_name;
  std::string server_certificate, private_key, ca_certificates;
  std::string min_protocol_version, max_protocol_version;  // "" or TLS_AUTO: the default
  std::vector<std::string> cipher_suites;
  std::vector<std::string> ecdh_curves;  // the ones skiff-proxy offers, in order
  std::vector<std::string> subject_alt_names;
  std::vector<std::string> verify_certificate_spki, verify_certificate_hash;
  bool operator==(const ServerTLSSettings&) const = default;
};

struct Server {
  std::optional<ServerPort> port;
  std::vector<std::string> hosts;
  std::string bind;
  std::string name;
  bool has_tls = false;
  bool https_redirect = false;   // tls.httpsRedirect on an HTTP server
  Boxed<ServerTLSSettings> tls;  // on HTTPS and TLS servers
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
  int64_t max_concurrent_streams = 0;
  bool h2_upgrade = false;           // h2UpgradePolicy: UPGRADE
  bool use_client_protocol = false;  // useClientProtocol: the client's HTTP version upstream
  std::optional<Duration> idle_timeout;
  bool operator==(const ConnectionPoolSettings&) const = default;
};

struct OutlierDetection {
  int64_t consecutive_5xx_errors = -1;     // -1: unset (Envoy's default, 5); 0: off
  int64_t consecutive_gateway_errors = 0;  // 0: unset or off
  std::optional<Duration> interval;
  std::optional<Duration> base_ejection_time;
  int64_t max_ejection_percent = 0;
  int64_t min_health_percent = 0;
  bool operator==(const OutlierDetection&) const = default;
};

// DestinationRule trafficPolicy.tls (Istio's ClientTLSSettings): TLS to the upstream.
struct ClientTLSSettings {
  std::string mode;             // DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL
  std::string credential_name;  // a Secret of the proxy's namespace
  std::string client_certificate, private_key, ca_certificates;  // files on the proxy's disk
  std::string sni;
  std::vector<std::string> subject_alt_names;
  bool insecure_skip_verify = false;
  bool operator==(const ClientTLSSettings&) const = default;
};

// One portLevelSettings entry: the policy of one service port. Where it applies it replaces
// all four fields of its level, those it leaves out falling back to the defaults (Istio: port
// level settings are not merged with the level's own).
struct PortTrafficPolicy {
  uint32_t port = 0;
  std::optional<LoadBalancerSettings> load_balancer;
  std::optional<ConnectionPoolSettings> connection_pool;
  std::optional<OutlierDetection> outlier_detection;
  std::optional<ClientTLSSettings> tls;
  bool operator==(const PortTrafficPolicy&) const = default;
};

struct TrafficPolicy {
  std::optional<LoadBalancerSettings> load_balancer;
  std::optional<ConnectionPoolSettings> connection_pool;
  std::optional<OutlierDetection> outlier_detection;
  std::optional<ClientTLSSettings> tls;
  std::vector<PortTrafficPolicy> port_level_settings;  // in order; the first of a port applies
  bool operator==(const TrafficPolicy&) const = default;
};

struct Subset {
  std::string name;
  Labels labels;
  Boxed<TrafficPolicy> traffic_policy;
  bool operator==(const Subset&) const = default;
};

struct DestinationRule {
  std::string host;
  Boxed<TrafficPolicy> traffic_policy;
  std::vector<Subset> subsets;
  std::vector<std::string> export_to;
  bool operator==(const DestinationRule&) const = default;
};

// ServiceEntry: hosts added to the mesh's registry, with their ports and endpoints.
struct ServiceEntryPort {
  uint32_t number = 0;
  std::string protocol;  // upper case: HTTP, HTTP2, GRPC, HTTPS, TLS, TCP, ...; "" = TCP
  std::string name;
  uint32_t target_port = 0;  // 0: the endpoint's port of this name, else `number`
  bool operator==(const ServiceEntryPort&) const = default;
};

// A ServiceEntry endpoint (Istio's WorkloadEntry): an IP address, a DNS name or unix://.
struct WorkloadEntry {
  std::string address;
  std::map<std::string, uint32_t> ports;  // service port name -> this endpoint's port
  Labels labels;
  std::string network, locality, service_account;
  uint32_t weight = 0;
  bool operator==(const WorkloadEntry&) const = default;
};

struct ServiceEntry {
  std::vector<std::string> hosts;
  std::vector<std::string> addresses;  // IPs or CIDRs
  std::vector<ServiceEntryPort> ports;
  std::string location;    // MESH_EXTERNAL (default) or MESH_INTERNAL
  std::string resolution;  // NONE (default), STATIC, DNS, DNS_ROUND_ROBIN
  std::vector<WorkloadEntry> endpoints;
  std::optional<Labels> workload_selector;  // workloadSelector.labels
  std::vector<std::string> export_to;
  std::vector<std::string> subject_alt_names;
  bool operator==(const ServiceEntry&) const = default;
};

// ---- Kubernetes core -----------------------------------------------------------------

struct ServicePort {
  std::string name;
  uint32_t port = 0;
  std::string target_port;   // number or named port, as text; empty = same as port
  std::string protocol;      // TCP (default), UDP, SCTP
  std::string app_protocol;  // appProtocol: the application protocol (http, grpc, ...)
  bool operator==(const ServicePort&) const = default;
};

struct Service {
  std::vector<ServicePort> ports;
  Labels selector;
  std::string cluster_ip;
  std::vector<std::string> cluster_ips;  // clusterIPs (dual stack); the first is clusterIP
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

// A Secret with TLS material (kubernetes.io/tls: tls.crt, tls.key, ca.crt; Istio's generic
// form: cert, key, cacert), PEM. Other keys are not kept.
struct Secret {
  std::string type;
  std::string cert;
  std::string key;
  std::string ca;
  [[nodiscard]] bool HasTls() const { return !cert.empty() || !key.empty() || !ca.empty(); }
  bool operator==(const Secret&) const = default;
};

// A newer version of a resource that was refused (see Object::rejected).
struct Rejection {
  std::vector<Message> errors;
  std::string origin;
  bool operator==(const Rejection&) const = default;
};

using Spec = std::variant<Gateway, VirtualService, DestinationRule, ServiceEntry, Service,
                          EndpointSlice, Pod, Secret>;

// One decoded object. `messages` holds what decoding and validation found; an object with
// any error-level message is invalid and is not translated.
struct Object {
  Kind kind = Kind::kGateway;
  std::vector<Message> messages;  // (next to kind and meta: translation reads them first)
  ObjectMeta meta;
  Spec spec;
  std::string api_version;
  std::string origin;  // "file.yaml document 2", or "kube" for API objects
  std::string file;    // the file it was read from ("" for API objects)
  // Set on the last valid version of a resource that is served in place of a newer,
  // invalid version: that version's errors, and where it is.
  Boxed<Rejection> rejected;

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

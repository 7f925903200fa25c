// Routes: a VirtualService's rules as routes of a virtual host (matches, actions, retries,
// faults, mirrors, CORS, headers), delegated rules merged in, and the default route of a
// Service without a VirtualService.
#include <algorithm>
#include <charconv>

#include "common/strings.h"
#include "operator/translate/builder.h"
#include "operator/translate/delegation.h"
#include "operator/translate/hosts.h"

namespace skiff::translate {

namespace {

// A gRPC status name's code (UNAVAILABLE = 14), or -1.
int GrpcCode(std::string_view name) {
  static constexpr std::string_view kNames[] = {"OK",
                                                "CANCELLED",
                                                "UNKNOWN",
                                                "INVALID_ARGUMENT",
                                                "DEADLINE_EXCEEDED",
                                                "NOT_FOUND",
                                                "ALREADY_EXISTS",
                                                "PERMISSION_DENIED",
                                                "RESOURCE_EXHAUSTED",
                                                "FAILED_PRECONDITION",
                                                "ABORTED",
                                                "OUT_OF_RANGE",
                                                "UNIMPLEMENTED",
                                                "INTERNAL",
                                                "UNAVAILABLE",
                                                "DATA_LOSS",
                                                "UNAUTHENTICATED"};
  for (size_t i = 0; i < std::size(kNames); ++i) {
    if (kNames[i] == name) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

}  // namespace

using api::Object;

namespace {

void SetStringMatch(v1::StringMatch* out, const api::StringMatch& in, bool ignore_case) {
  switch (in.type) {
    case api::StringMatch::Type::kExact:
      out->set_exact(in.value);
      break;
    case api::StringMatch::Type::kPrefix:
      out->set_prefix(in.value);
      break;
    case api::StringMatch::Type::kRegex:
      out->set_regex(in.value);
      break;
    case api::StringMatch::Type::kUnset:
      break;
  }
  if (ignore_case && in.type != api::StringMatch::Type::kRegex) {
    out->set_ignore_case(true);
  }
}

// A header value as Envoy writes it: "%%" is one '%' (other %COMMAND%s, which skiff does
// not expand, stay as written).
std::string HeaderValue(const std::string& v) {
  if (v.find("%%") == std::string::npos) {
    return v;
  }
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out.push_back(v[i]);
    if (v[i] == '%' && i + 1 < v.size() && v[i + 1] == '%') {
      ++i;
    }
  }
  return out;
}

// `authority`: where a request ":authority" set or add goes (an authority rewrite, not a
// header); null for response operations.
void SetHeaderOps(v1::HeaderOperations* out, const api::HeaderOperations& in,
                  std::string* authority) {
  for (const auto& [k, v] : in.add) {
    if (authority != nullptr && k == ":authority") {
      *authority = v;  // a set (below) wins over an add
    }
  }
  for (const auto& [k, v] : in.set) {
    if (authority != nullptr && k == ":authority") {
      *authority = v;
      continue;
    }
    auto* h = out->add_set();
    h->set_name(k);
    h->set_value(HeaderValue(v));
  }
  for (const auto& [k, v] : in.add) {
    if (authority != nullptr && k == ":authority") {
      continue;
    }
    auto* h = out->add_add();
    h->set_name(k);
    h->set_value(HeaderValue(v));
  }
  for (const auto& r : in.remove) {
    out->add_remove(r);
  }
}

bool Empty(const api::HeaderOperations& h) {
  return h.set.empty() && h.add.empty() && h.remove.empty();
}

bool HasHeaders(const api::Boxed<api::Headers>& h) {
  return h && (!Empty(h->request) || !Empty(h->response));
}

bool SetsAuthority(const api::HeaderOperations& h) {
  for (const auto* list : {&h.set, &h.add}) {
    for (const auto& [k, v] : *list) {
      if (k == ":authority") {
        return true;
      }
    }
  }
  return false;
}

// `authority` receives a request ":authority" operation (see SetHeaderOps).
void SetHeaders(v1::Headers* out, const api::Headers& in, std::string* authority) {
  if (!Empty(in.request)) {
    SetHeaderOps(out->mutable_request(), in.request, authority);
    if (out->request().ByteSizeLong() == 0) {
      out->clear_request();
    }
  }
  if (!Empty(in.response)) {
    SetHeaderOps(out->mutable_response(), in.response, nullptr);
  }
}

}  // namespace

// Sorts virtual hosts by name, keeping the order in which they were added among those with
// one name (a Service that lists a port twice gives two): the last one counts.
void SortByName(google::protobuf::RepeatedPtrField<v1::VirtualHost>* vhosts) {
  std::stable_sort(
      vhosts->pointer_begin(), vhosts->pointer_end(),
      [](const v1::VirtualHost* a, const v1::VirtualHost* b) { return a->name() < b->name(); });
}

// Of virtual hosts sorted by SortByName, drops all but the last of each name.
void DropOverwritten(google::protobuf::RepeatedPtrField<v1::VirtualHost>* vhosts) {
  for (int i = 0; i + 1 < vhosts->size();) {
    if (vhosts->Get(i).name() == vhosts->Get(i + 1).name()) {
      vhosts->DeleteSubrange(i, 1);
    } else {
      ++i;
    }
  }
}

void Builder::AddDefaultRoute(const Index::ServiceEntry& svc, uint32_t port, v1::VirtualHost* vh) {
  auto* route = vh->add_routes();
  route->set_name("default");
  auto* action = route->mutable_route();
  auto* wc = action->add_clusters();
  SetCluster(svc.fqdn, port, "", &svc, wc->mutable_cluster());
  wc->set_weight(100);
  SetDefaultRetry(action->mutable_retry_policy());
  route->set_source("Service " + svc.fqdn);
}

void Builder::SetDefaultRetry(v1::RetryPolicy* rp) {
  // Istio's default when a route has no `retries`.
  rp->set_num_retries(2);
  rp->mutable_retry_on()->Reserve(5);
  for (const char* c : {"connect-failure", "refused-stream", "unavailable", "cancelled",
                        "retriable-status-codes"}) {
    rp->add_retry_on(c);
  }
  rp->add_retriable_status_codes(503);
}

void Builder::AppendRoutes(const Object& vs_obj, std::string_view gateway_key,
                           uint32_t listener_port, uint32_t service_port, v1::VirtualHost* vh) {
  const auto& vs = vs_obj.As<api::VirtualService>();
  const std::string& ns = vs_obj.meta.namespace_;
  // "VirtualService <ns>/<name> spec.http[<i>].match[<j>]"
  std::string& source = source_buf_;
  source.assign("VirtualService ").append(ns).append("/").append(vs_obj.meta.name);
  source.append(" spec.http[");
  const size_t prefix = source.size();
  const uint32_t port = listener_port != 0 ? listener_port : service_port;
  for (size_t i = 0; i < vs.http.size(); ++i) {
    const auto& http = vs.http[i];
    source.resize(prefix);
    AppendNumber(&source, i);
    source.push_back(']');
    if (http.delegate) {
      AppendDelegated(http, ns, gateway_key, port, service_port, source, vh);
      continue;
    }
    AppendRule(http, ns, ns, gateway_key, port, service_port, &source, vh);
  }
}

void Builder::AppendRule(const api::HTTPRoute& http, const std::string& ns,
                         const std::string& mirror_ns, std::string_view gateway_key, uint32_t port,
                         uint32_t service_port, std::string* source, v1::VirtualHost* vh) {
  if (http.match.empty()) {
    EmitRoute(http, nullptr, ns, mirror_ns, port, service_port, *source, vh);
    return;
  }
  const size_t base = source->size();
  for (size_t j = 0; j < http.match.size(); ++j) {
    const auto& m = http.match[j];
    if (!MatchApplies(m, ns, gateway_key, port)) {
      continue;
    }
    source->resize(base);
    source->append(".match[");
    AppendNumber(source, j);
    source->push_back(']');
    EmitRoute(http, &m, ns, mirror_ns, port, service_port, *source, vh);
  }
  source->resize(base);
}

bool Builder::MatchApplies(const api::HTTPMatchRequest& m, std::string_view ns,
                           std::string_view gateway_key, uint32_t port) const {
  if (!m.gateways.empty() &&
      std::none_of(m.gateways.begin(), m.gateways.end(),
                   [&](const std::string& g) { return RefersTo(g, ns, gateway_key); })) {
    return false;
  }
  if (m.port != 0 && m.port != port) {
    return false;
  }
  // The source is this proxy group: its namespace and labels.
  if (!m.source_namespace.empty() && m.source_namespace != group_.namespace_) {
    return false;
  }
  return LabelsMatch(m.source_labels, group_.labels);
}

void Builder::AppendDelegated(const api::HTTPRoute& root, const std::string& root_ns,
                              std::string_view gateway_key, uint32_t port, uint32_t service_port,
                              std::string root_source, v1::VirtualHost* vh) {
  std::string why;
  const Object* d = index_.Delegate(*root.delegate, root_ns, &why);
  if (d == nullptr) {
    return;  // the root's status says why
  }
  const auto& dvs = d->As<api::VirtualService>();
  const std::string& d_ns = d->meta.namespace_;
  root_source.append(" delegate VirtualService ").append(d_ns).append("/").append(d->meta.name);
  root_source.append(" spec.http[");
  const size_t prefix = root_source.size();
  api::HTTPRoute merged;
  for (size_t k = 0; k < dvs.http.size(); ++k) {
    const auto& leaf = dvs.http[k];
    bool mirrors_from_root = false;
    if (leaf.delegate || !MergeRoute(root, leaf, root_ns, d_ns, &merged, &mirrors_from_root)) {
      continue;
    }
    root_source.resize(prefix);
    AppendNumber(&root_source, k);
    root_source.push_back(']');
    AppendRule(merged, d_ns, mirrors_from_root ? root_ns : d_ns, gateway_key, port, service_port,
               &root_source, vh);
  }
}

void Builder::EmitRoute(const api::HTTPRoute& http, const api::HTTPMatchRequest* m,
                        const std::string& ns, const std::string& mirror_ns, uint32_t request_port,
                        uint32_t service_port, const std::string& source, v1::VirtualHost* vh) {
  auto* route = vh->add_routes();
  if (m != nullptr && !m->name.empty()) {
    route->set_name(http.name + "." + m->name);
  } else if (!http.name.empty()) {
    route->set_name(http.name);
  }
  route->set_source(source);
  if (m != nullptr) {
    auto* rm = route->mutable_match();
    if (!m->name.empty()) {
      rm->set_name(m->name);
    }
    if (m->uri) {
      SetStringMatch(rm->mutable_uri(), *m->uri, m->ignore_uri_case);
    }
    if (m->scheme) {
      SetStringMatch(rm->mutable_scheme(), *m->scheme, false);
    }
    if (m->method) {
      SetStringMatch(rm->mutable_method(), *m->method, false);
    }
    if (m->authority) {
      SetStringMatch(rm->mutable_authority(), *m->authority, false);
    }
    for (const auto& [name, sm] : m->headers) {
      auto* h = rm->add_headers();
      h->set_name(name == ":authority" ? "host" : name);  // HTTP/1.1 carries it in Host
      if (sm.type != api::StringMatch::Type::kUnset) {
        SetStringMatch(h->mutable_value(), sm, false);
      }
    }
    for (const auto& [name, sm] : m->without_headers) {
      auto* h = rm->add_without_headers();
      h->set_name(name == ":authority" ? "host" : name);
      if (sm.type != api::StringMatch::Type::kUnset) {
        SetStringMatch(h->mutable_value(), sm, false);
      }
    }
    for (const auto& [name, sm] : m->query_params) {
      auto* q = rm->add_query_params();
      q->set_name(name);
      if (sm.type != api::StringMatch::Type::kUnset) {
        SetStringMatch(q->mutable_value(), sm, false);
      }
    }
    rm->set_port(m->port);
  }
  // A request :authority set or add is an authority rewrite.
  std::string route_authority = http.rewrite ? http.rewrite->authority : std::string();
  if (HasHeaders(http.headers)) {
    SetHeaders(route->mutable_headers(), *http.headers, &route_authority);
    if (route->headers().ByteSizeLong() == 0) {
      route->clear_headers();
    }
  }
  // Aborts skiff cannot inject (the status 600 Istio accepts) are left out.
  int grpc_code = http.fault && http.fault->abort ? GrpcCode(http.fault->abort->grpc_status) : -1;
  bool abort = http.fault && http.fault->abort &&
               (grpc_code >= 0 ||
                (http.fault->abort->http_status >= 200 && http.fault->abort->http_status <= 599));
  if (http.fault && (http.fault->delay || abort)) {
    auto* f = route->mutable_fault();
    if (http.fault->delay) {
      auto* d = f->mutable_delay();
      if (http.fault->delay->fixed_delay) {
        SetDuration(d->mutable_fixed_delay(), *http.fault->delay->fixed_delay);
      }
      d->set_percentage(http.fault->delay->percentage.value_or(api::Percent{}).value);
    }
    if (abort) {
      auto* a = f->mutable_abort();
      if (grpc_code >= 0) {
        a->set_grpc_status(static_cast<uint32_t>(grpc_code));
      } else {
        a->set_http_status(static_cast<uint32_t>(http.fault->abort->http_status));
      }
      a->set_percentage(http.fault->abort->percentage.value_or(api::Percent{}).value);
    }
  }
  if (http.cors_policy) {
    auto* c = route->mutable_cors();
    for (const auto& o : http.cors_policy->allow_origins) {
      SetStringMatch(c->add_allow_origins(), o, false);
    }
    for (const auto& s : http.cors_policy->allow_methods) {
      c->add_allow_methods(s);
    }
    for (const auto& s : http.cors_policy->allow_headers) {
      c->add_allow_headers(s);
    }
    for (const auto& s : http.cors_policy->expose_headers) {
      c->add_expose_headers(s);
    }
    if (http.cors_policy->max_age) {
      SetDuration(c->mutable_max_age(), *http.cors_policy->max_age);
    }
    c->set_allow_credentials(http.cors_policy->allow_credentials);
  }
  if (http.redirect) {
    auto* r = route->mutable_redirect();
    // Istio accepts a uri that is not a path ("t"); as a Location path it is "/t".
    const std::string& uri = http.redirect->uri;
    r->set_uri(uri.empty() || uri[0] == '/' ? uri : "/" + uri);
    r->set_prefix_rewrite(http.redirect->prefix_rewrite);
    r->set_authority(http.redirect->authority);
    // derivePort FROM_REQUEST_PORT: the port the route serves (the routes are built per
    // port, as Istio's); FROM_PROTOCOL_DEFAULT: none, the scheme's default.
    r->set_port(http.redirect->derive_port ? request_port : http.redirect->port);
    r->set_scheme(http.redirect->scheme);
    r->set_response_code(
        static_cast<uint32_t>(http.redirect->redirect_code ? http.redirect->redirect_code : 301));
    return;
  }
  if (http.direct_response) {
    auto* d = route->mutable_direct_response();
    d->set_status(static_cast<uint32_t>(http.direct_response->status));
    d->set_body(http.direct_response->body);
    return;
  }
  auto* action = route->mutable_route();
  // A destination's own :authority wins over the route's (as a weighted cluster's host
  // rewrite does in Envoy); then every destination carries its authority as Host.
  bool per_destination = std::any_of(http.route.begin(), http.route.end(), [](const auto& rd) {
    return rd.headers && SetsAuthority(rd.headers->request);
  });
  for (const auto& rd : http.route) {
    auto* wc = action->add_clusters();
    SetDestinationCluster(rd.destination, ns, service_port, wc->mutable_cluster());
    wc->set_weight(static_cast<uint32_t>(
        http.route.size() == 1 && !rd.weight_set ? 100 : std::max<int64_t>(rd.weight, 0)));
    std::string authority = per_destination ? route_authority : std::string();
    if (HasHeaders(rd.headers)) {
      SetHeaders(wc->mutable_headers(), *rd.headers, &authority);
    }
    if (per_destination && !authority.empty()) {
      auto* h = wc->mutable_headers()->mutable_request()->add_set();
      h->set_name("host");
      h->set_value(authority);
    }
    if (wc->has_headers() && wc->headers().ByteSizeLong() == 0) {
      wc->clear_headers();
    }
  }
  if (http.timeout && http.timeout->count() > 0) {
    SetDuration(action->mutable_timeout(), *http.timeout);
  }
  if (!http.retries) {
    SetDefaultRetry(action->mutable_retry_policy());
  } else if (http.retries->attempts > 0) {
    SetRetry(*http.retries, action->mutable_retry_policy());
  }
  for (const auto& mirror : http.mirrors) {
    auto* mp = action->add_mirrors();
    SetDestinationCluster(mirror.destination, mirror_ns, service_port, mp->mutable_cluster());
    mp->set_percentage(mirror.percentage.value_or(api::Percent{}).value);
  }
  if (http.rewrite || (!route_authority.empty() && !per_destination)) {
    auto* rw = action->mutable_rewrite();
    if (http.rewrite) {
      rw->set_uri(http.rewrite->uri);
      if (http.rewrite->uri_regex) {
        rw->mutable_uri_regex()->set_pattern(http.rewrite->uri_regex->first);
        rw->mutable_uri_regex()->set_substitution(http.rewrite->uri_regex->second);
      }
    }
    if (!per_destination) {
      rw->set_authority(route_authority);
    }
  }
}

void Builder::SetRetry(const api::HTTPRetry& in, v1::RetryPolicy* rp) {
  rp->set_num_retries(static_cast<uint32_t>(in.attempts));
  if (in.per_try_timeout) {
    SetDuration(rp->mutable_per_try_timeout(), *in.per_try_timeout);
  }
  // retryOn: comma-separated conditions (kept once each, in order) and status codes.
  std::vector<std::string_view>& conds = conds_;
  std::vector<uint32_t>& codes = codes_;
  conds.clear();
  codes.clear();
  std::string_view rest = in.retry_on;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view c = Trim(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (c.empty()) {
      continue;
    }
    if (c.find_first_not_of("0123456789") == std::string_view::npos) {
      uint32_t code = 0;
      std::from_chars(c.data(), c.data() + c.size(), code);  // validated: 3 digits
      codes.push_back(code);
    } else if (std::find(conds.begin(), conds.end(), c) == conds.end()) {
      conds.push_back(c);
    }
  }
  if (conds.empty() && codes.empty()) {
    // attempts without retryOn: Istio's default conditions.
    conds = {"connect-failure", "refused-stream", "unavailable", "cancelled",
             "retriable-status-codes"};
    codes = {503};
  }
  if (!codes.empty() &&
      std::find(conds.begin(), conds.end(), "retriable-status-codes") == conds.end()) {
    conds.emplace_back("retriable-status-codes");
  }
  for (std::string_view c : conds) {
    rp->add_retry_on(c.data(), c.size());
  }
  for (uint32_t c : codes) {
    rp->add_retriable_status_codes(c);
  }
}

}  // namespace skiff::translate

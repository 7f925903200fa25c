#include "proxy/router/route_table.h"

#include <algorithm>
#include <atomic>

#include "proxy/http/authority.h"
#include "proxy/http/headers.h"
#include "proxy/policy/hash_key.h"

namespace skiff::router {

namespace {

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) {
      return false;
    }
  }
  return true;
}

std::string LowerCopy(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    c = Lower(c);
  }
  return out;
}

std::atomic<int> g_max_program_size{100};

std::string CheckProgramSize(const RE2& re) {
  int size = re.ProgramSize();
  if (size > g_max_program_size.load()) {
    return "regex \"" + re.pattern() + "\": RE2 program size " + std::to_string(size) +
           " exceeds the proxy's limit of " + std::to_string(g_max_program_size.load());
  }
  return {};
}

// Header operations: names are tokens (or Istio's ":authority"), values have no control
// bytes; nothing from config may put CR, LF or NUL on the wire.
std::string CheckHeaderOps(const v1::HeaderOperations& ops, const std::string& field) {
  auto name_ok = [](const std::string& n) { return http::ValidFieldName(n) || n == ":authority"; };
  for (const auto* list : {&ops.set(), &ops.add()}) {
    const char* kind = list == &ops.set() ? ".set[" : ".add[";
    for (int i = 0; i < list->size(); ++i) {
      const auto& h = (*list)[i];
      std::string at = field + kind + std::to_string(i) + "]";
      if (!name_ok(h.name())) {
        return at + ".name: invalid header name \"" + h.name() +
               "\" (a token is required: no spaces, CR, LF or other separators)";
      }
      if (!http::ValidFieldValue(h.value())) {
        return at +
               ".value: invalid header value (CR, LF, NUL and other control bytes are "
               "not allowed)";
      }
    }
  }
  for (int i = 0; i < ops.remove_size(); ++i) {
    if (!name_ok(ops.remove(i))) {
      return field + ".remove[" + std::to_string(i) + "]: invalid header name \"" + ops.remove(i) +
             "\"";
    }
  }
  return {};
}

std::string CheckHeaders(const v1::Headers& headers, const std::string& field) {
  if (auto e = CheckHeaderOps(headers.request(), field + ".request"); !e.empty()) {
    return e;
  }
  return CheckHeaderOps(headers.response(), field + ".response");
}

bool NoControlBytes(std::string_view s) {
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      return false;
    }
  }
  return true;
}

bool ValidScheme(std::string_view s) {
  if (s.empty() || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) {
    return false;
  }
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.';
    if (!ok) {
      return false;
    }
  }
  return true;
}

// Checks the parts of a route that reach the wire as they are.
std::string CheckRouteWire(const v1::Route& rp) {
  if (rp.has_headers()) {
    if (auto e = CheckHeaders(rp.headers(), ".headers"); !e.empty()) {
      return e;
    }
  }
  const auto& cors = rp.cors();
  for (auto [list, name] : {std::pair{&cors.allow_methods(), ".cors.allow_methods["},
                            std::pair{&cors.allow_headers(), ".cors.allow_headers["},
                            std::pair{&cors.expose_headers(), ".cors.expose_headers["}}) {
    for (int i = 0; i < list->size(); ++i) {
      if ((*list)[i].empty() || !http::ValidFieldValue((*list)[i]) ||
          (*list)[i].find(',') != std::string::npos) {
        return std::string(name) + std::to_string(i) + "]: invalid value \"" + (*list)[i] +
               "\" (one name, without CR, LF or other control bytes)";
      }
    }
  }
  switch (rp.action_case()) {
    case v1::Route::kRoute: {
      const auto& a = rp.route();
      for (int i = 0; i < a.clusters_size(); ++i) {
        std::string at = ".route.clusters[" + std::to_string(i) + "]";
        if (a.clusters(i).weight() > 2147483647u) {
          return at + ".weight: " + std::to_string(a.clusters(i).weight()) +
                 " is out of range (0 to 2147483647)";
        }
        if (a.clusters(i).has_headers()) {
          if (auto e = CheckHeaders(a.clusters(i).headers(), at + ".headers"); !e.empty()) {
            return e;
          }
        }
      }
      const auto& rw = a.rewrite();
      if (!rw.uri().empty() && !http::ValidOriginForm(rw.uri())) {
        return ".route.rewrite.uri: \"" + rw.uri() +
               "\" is not a path (it must start with \"/\" and hold no spaces or control bytes)";
      }
      if (!rw.authority().empty() && !http::ParseAuthority(rw.authority())) {
        return ".route.rewrite.authority: \"" + rw.authority() + "\" is not a valid host[:port]";
      }
      if (rw.has_uri_regex() && !NoControlBytes(rw.uri_regex().substitution())) {
        return ".route.rewrite.uri_regex.substitution: CR, LF, NUL and other control bytes are "
               "not allowed";
      }
      break;
    }
    case v1::Route::kRedirect: {
      const auto& r = rp.redirect();
      if (!r.uri().empty() && !http::ValidOriginForm(r.uri())) {
        return ".redirect.uri: \"" + r.uri() +
               "\" is not a path (it must start with \"/\" and hold no spaces or control bytes)";
      }
      if (!r.authority().empty() &&
          (!http::ParseAuthority(r.authority()) || r.authority().find('/') != std::string::npos)) {
        return ".redirect.authority: \"" + r.authority() + "\" is not a valid host[:port]";
      }
      if (!r.scheme().empty() && !ValidScheme(r.scheme())) {
        return ".redirect.scheme: \"" + r.scheme() + "\" is not a URI scheme";
      }
      if (r.port() > 65535) {
        return ".redirect.port: must be 1-65535";
      }
      switch (r.response_code()) {
        case 0:
        case 301:
        case 302:
        case 303:
        case 307:
        case 308:
          break;
        default:
          return ".redirect.response_code: " + std::to_string(r.response_code()) +
                 " is not a redirect status (301, 302, 303, 307 or 308)";
      }
      break;
    }
    case v1::Route::kDirectResponse:
      if (rp.direct_response().status() < 200 || rp.direct_response().status() > 599) {
        return ".direct_response.status: " + std::to_string(rp.direct_response().status()) +
               " is out of range (200-599)";
      }
      break;
    case v1::Route::ACTION_NOT_SET:
      break;
  }
  return {};
}

}  // namespace

void SetMaxRegexProgramSize(int size) { g_max_program_size = size; }
int MaxRegexProgramSize() { return g_max_program_size.load(); }

std::string StringMatcher::Init(const v1::StringMatch& m) {
  ignore_case_ = m.ignore_case();
  switch (m.match_case()) {
    case v1::StringMatch::kExact:
      type_ = Type::kExact;
      value_ = ignore_case_ ? LowerCopy(m.exact()) : m.exact();
      break;
    case v1::StringMatch::kPrefix:
      type_ = Type::kPrefix;
      value_ = ignore_case_ ? LowerCopy(m.prefix()) : m.prefix();
      break;
    case v1::StringMatch::kRegex: {
      type_ = Type::kRegex;
      value_ = m.regex();
      RE2::Options options(RE2::Quiet);
      re_ = std::make_unique<RE2>(value_, options);
      if (!re_->ok()) {
        return "invalid RE2 regular expression \"" + value_ + "\": " + re_->error();
      }
      if (auto err = CheckProgramSize(*re_); !err.empty()) {
        return err;
      }
      break;
    }
    case v1::StringMatch::MATCH_NOT_SET:
      type_ = Type::kNone;
      break;
  }
  return {};
}

bool StringMatcher::Matches(std::string_view v) const {
  switch (type_) {
    case Type::kNone:
      return true;
    case Type::kExact:
      return ignore_case_ ? EqualsIgnoreCase(v, value_) : v == value_;
    case Type::kPrefix:
      return v.size() >= value_.size() &&
             (ignore_case_ ? EqualsIgnoreCase(v.substr(0, value_.size()), value_)
                           : v.substr(0, value_.size()) == value_);
    case Type::kRegex:
      return RE2::FullMatch(re2::StringPiece(v.data(), v.size()), *re_);
  }
  return false;
}

bool Route::Matches(const RequestView& req) const {
  if (port != 0 && req.port != port) {
    return false;
  }
  if (!uri.Matches(req.path) || !method.Matches(req.method) || !scheme.Matches(req.scheme) ||
      !authority.Matches(req.authority)) {
    return false;
  }
  for (const auto& h : headers) {
    auto v = (*req.header)(h.name);
    if (!v || (h.value && !h.value->Matches(*v))) {
      return false;
    }
  }
  for (const auto& h : without_headers) {
    auto v = (*req.header)(h.name);
    if (v && (!h.value || h.value->Matches(*v))) {
      return false;
    }
  }
  for (const auto& [name, m] : query_params) {
    auto v = policy::QueryParameter(req.query, name);
    if (!v || (m && !m->Matches(*v))) {
      return false;
    }
  }
  return true;
}

std::string_view HostWithoutPort(std::string_view authority) {
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    return close == std::string_view::npos ? authority : authority.substr(0, close + 1);
  }
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(':') == colon) {
    return authority.substr(0, colon);
  }
  return authority;
}

bool RouteTable::Init(const v1::RouteTable& proto, std::string* error) {
  name_ = proto.name();
  for (int vi = 0; vi < proto.virtual_hosts_size(); ++vi) {
    const auto& vh_proto = proto.virtual_hosts(vi);
    auto vh = std::make_unique<VirtualHost>();
    vh->name = vh_proto.name();
    std::string vh_path = "route_tables[" + name_ + "].virtual_hosts[" + std::to_string(vi) + "]";
    for (int ri = 0; ri < vh_proto.routes_size(); ++ri) {
      const auto& rp = vh_proto.routes(ri);
      std::string path = vh_path + ".routes[" + std::to_string(ri) + "]";
      Route r;
      r.proto = &rp;
      auto fail = [&](const std::string& field, const std::string& text) {
        *error =
            path + field + ": " + text + (rp.source().empty() ? "" : " (from " + rp.source() + ")");
        return false;
      };
      if (auto wire = CheckRouteWire(rp); !wire.empty()) {
        size_t colon = wire.find(": ");
        return fail(wire.substr(0, colon), wire.substr(colon + 2));
      }
      const auto& m = rp.match();
      for (auto [field, matcher, src] :
           {std::tuple{".match.uri", &r.uri, &m.uri()},
            std::tuple{".match.scheme", &r.scheme, &m.scheme()},
            std::tuple{".match.method", &r.method, &m.method()},
            std::tuple{".match.authority", &r.authority, &m.authority()}}) {
        if (auto err = matcher->Init(*src); !err.empty()) {
          return fail(std::string(field) + ".regex", err);
        }
      }
      auto headers = [&](const auto& list, std::vector<HeaderMatcher>* out,
                         const std::string& field) -> bool {
        for (int i = 0; i < list.size(); ++i) {
          HeaderMatcher hm;
          hm.name = LowerCopy(list[i].name());
          if (hm.name.empty()) {
            return fail(field + "[" + std::to_string(i) + "].name", "must not be empty");
          }
          if (list[i].has_value()) {
            hm.value.emplace();
            if (auto err = hm.value->Init(list[i].value()); !err.empty()) {
              return fail(field + "[" + std::to_string(i) + "].value.regex", err);
            }
          }
          out->push_back(std::move(hm));
        }
        return true;
      };
      if (!headers(m.headers(), &r.headers, ".match.headers") ||
          !headers(m.without_headers(), &r.without_headers, ".match.without_headers")) {
        return false;
      }
      for (int i = 0; i < m.query_params_size(); ++i) {
        std::optional<StringMatcher> sm;
        if (m.query_params(i).has_value()) {
          sm.emplace();
          if (auto err = sm->Init(m.query_params(i).value()); !err.empty()) {
            return fail(".match.query_params[" + std::to_string(i) + "].value.regex", err);
          }
        }
        r.query_params.emplace_back(m.query_params(i).name(), std::move(sm));
      }
      r.port = m.port();
      if (rp.has_fault()) {
        const auto& f = rp.fault();
        if (f.has_delay() && (f.delay().percentage() < 0 || f.delay().percentage() > 100)) {
          return fail(".fault.delay.percentage", "must be within 0-100");
        }
        if (f.has_abort()) {
          if (f.abort().percentage() < 0 || f.abort().percentage() > 100) {
            return fail(".fault.abort.percentage", "must be within 0-100");
          }
          if (f.abort().has_grpc_status()) {
            if (f.abort().grpc_status() > 16) {
              return fail(".fault.abort.grpc_status", "must be a gRPC status code (0-16)");
            }
          } else if (f.abort().http_status() < 200 || f.abort().http_status() > 599) {
            return fail(".fault.abort.http_status", "must be within 200-599");
          }
        }
      }
      for (int i = 0; i < rp.cors().allow_origins_size(); ++i) {
        StringMatcher origin;
        if (auto err = origin.Init(rp.cors().allow_origins(i)); !err.empty()) {
          return fail(".cors.allow_origins[" + std::to_string(i) + "].regex", err);
        }
        r.cors_origins.push_back(std::move(origin));
      }
      switch (rp.action_case()) {
        case v1::Route::kRoute: {
          const auto& action = rp.route();
          if (action.clusters_size() == 0) {
            return fail(".route.clusters", "at least one cluster is required");
          }
          for (const auto& wc : action.clusters()) {
            r.total_weight += wc.weight();  // 64 bits: int32 weights cannot overflow it
          }
          if (r.total_weight == 0) {
            return fail(".route.clusters", "weights sum to 0");
          }
          r.retry = policy::RetryPolicy(action.retry_policy());
          if (action.has_timeout()) {
            auto ms = policy::ToMillis(action.timeout());
            if (ms.count() > 0) {
              r.timeout = ms;
            }
          }
          for (int i = 0; i < action.mirrors_size(); ++i) {
            if (action.mirrors(i).percentage() < 0 || action.mirrors(i).percentage() > 100) {
              return fail(".route.mirrors[" + std::to_string(i) + "].percentage",
                          "must be within 0-100");
            }
          }
          if (action.rewrite().has_uri_regex()) {
            r.rewrite_regex =
                std::make_unique<RE2>(action.rewrite().uri_regex().pattern(), RE2::Quiet);
            if (!r.rewrite_regex->ok()) {
              return fail(".route.rewrite.uri_regex.pattern",
                          "invalid RE2 regular expression: " + r.rewrite_regex->error());
            }
            if (auto err = CheckProgramSize(*r.rewrite_regex); !err.empty()) {
              return fail(".route.rewrite.uri_regex.pattern", err);
            }
          }
          break;
        }
        case v1::Route::kRedirect:
        case v1::Route::kDirectResponse:
          break;
        case v1::Route::ACTION_NOT_SET:
          return fail("", "one of route, redirect or direct_response is required");
      }
      vh->routes.push_back(std::move(r));
    }
    for (const auto& domain_raw : vh_proto.domains()) {
      std::string domain = LowerCopy(domain_raw);
      if (domain == "*") {
        if (any_ == nullptr) {
          any_ = vh.get();
        }
      } else if (domain.size() > 1 && domain[0] == '*') {
        suffixes_.emplace_back(domain.substr(1), vh.get());
      } else if (!domain.empty()) {
        exact_.emplace(domain, vh.get());
      }
    }
    hosts_.push_back(std::move(vh));
  }
  std::stable_sort(suffixes_.begin(), suffixes_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return true;
}

const VirtualHost* RouteTable::FindVirtualHost(std::string_view authority) const {
  // Lower-cased on the stack for the common lengths; any length the parser accepts works.
  char stack_buf[256];
  std::string heap_buf;
  char* buf = stack_buf;
  if (authority.size() > sizeof stack_buf) {
    heap_buf.resize(authority.size());
    buf = heap_buf.data();
  }
  for (size_t i = 0; i < authority.size(); ++i) {
    buf[i] = Lower(authority[i]);
  }
  std::string_view lower(buf, authority.size());
  if (!exact_.empty()) {
    auto it = exact_.find(lower);
    if (it != exact_.end()) {
      return it->second;
    }
  }
  std::string_view host = HostWithoutPort(lower);
  if (host.size() != lower.size() && !exact_.empty()) {
    auto it = exact_.find(host);
    if (it != exact_.end()) {
      return it->second;
    }
  }
  for (const auto& [suffix, vh] : suffixes_) {
    if (host.size() > suffix.size() && host.substr(host.size() - suffix.size()) == suffix) {
      return vh;
    }
  }
  return any_;
}

size_t RouteTable::route_count() const {
  size_t n = 0;
  for (const auto& vh : hosts_) {
    n += vh->routes.size();
  }
  return n;
}

}  // namespace skiff::router

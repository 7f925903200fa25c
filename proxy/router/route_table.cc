#include "proxy/router/route_table.h"

#include <algorithm>
#include <atomic>

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

// Finds `name` in a query string "a=1&b=2"; value is empty for "a" or "a=".
std::optional<std::string_view> QueryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (key == name) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
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
    auto v = QueryParam(req.query, name);
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
          if (f.abort().http_status() < 200 || f.abort().http_status() > 599) {
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
            r.total_weight += wc.weight();
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
  char buf[256];
  if (authority.size() > sizeof buf) {
    return any_;
  }
  for (size_t i = 0; i < authority.size(); ++i) {
    buf[i] = Lower(authority[i]);
  }
  std::string_view lower(buf, authority.size());
  if (!exact_.empty()) {
    auto it = exact_.find(std::string(lower));
    if (it != exact_.end()) {
      return it->second;
    }
  }
  std::string_view host = HostWithoutPort(lower);
  if (host.size() != lower.size() && !exact_.empty()) {
    auto it = exact_.find(std::string(host));
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

#include "proxy/policy/cors.h"

namespace skiff::policy {

namespace {
template <typename List>
std::string Join(const List& list) {
  std::string out;
  for (const auto& s : list) {
    if (!out.empty()) {
      out += ',';
    }
    out += s;
  }
  return out;
}

void Field(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}
}  // namespace

bool IsPreflight(std::string_view method, bool has_request_method_header) {
  return method == "OPTIONS" && has_request_method_header;
}

std::string PreflightFields(const v1::CorsPolicy& cors, std::string_view origin) {
  std::string out;
  Field(&out, "access-control-allow-origin", origin);
  if (cors.allow_methods_size() > 0) {
    Field(&out, "access-control-allow-methods", Join(cors.allow_methods()));
  }
  if (cors.allow_headers_size() > 0) {
    Field(&out, "access-control-allow-headers", Join(cors.allow_headers()));
  }
  if (cors.has_max_age()) {
    Field(&out, "access-control-max-age", std::to_string(cors.max_age().seconds()));
  }
  if (cors.allow_credentials()) {
    Field(&out, "access-control-allow-credentials", "true");
  }
  return out;
}

void AppendCorsResponseFields(const v1::CorsPolicy& cors, std::string_view origin,
                              std::string* fields) {
  Field(fields, "access-control-allow-origin", origin);
  if (cors.allow_credentials()) {
    Field(fields, "access-control-allow-credentials", "true");
  }
  if (cors.expose_headers_size() > 0) {
    Field(fields, "access-control-expose-headers", Join(cors.expose_headers()));
  }
}

}  // namespace skiff::policy

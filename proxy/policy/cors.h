#pragma once
// CORS as Istio's corsPolicy (Envoy's CORS filter), over the route's policy. Whether an
// origin is allowed is decided by the route's compiled matchers; these functions say what
// the proxy answers and adds.
#include <string>
#include <string_view>

#include "skiff/v1/config.pb.h"

namespace skiff::policy {

// A preflight: OPTIONS with Access-Control-Request-Method.
bool IsPreflight(std::string_view method, bool has_request_method_header);

// The header fields of the proxy's own answer to a preflight from the allowed `origin`.
std::string PreflightFields(const v1::CorsPolicy& cors, std::string_view origin);

// Appends the fields an actual response to the allowed `origin` gets.
void AppendCorsResponseFields(const v1::CorsPolicy& cors, std::string_view origin,
                              std::string* fields);

}  // namespace skiff::policy

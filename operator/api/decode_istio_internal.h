#pragma once
// What the Istio kinds' decoders (decode_*.cc) share; used by those files only.
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "operator/api/decode_internal.h"

namespace skiff::api {

// Counts and weights are int32 in Istio's API.
constexpr int64_t kMaxWeight = std::numeric_limits<int32_t>::max();

bool HasCrLfNul(std::string_view s);

// A duration of at least 1ms, as Istio's ValidateDuration.
std::optional<Duration> PositiveDuration(Reader& r, std::string_view field);

// Port protocols as Istio parses them, case-insensitively (Gateway servers, ServiceEntry
// ports): `upper` is the protocol in upper case.
bool IsIstioPortProtocol(std::string_view upper);
// HTTP, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY (upper case).
bool IsIstioHttpProtocol(std::string_view upper);
std::string UpperAscii(std::string s);

void CheckLabels(const Labels& labels, const std::string& path, Messages& msgs);
void CheckExportTo(const std::vector<std::string>& export_to, const std::string& path,
                   Messages& msgs);

// ---- decode_http_route.cc ----

// What a match holds that the VirtualService checks as a whole.
struct MatchFacts {
  bool jwt_claims = false;
};

// What decides the rules for one HTTP route.
struct RouteContext {
  bool in_delegate = false;  // the VirtualService is a delegate (has no hosts)
  MatchFacts facts;
};

HTTPRoute DecodeHttpRoute(const nlohmann::json& j, const std::string& path, Messages& msgs,
                          RouteContext* ctx);
Destination DecodeDestination(const nlohmann::json& j, const std::string& path, Messages& msgs);
// An RE2 expression, as Istio checks regex matches.
void CheckRegex(const std::string& re_text, const std::string& path, Messages& msgs);
// An authority as "host[:port]"; an empty string when valid, else why not.
std::string ValidateAuthority(std::string_view authority);
// spec.gateways and match[].gateways.
void CheckGatewayNames(const std::vector<std::string>& names, const std::string& path,
                       Messages& msgs);

// ---- decode_http_actions.cc ----

HTTPRedirect DecodeRedirect(const nlohmann::json& j, const std::string& path, Messages& msgs);
HTTPDirectResponse DecodeDirectResponse(const nlohmann::json& j, const std::string& path,
                                        Messages& msgs);
HTTPRewrite DecodeRewrite(const nlohmann::json& j, const std::string& path, Messages& msgs);

}  // namespace skiff::api

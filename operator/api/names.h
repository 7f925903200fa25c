#pragma once
// Name and host-name rules shared by validation and translation. The host rules are
// Istio's (pkg/config/validation), so that skiff and istiod agree on what is valid.
#include <string>
#include <string_view>

#include "operator/api/types.h"

namespace skiff::api {

bool IsDns1123Label(std::string_view s);      // "catalog" (lower case, as Kubernetes names)
bool IsDns1123Subdomain(std::string_view s);  // "catalog.v1"
// A DNS label as Istio checks hosts and subset names: letters of either case.
bool IsDns1123LabelAnyCase(std::string_view s);
bool IsValidIp(std::string_view s);        // IPv4 or IPv6, no zone, no brackets
bool IsValidIpOrCidr(std::string_view s);  // an IP, or "IP/prefix-length" (0-32, 0-128)
// An FQDN with an optional wildcard first label: "*", "*.example.com", "*example.com",
// "*-x.example.com", "catalog", "a.b.c."; the top-level label is not all digits. Returns an
// error text or empty.
std::string ValidateWildcardDomain(std::string_view host);
// The same, without wildcards (legacy gateway names "gw.ns.svc.cluster.local").
std::string ValidateFqdn(std::string_view host);
// VirtualService / DestinationRule hosts: ValidateWildcardDomain (kept under its old name).
std::string ValidateHost(std::string_view host);
// Gateway server hosts: "[ns/]host" where ns is "*", "." or a namespace, the host is "*" or
// has a dot (no short names), and may be an IP address.
std::string ValidateGatewayHost(std::string_view host);
// An HTTP header name: an RFC 9110 token. `allow_pseudo`: with one leading ':' (":authority").
bool IsValidHeaderName(std::string_view s, bool allow_pseudo = false);
// A header value as Envoy's header formatter accepts it: "%%" is a literal percent and every
// other '%' opens a "%COMMAND%" or "%COMMAND(args)%"; no CR, LF or NUL. Returns an error text
// or empty.
std::string ValidateHeaderValue(std::string_view value);
// Kubernetes label keys ("[prefix/]name") and values. Returns an error text or empty.
std::string ValidateLabelKey(std::string_view key);
std::string ValidateLabelValue(std::string_view value);

}  // namespace skiff::api

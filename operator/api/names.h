#pragma once
// Name and host-name rules shared by validation and translation.
#include <string>
#include <string_view>

namespace skiff::api {

bool IsDns1123Label(std::string_view s);      // "catalog"
bool IsDns1123Subdomain(std::string_view s);  // "catalog.v1"
// A host as Istio accepts it in VirtualService / DestinationRule / Gateway hosts: "*",
// "*.example.com", "catalog", "catalog.default.svc.cluster.local". Returns an error text
// or empty.
std::string ValidateHost(std::string_view host);
// Gateway server hosts: "[ns/]host" where ns is "*", "." or a namespace.
std::string ValidateGatewayHost(std::string_view host);
bool IsValidHeaderName(std::string_view s);

}  // namespace skiff::api

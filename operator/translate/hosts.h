#pragma once
// Host names as Istio reads them: short names resolved in a namespace, wildcard matches and
// intersections, gateway references ("name", "ns/name", "name.ns.svc.cluster.local") and
// cluster names. Inline: they run for every route of every proxy group.
#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include "common/strings.h"
#include "operator/translate/support.h"
#include "operator/translate/translate.h"

namespace skiff::translate {

// The namespace and name a VirtualService gateway reference names, as Istio resolves them:
// "name" and "./name" in the VirtualService's namespace `ns`, "ns/name", and the legacy
// FQDN form "name.ns.svc.cluster.local" (or "name.ns"). Not for "mesh".
inline std::pair<std::string_view, std::string_view> GatewayRefParts(std::string_view ref,
                                                                     std::string_view ns) {
  auto slash = ref.find('/');
  if (slash != std::string_view::npos) {
    std::string_view ref_ns = ref.substr(0, slash);
    return {ref_ns == "." ? ns : ref_ns, ref.substr(slash + 1)};
  }
  auto dot = ref.find('.');
  if (dot == std::string_view::npos) {
    return {ns, ref};
  }
  std::string_view rest = ref.substr(dot + 1);
  return {rest.substr(0, rest.find('.')), ref.substr(0, dot)};
}

// Does a VirtualService gateway reference name `key` ("ns/name" or "mesh")?
inline bool RefersTo(std::string_view ref, std::string_view ns, std::string_view key) {
  if (ref == "mesh" || key == "mesh") {
    return ref == key;
  }
  auto [ref_ns, ref_name] = GatewayRefParts(ref, ns);
  return key.size() == ref_ns.size() + 1 + ref_name.size() && StartsWith(key, ref_ns) &&
         key[ref_ns.size()] == '/' && EndsWith(key, ref_name);
}

// "ns/name" for a gateway reference ("mesh" stays "mesh").
inline std::string GatewayKey(std::string_view ref, std::string_view ns) {
  if (ref == "mesh") {
    return "mesh";
  }
  auto [ref_ns, ref_name] = GatewayRefParts(ref, ns);
  std::string key;
  key.reserve(ref_ns.size() + 1 + ref_name.size());
  key.append(ref_ns).append("/").append(ref_name);
  return key;
}

// ResolveHost without allocating: `host` itself, or the FQDN written to `*buf`.
inline std::string_view ResolveHostView(std::string_view host, std::string_view ns,
                                        std::string* buf) {
  if (host == "*" || host.find('.') != std::string_view::npos) {
    return host;
  }
  constexpr std::string_view kSuffix = kDomainSuffix;
  buf->resize(host.size() + 1 + ns.size() + 1 + kSuffix.size());
  char* p = buf->data();
  p = std::copy(host.begin(), host.end(), p);
  *p++ = '.';
  p = std::copy(ns.begin(), ns.end(), p);
  *p++ = '.';
  std::copy(kSuffix.begin(), kSuffix.end(), p);
  return *buf;
}

inline void AppendClusterName(std::string* out, uint32_t port, std::string_view subset,
                              std::string_view fqdn) {
  out->reserve(out->size() + 21 + subset.size() + fqdn.size());
  out->append("outbound|");
  AppendNumber(out, port);
  out->push_back('|');
  out->append(subset);
  out->push_back('|');
  out->append(fqdn);
}

// Does `host` (no wildcard) match the wildcard or exact `pattern`?
inline bool HostMatches(std::string_view host, std::string_view pattern) {
  if (pattern == "*") {
    return true;
  }
  if (StartsWith(pattern, "*")) {
    return EndsWith(host, pattern.substr(1)) && host.size() > pattern.size() - 1;
  }
  return host == pattern;
}

// IntersectHosts as a view of one of its arguments.
inline std::string_view IntersectHostsView(std::string_view vs_host, std::string_view server_host) {
  bool vs_wild = StartsWith(vs_host, "*");
  bool server_wild = StartsWith(server_host, "*");
  if (!vs_wild && !server_wild) {
    return vs_host == server_host ? vs_host : std::string_view();
  }
  if (!vs_wild) {
    return HostMatches(vs_host, server_host) ? vs_host : std::string_view();
  }
  if (!server_wild) {
    return HostMatches(server_host, vs_host) ? server_host : std::string_view();
  }
  // Both wildcards: the more specific one, if one contains the other.
  if (EndsWith(vs_host.substr(1), server_host.substr(1))) {
    return vs_host;
  }
  if (EndsWith(server_host.substr(1), vs_host.substr(1))) {
    return server_host;
  }
  return {};
}

}  // namespace skiff::translate

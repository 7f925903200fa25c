#include "proxy/capture/rules.h"

#include <arpa/inet.h>

#include <sstream>

#include "common/strings.h"

namespace skiff::capture {

namespace {

bool IsV6(const std::string& cidr) { return cidr.find(':') != std::string::npos; }

bool ValidCidr(const std::string& cidr) {
  auto slash = cidr.find('/');
  std::string addr = cidr.substr(0, slash);
  unsigned char buf[16];
  int family = IsV6(addr) ? AF_INET6 : AF_INET;
  if (::inet_pton(family, addr.c_str(), buf) != 1) {
    return false;
  }
  if (slash == std::string::npos) {
    return true;
  }
  std::string bits = cidr.substr(slash + 1);
  if (bits.empty() || bits.size() > 3) {
    return false;
  }
  int n = 0;
  for (char c : bits) {
    if (c < '0' || c > '9') {
      return false;
    }
    n = n * 10 + (c - '0');
  }
  return n <= (family == AF_INET6 ? 128 : 32);
}

std::vector<std::string> Items(const std::string& list) {
  std::vector<std::string> out;
  for (auto item : Split(list, ',')) {
    size_t b = item.find_first_not_of(" \t");
    size_t e = item.find_last_not_of(" \t");
    if (b != std::string::npos) {
      out.push_back(item.substr(b, e - b + 1));
    }
  }
  return out;
}

std::optional<uint16_t> Port(const std::string& s) {
  if (s.empty() || s.size() > 5) {
    return std::nullopt;
  }
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v == 0 || v > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(v);
}

}  // namespace

std::optional<std::string> ParsePorts(const std::string& list, std::vector<uint16_t>* out) {
  out->clear();
  for (const auto& item : Items(list)) {
    auto p = Port(item);
    if (!p) {
      return "\"" + item + "\" is not a port (1-65535)";
    }
    out->push_back(*p);
  }
  return std::nullopt;
}

std::optional<std::string> ParseInboundPorts(const std::string& list,
                                             std::vector<std::string>* out) {
  out->clear();
  for (const auto& item : Items(list)) {
    if (item != "*" && !Port(item)) {
      return "\"" + item + "\" is not a port (1-65535) or *";
    }
    out->push_back(item);
  }
  return std::nullopt;
}

std::optional<std::string> ParseRanges(const std::string& list, std::vector<std::string>* out) {
  out->clear();
  for (const auto& item : Items(list)) {
    if (item != "*" && !ValidCidr(item)) {
      return "\"" + item + "\" is not an IP range (CIDR) or *";
    }
    out->push_back(item);
  }
  return std::nullopt;
}

std::optional<std::string> ApplyAnnotations(const std::map<std::string, std::string>& a,
                                            CaptureOptions* o) {
  const std::string prefix = "traffic.sidecar.istio.io/";
  auto get = [&](const char* name) -> const std::string* {
    auto it = a.find(prefix + name);
    return it == a.end() ? nullptr : &it->second;
  };
  auto wrap = [&](const char* name, std::optional<std::string> err) -> std::optional<std::string> {
    if (err) {
      return "annotation " + prefix + name + ": " + *err;
    }
    return std::nullopt;
  };
  if (const auto* v = get("includeOutboundIPRanges")) {
    if (auto e = wrap("includeOutboundIPRanges", ParseRanges(*v, &o->include_outbound_ranges))) {
      return e;
    }
  }
  if (const auto* v = get("excludeOutboundIPRanges")) {
    if (auto e = wrap("excludeOutboundIPRanges", ParseRanges(*v, &o->exclude_outbound_ranges))) {
      return e;
    }
  }
  if (const auto* v = get("includeInboundPorts")) {
    if (auto e = wrap("includeInboundPorts", ParseInboundPorts(*v, &o->include_inbound_ports))) {
      return e;
    }
  }
  if (const auto* v = get("excludeInboundPorts")) {
    if (auto e = wrap("excludeInboundPorts", ParsePorts(*v, &o->exclude_inbound_ports))) {
      return e;
    }
  }
  if (const auto* v = get("excludeOutboundPorts")) {
    if (auto e = wrap("excludeOutboundPorts", ParsePorts(*v, &o->exclude_outbound_ports))) {
      return e;
    }
  }
  return std::nullopt;
}

std::optional<std::string> ParseAnnotationsFile(const std::string& text,
                                                std::map<std::string, std::string>* out) {
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) {
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0 || line.size() < eq + 3 || line[eq + 1] != '"' ||
        line.back() != '"') {
      return "line " + std::to_string(n) + ": expected key=\"value\"";
    }
    std::string value;
    for (size_t i = eq + 2; i + 1 < line.size(); ++i) {
      if (line[i] == '\\' && i + 2 < line.size()) {
        char c = line[++i];
        value += c == 'n' ? '\n' : c == 't' ? '\t' : c;
      } else {
        value += line[i];
      }
    }
    (*out)[line.substr(0, eq)] = value;
  }
  return std::nullopt;
}

std::string RestoreInput(const CaptureOptions& o, bool ipv6) {
  const std::string loopback = ipv6 ? "::1/128" : "127.0.0.1/32";
  // Inbound traffic the sidecar hands to the app comes from this address; it must not be
  // captured again (Istio's inbound passthrough source).
  const std::string passthrough = ipv6 ? "::6/128" : "127.0.0.6/32";
  const std::string uid = std::to_string(o.proxy_uid);
  const std::string gid = std::to_string(o.proxy_gid);
  std::ostringstream r;
  r << "*nat\n";
  for (const char* chain : kChains) {
    r << ":" << chain << " - [0:0]\n";
  }
  // Inbound.
  for (uint16_t p : o.proxy_ports) {
    r << "-A SKIFF_INBOUND -p tcp --dport " << p << " -j RETURN\n";
  }
  bool all_inbound = false;
  for (const auto& p : o.include_inbound_ports) {
    all_inbound = all_inbound || p == "*";
  }
  if (all_inbound) {
    for (uint16_t p : o.exclude_inbound_ports) {
      r << "-A SKIFF_INBOUND -p tcp --dport " << p << " -j RETURN\n";
    }
    r << "-A SKIFF_INBOUND -p tcp -j SKIFF_IN_REDIRECT\n";
  } else {
    for (const auto& p : o.include_inbound_ports) {
      r << "-A SKIFF_INBOUND -p tcp --dport " << p << " -j SKIFF_IN_REDIRECT\n";
    }
  }
  r << "-A SKIFF_IN_REDIRECT -p tcp -j REDIRECT --to-ports " << o.inbound_port << "\n";
  // Outbound.
  r << "-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports " << o.outbound_port << "\n";
  r << "-A SKIFF_OUTPUT -o lo -s " << passthrough << " -j RETURN\n";
  for (const auto& [kind, id] : {std::pair{"--uid-owner", uid}, std::pair{"--gid-owner", gid}}) {
    // The proxy calling its own pod's address over loopback: that is inbound traffic.
    r << "-A SKIFF_OUTPUT -o lo ! -d " << loopback << " -m owner " << kind << " " << id
      << " -j SKIFF_IN_REDIRECT\n";
    // The app's loopback traffic stays local; the proxy's own traffic is never captured.
    r << "-A SKIFF_OUTPUT -o lo -m owner ! " << kind << " " << id << " -j RETURN\n";
    r << "-A SKIFF_OUTPUT -m owner " << kind << " " << id << " -j RETURN\n";
  }
  r << "-A SKIFF_OUTPUT -d " << loopback << " -j RETURN\n";
  for (uint16_t p : o.exclude_outbound_ports) {
    r << "-A SKIFF_OUTPUT -p tcp --dport " << p << " -j RETURN\n";
  }
  for (const auto& cidr : o.exclude_outbound_ranges) {
    if (IsV6(cidr) == ipv6) {
      r << "-A SKIFF_OUTPUT -d " << cidr << " -j RETURN\n";
    }
  }
  bool all_outbound = false;
  for (const auto& cidr : o.include_outbound_ranges) {
    all_outbound = all_outbound || cidr == "*";
  }
  if (all_outbound) {
    r << "-A SKIFF_OUTPUT -j SKIFF_REDIRECT\n";
  } else {
    for (const auto& cidr : o.include_outbound_ranges) {
      if (IsV6(cidr) == ipv6) {
        r << "-A SKIFF_OUTPUT -d " << cidr << " -j SKIFF_REDIRECT\n";
      }
    }
  }
  r << "-A PREROUTING -p tcp -j SKIFF_INBOUND\n";
  r << "-A OUTPUT -p tcp -j SKIFF_OUTPUT\n";
  r << "COMMIT\n";
  return r.str();
}

std::vector<std::vector<std::string>> CleanupCommands() {
  std::vector<std::vector<std::string>> out;
  out.push_back({"-t", "nat", "-D", "PREROUTING", "-p", "tcp", "-j", "SKIFF_INBOUND"});
  out.push_back({"-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "SKIFF_OUTPUT"});
  for (const char* chain : kChains) {
    out.push_back({"-t", "nat", "-F", chain});
  }
  for (const char* chain : kChains) {
    out.push_back({"-t", "nat", "-X", chain});
  }
  return out;
}

}  // namespace skiff::capture

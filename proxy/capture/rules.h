#pragma once
// The nat rules that redirect a pod's TCP traffic to its sidecar, equivalent to Istio's
// istio-iptables: outbound connections to port 15001, inbound ones to 15006, the proxy's
// own traffic (uid/gid 1337) and loopback left alone, with the include/exclude lists of
// Istio's traffic.sidecar.istio.io annotations. Pure: it makes iptables-restore input and
// the commands that remove the rules; init_main.cc applies them.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace skiff::capture {

struct CaptureOptions {
  uint32_t proxy_uid = 1337;
  uint32_t proxy_gid = 1337;
  uint16_t outbound_port = 15001;  // the sidecar's outbound listener
  uint16_t inbound_port = 15006;   // its inbound listener
  // Outbound destinations captured: "*" for all, else CIDRs; excluded CIDRs win.
  std::vector<std::string> include_outbound_ranges{"*"};
  std::vector<std::string> exclude_outbound_ranges;
  std::vector<uint16_t> exclude_outbound_ports;
  // Inbound ports captured: "*" for all, else ports; excluded ports win over "*".
  std::vector<std::string> include_inbound_ports{"*"};
  std::vector<uint16_t> exclude_inbound_ports;
  // The sidecar's own ports are never captured inbound (readiness, stats, HBONE).
  std::vector<uint16_t> proxy_ports{15008, 15020, 15021, 15090};
};

// Chains the rules live in, all in the nat table.
inline constexpr const char* kChains[] = {"SKIFF_INBOUND", "SKIFF_IN_REDIRECT", "SKIFF_OUTPUT",
                                          "SKIFF_REDIRECT"};

// Reads the Istio annotations (traffic.sidecar.istio.io/includeOutboundIPRanges,
// excludeOutboundIPRanges, includeInboundPorts, excludeInboundPorts, excludeOutboundPorts)
// into `options`. Returns an error naming the annotation and the bad value, or nullopt.
std::optional<std::string> ApplyAnnotations(const std::map<std::string, std::string>& annotations,
                                            CaptureOptions* options);
// Parses a downward-API annotations file (lines of key="value", value escaped as Go's
// %q) into a map; returns an error or nullopt.
std::optional<std::string> ParseAnnotationsFile(const std::string& text,
                                                std::map<std::string, std::string>* out);

// Comma-separated lists as the flags and annotations give them. Return an error or nullopt.
std::optional<std::string> ParsePorts(const std::string& list, std::vector<uint16_t>* out);
std::optional<std::string> ParseInboundPorts(const std::string& list,
                                             std::vector<std::string>* out);
std::optional<std::string> ParseRanges(const std::string& list, std::vector<std::string>* out);

// iptables-restore input (nat table, to be applied with --noflush) for IPv4 or IPv6.
std::string RestoreInput(const CaptureOptions& options, bool ipv6);

// Arguments of the iptables commands (without the binary) that remove the rules: the jumps
// from PREROUTING and OUTPUT, then the chains. Each may fail when nothing is there.
std::vector<std::vector<std::string>> CleanupCommands();

}  // namespace skiff::capture

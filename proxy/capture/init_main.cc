// skiff-init: the init container of an injected pod. Writes the nat rules that send the
// pod's TCP traffic through its sidecar (see rules.h), in the network namespace it runs in.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "proxy/capture/rules.h"

extern char** environ;

namespace {

struct Result {
  int status = -1;
  std::string output;
};

// Runs argv (PATH lookup) with `input` on stdin; returns its exit status and output.
Result Run(const std::vector<std::string>& argv, const std::string& input = "") {
  Result r;
  int in[2];
  int out[2];
  if (::pipe(in) != 0 || ::pipe(out) != 0) {
    r.output = "pipe failed";
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  std::vector<char*> args;
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    r.output = argv[0] + ": cannot run it";
    return r;
  }
  size_t off = 0;
  while (off < input.size()) {
    ssize_t n = ::write(in[1], input.data() + off, input.size() - off);
    if (n <= 0) {
      break;
    }
    off += static_cast<size_t>(n);
  }
  ::close(in[1]);
  char buf[4096];
  while (true) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

bool Exists(const std::string& binary) {
  return Run({"sh", "-c", "command -v " + binary + " >/dev/null"}).status == 0;
}

// iptables-nft or iptables-legacy: the one that already holds rules, else nft (as
// istio-iptables decides).
std::string DetectBackend() {
  for (const char* backend : {"legacy", "nft"}) {
    std::string save = std::string("iptables-") + backend + "-save";
    if (!Exists(save)) {
      continue;
    }
    Result r = Run({save});
    if (r.status == 0 && r.output.find("\n-A ") != std::string::npos) {
      return backend;
    }
  }
  return Exists("iptables-nft") ? "nft" : "legacy";
}

}  // namespace

int main(int argc, char** argv) {
  skiff::capture::CaptureOptions o;
  int64_t uid = o.proxy_uid;
  int64_t gid = o.proxy_gid;
  int64_t outbound = o.outbound_port;
  int64_t inbound = o.inbound_port;
  std::string include_ranges = "*";
  std::string exclude_ranges;
  std::string include_inbound = "*";
  std::string exclude_inbound;
  std::string exclude_outbound_ports;
  std::string annotations_file;
  std::string backend = "auto";
  std::string ipv6 = "auto";
  bool dry_run = false;
  bool cleanup = false;
  skiff::FlagSet flags("skiff-init",
                       "Redirects this network namespace's TCP traffic to the skiff sidecar, as "
                       "Istio's istio-iptables: outbound to --outbound-port, inbound to "
                       "--inbound-port, the proxy's own traffic (--proxy-uid/--proxy-gid) and "
                       "loopback untouched. Idempotent.");
  flags.AddInt("proxy-uid", &uid, 0, 4294967294, "uid of the proxy, never captured (1337)");
  flags.AddInt("proxy-gid", &gid, 0, 4294967294, "gid of the proxy, never captured (1337)");
  flags.AddInt("outbound-port", &outbound, 1, 65535, "the sidecar's outbound port (15001)");
  flags.AddInt("inbound-port", &inbound, 1, 65535, "the sidecar's inbound port (15006)");
  flags.AddString("include-outbound-ip-ranges,i", &include_ranges,
                  "outbound destinations to capture: * or CIDRs (default *)", "RANGES");
  flags.AddString("exclude-outbound-ip-ranges,x", &exclude_ranges,
                  "outbound destinations never captured", "RANGES");
  flags.AddString("include-inbound-ports,b", &include_inbound,
                  "inbound ports to capture: * or ports (default *)", "PORTS");
  flags.AddString("exclude-inbound-ports,d", &exclude_inbound, "inbound ports never captured",
                  "PORTS");
  flags.AddString("exclude-outbound-ports,o", &exclude_outbound_ports,
                  "outbound ports never captured", "PORTS");
  flags.AddString("annotations-file", &annotations_file,
                  "the pod's annotations (a downward-API file); Istio's "
                  "traffic.sidecar.istio.io/* annotations there override the flags",
                  "FILE");
  flags.AddCustom(
      "iptables-backend",
      [&backend](std::string_view v) -> std::optional<std::string> {
        if (v != "auto" && v != "nft" && v != "legacy") {
          return "expected auto, nft or legacy";
        }
        backend = std::string(v);
        return std::nullopt;
      },
      "iptables-nft or iptables-legacy (auto: the one holding rules, else nft)", "BACKEND");
  flags.AddCustom(
      "ipv6",
      [&ipv6](std::string_view v) -> std::optional<std::string> {
        if (v != "auto" && v != "on" && v != "off") {
          return "expected auto, on or off";
        }
        ipv6 = std::string(v);
        return std::nullopt;
      },
      "also write IPv6 rules (auto: when ip6tables is there)", "auto|on|off");
  flags.AddBool("dry-run", &dry_run, "print the rules instead of applying them");
  flags.AddBool("cleanup", &cleanup, "remove the rules instead");
  if (auto code = flags.Parse(argc, argv)) {
    return *code;
  }
  o.proxy_uid = static_cast<uint32_t>(uid);
  o.proxy_gid = static_cast<uint32_t>(gid);
  o.outbound_port = static_cast<uint16_t>(outbound);
  o.inbound_port = static_cast<uint16_t>(inbound);
  auto check = [](const char* flag, std::optional<std::string> err) {
    if (err) {
      std::cerr << "skiff-init: --" << flag << ": " << *err << "\n";
      std::exit(skiff::kExitUsage);
    }
  };
  check("include-outbound-ip-ranges",
        skiff::capture::ParseRanges(include_ranges, &o.include_outbound_ranges));
  check("exclude-outbound-ip-ranges",
        skiff::capture::ParseRanges(exclude_ranges, &o.exclude_outbound_ranges));
  check("include-inbound-ports",
        skiff::capture::ParseInboundPorts(include_inbound, &o.include_inbound_ports));
  check("exclude-inbound-ports",
        skiff::capture::ParsePorts(exclude_inbound, &o.exclude_inbound_ports));
  check("exclude-outbound-ports",
        skiff::capture::ParsePorts(exclude_outbound_ports, &o.exclude_outbound_ports));
  if (!annotations_file.empty()) {
    std::ifstream f(annotations_file);
    if (!f) {
      std::cerr << "skiff-init: --annotations-file: cannot read " << annotations_file << "\n";
      return 1;
    }
    std::stringstream ss;
    ss << f.rdbuf();
    std::map<std::string, std::string> annotations;
    if (auto err = skiff::capture::ParseAnnotationsFile(ss.str(), &annotations)) {
      std::cerr << "skiff-init: " << annotations_file << ": " << *err << "\n";
      return 1;
    }
    if (auto err = skiff::capture::ApplyAnnotations(annotations, &o)) {
      std::cerr << "skiff-init: " << *err << "\n";
      return 1;
    }
  }
  if (backend == "auto" && !dry_run) {
    backend = DetectBackend();
  } else if (backend == "auto") {
    backend = "nft";
  }
  bool with_v6 = ipv6 == "on" || (ipv6 == "auto" && Exists("ip6tables-" + backend));
  struct Family {
    bool v6;
    std::string tool;
  };
  std::vector<Family> families{{false, "iptables-" + backend}};
  if (with_v6) {
    families.push_back({true, "ip6tables-" + backend});
  }
  if (dry_run) {
    for (const auto& f : families) {
      std::cout << "# " << f.tool << "-restore --noflush\n"
                << skiff::capture::RestoreInput(o, f.v6);
    }
    return 0;
  }
  for (const auto& f : families) {
    // Remove what an earlier run left (idempotent); each jump may be there more than once.
    for (const auto& args : skiff::capture::CleanupCommands()) {
      std::vector<std::string> cmd{f.tool};
      cmd.insert(cmd.end(), args.begin(), args.end());
      for (int i = 0; i < 16 && Run(cmd).status == 0 && args[2] == "-D"; ++i) {
      }
    }
    if (cleanup) {
      continue;
    }
    Result r = Run({f.tool + "-restore", "--noflush"}, skiff::capture::RestoreInput(o, f.v6));
    if (r.status != 0) {
      std::cerr << "skiff-init: " << f.tool << "-restore failed (exit " << r.status
                << "): " << r.output;
      return 1;
    }
  }
  std::cout << (cleanup ? "skiff-init: capture rules removed (" : "skiff-init: capture rules ")
            << (cleanup ? "" : "written (") << "iptables-" << backend
            << (with_v6 ? ", IPv4 and IPv6)\n" : ", IPv4)\n");
  return 0;
}

"""Pods as network namespaces, for tests of transparent capture: each pod gets its own
namespace with an address in 198.18.0.0/15 (RFC 2544's benchmarking range, used here only
inside the namespaces these tests make) on a veth to a shared bridge namespace; there is
no default route anywhere, so nothing can leave the machine. Extra routes send Service
ClusterIPs (also in that range) into the pod's veth, where capture takes them.

A pod may have its own /etc/hosts (`hosts`, as cluster DNS would answer), written to
/etc/netns/<namespace>/hosts, which `ip netns exec` mounts over /etc/hosts for what runs in
the pod, so apps reach Services by name with no change.

Everything made is recorded and removed by Cluster.close(): namespaces (which take their
interfaces and processes' sockets with them), their /etc/netns directories and the
processes started in them, by pid.
"""
import os
import signal
import subprocess
import time
import uuid

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by any uid (the pyenv one lives under /root)


def run(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


class Pod:
    def __init__(self, cluster, name, ip):
        self.cluster = cluster
        self.name = name
        self.ns = f"{cluster.prefix}-{name}"
        self.ip = ip

    def exec(self, *args, uid=None, **kw):
        """argv to run a command in this pod (as `uid` when given)."""
        argv = ["ip", "netns", "exec", self.ns]
        if uid is not None:
            argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return argv + list(args)

    def run(self, *args, uid=None, timeout=60, check=False):
        return subprocess.run(self.exec(*args, uid=uid), capture_output=True, text=True,
                              timeout=timeout, check=check)

    def start(self, *args, uid=None, log=None):
        p = subprocess.Popen(self.exec(*args, uid=uid), stdout=log or subprocess.DEVNULL,
                             stderr=subprocess.STDOUT if log else subprocess.DEVNULL)
        self.cluster.procs.append(p)
        return p

    def routes(self):
        return self.run("ip", "route", "show", "table", "all").stdout


class Cluster:
    """A bridge namespace and pods attached to it."""

    def __init__(self):
        self.prefix = "skt" + uuid.uuid4().hex[:6]
        self.bridge_ns = f"{self.prefix}-br"
        self.pods = []
        self.procs = []
        self.namespaces = []
        self.etc_dirs = []
        self._ns(self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")

    def _ns(self, name):
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def add_pod(self, name, ip, service_cidrs=(), hosts=None):
        """`hosts`: {name: address} for the pod's /etc/hosts."""
        pod = Pod(self, name, ip)
        self._ns(pod.ns)
        if hosts:
            etc = os.path.join("/etc/netns", pod.ns)
            os.makedirs(etc)
            self.etc_dirs.append(etc)
            with open(os.path.join(etc, "hosts"), "w") as f:
                f.write("127.0.0.1 localhost\n")
                for host, addr in hosts.items():
                    f.write(f"{addr} {host}\n")
        veth = f"v{len(self.pods)}{self.prefix[-4:]}"
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod.ns)
        run("ip", "link", "set", veth, "netns", self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "set", veth, "master", "br0")
        run("ip", "-n", self.bridge_ns, "link", "set", veth, "up")
        run("ip", "-n", pod.ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", pod.ns, "link", "set", "eth0", "up")
        for cidr in service_cidrs:
            run("ip", "-n", pod.ns, "route", "add", cidr, "dev", "eth0")
        self.pods.append(pod)
        return pod

    def no_route_out(self):
        """True when no namespace of this cluster has a default route or a route outside
        198.18.0.0/15 (checked before any traffic is sent)."""
        for ns in self.namespaces:
            out = run("ip", "-n", ns, "route", "show").stdout
            for line in out.splitlines():
                dst = line.split()[0]
                if dst == "default" or not (dst.startswith("198.18.") or dst.startswith("198.19.")):
                    return False
        return True

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
        for etc in self.etc_dirs:
            for name in os.listdir(etc):
                os.unlink(os.path.join(etc, name))
            os.rmdir(etc)


def available():
    """Why capture tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "setpriv", "iptables-nft", "iptables-legacy"):
        if run("sh", "-c", f"command -v {tool}", check=False).returncode != 0:
            return f"{tool} is not installed (scripts/bootstrap.sh --with-test-tools installs it)"
    probe = f"sktprobe{uuid.uuid4().hex[:6]}"
    if run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "cannot create network namespaces"
    run("ip", "netns", "del", probe, check=False)
    return None

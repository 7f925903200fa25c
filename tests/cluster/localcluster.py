#!/usr/bin/env python3
"""skiff's local cluster: a real single-node Kubernetes cluster on this machine.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy (built
from the Go module proxy by tests/kube/env.sh and tests/cluster/env.sh), containerd and runc
and the CNI plugins from Debian, a pause image built here, and CoreDNS as the cluster DNS. So
pods are real containers (their images, users, capabilities, seccomp, read-only roots), pod
networking is real (CNI ptp, one veth per pod) and Services are kube-proxy's iptables rules.

Isolation. The whole node lives in a network namespace of its own ("skiff-<id>") that
holds only loopback, a link with the node's address (its peer down) and the pods' veths: there is
no route out of it, so nothing a pod or a test sends can leave the machine. Addresses come
from 198.18.0.0/15 (RFC 2544's benchmarking range, used only inside these namespaces):

    node        198.18.0.1         (kubelet, API server on :6443, kube-proxy)
    pods        198.18.1.0/24      (CNI ptp + host-local)
    services    198.19.0.0/16      (kubernetes = 198.19.0.1, kube-dns = 198.19.0.10)

The node's processes also share a private mount namespace (containerd's and the kubelet's
mounts, the pods' network namespaces, the shims' sockets die with it) and a cgroup
("/skiff-<id>", the kubelet's cgroupRoot), so `down` finds every process that belongs to
the cluster by pid, however it was left, and leaves no process, mount, namespace,
interface or cgroup behind.

    localcluster.py up DIR --images IMAGES.tar   start it (state, logs, kubeconfig in DIR)
    localcluster.py down DIR                     stop it and remove everything it made
    localcluster.py status DIR
    localcluster.py exec DIR -- CMD...           run CMD in the node's network namespace,
                                                 with KUBECONFIG set (e.g. kubectl, curl)
"""
import argparse
import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KUBE_ENV = os.path.join(ROOT, "tests", "kube", "env.sh")
CLUSTER_ENV = os.path.join(HERE, "env.sh")

NODE_NAME = "skiff-node"
NODE_IP = "198.18.0.1"
POD_SUBNET = "198.18.1.0/24"
CLUSTER_CIDR = "198.18.0.0/15"  # what the pods route to the node: nodes, pods, services
SERVICE_CIDR = "198.19.0.0/16"
API_SERVICE_IP = "198.19.0.1"
DNS_SERVICE_IP = "198.19.0.10"
APISERVER_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = "/sys/fs/cgroup"
CLONE_NEWNET = 0x40000000


def log(msg):
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


class Error(Exception):
    pass


class Fatal(Error):
    """An error that waiting longer cannot fix (a component exited)."""


def run(*args, check=True, timeout=120, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                       **kw)
    if check and p.returncode != 0:
        raise Error(f"{' '.join(str(a) for a in args)}: exit {p.returncode}: "
                    f"{(p.stderr or p.stdout).strip()[-2000:]}")
    return p


def bin_dir():
    return run(KUBE_ENV, "bin-dir").stdout.strip()


def wait_for(what, fn, timeout, interval=0.2):
    """Polls fn() until it returns a true value; raises Error naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Fatal:
            raise
        except Exception as e:  # noqa: BLE001 - reported if the deadline passes
            last = e
        if time.monotonic() > deadline:
            raise Error(f"timed out after {timeout:.0f} s waiting for {what}"
                        + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# Namespaces and cgroups


def setns(path):
    """Moves the calling thread into the network namespace at path (threads and processes
    it starts afterwards are born there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def cgroup_hierarchies():
    """The mounted cgroup hierarchies (v1 controllers and the unified one)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            fstype, mnt = parts[sep + 1], parts[4]
            if fstype in ("cgroup", "cgroup2") and mnt.startswith(CGROUP_ROOT + "/"):
                out.append(mnt)
    return sorted(set(out))


def cgroup_pids(name):
    """Every pid in cgroup `name` and below it, in any hierarchy."""
    pids = set()
    for h in cgroup_hierarchies():
        top = os.path.join(h, name)
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
                except OSError:
                    pass
    return pids


def make_cgroup(name):
    """Creates cgroup `name` (a path) in every hierarchy; cpuset's need CPUs and memory
    nodes before a process can join, taken from the parent as the kubelet does."""
    for h in cgroup_hierarchies():
        parent = h
        for part in name.split("/"):
            path = os.path.join(parent, part)
            os.makedirs(path, exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if os.path.exists(os.path.join(path, knob)):
                    with open(os.path.join(path, knob)) as f:
                        has = f.read().strip()
                    if not has:
                        with open(os.path.join(parent, knob)) as f:
                            value = f.read().strip()
                        with open(os.path.join(path, knob), "w") as f:
                            f.write(value)
            parent = path


def remove_cgroup(name):
    left = []
    for h in cgroup_hierarchies():
        top = os.path.join(h, name)
        if not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top, topdown=False), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                left.append(dirpath)
    return left


def freeze(name, state):
    path = os.path.join(CGROUP_ROOT, "freezer", name, "freezer.state")
    if os.path.exists(path):
        try:
            with open(path, "w") as f:
                f.write(state)
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Certificates and configuration


def openssl(*args, cwd):
    run("openssl", *args, cwd=cwd)


def make_pki(pki):
    """A CA and the certificates of every component (EC P-256), as kubeadm would lay them
    out: the API server's, an admin in system:masters, the controller manager, scheduler,
    kube-proxy and the node (system:node:skiff-node) as the bootstrap RBAC roles expect,
    the kubelet's serving certificate, the API server's kubelet client, and the
    service-account signing key."""
    os.makedirs(pki, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/CN=skiff-local-cluster-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=pki)

    def cert(name, subj, usage, san=None):
        ext = os.path.join(pki, f"{name}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    f"extendedKeyUsage={usage}\n")
            if san:
                f.write(f"subjectAltName={san}\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj,
                cwd=pki)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "3650", "-extfile", ext,
                cwd=pki)
        os.remove(os.path.join(pki, f"{name}.csr"))
        os.remove(ext)

    svc = "kubernetes.default.svc"
    cert("apiserver", "/CN=kube-apiserver", "serverAuth",
         f"IP:{NODE_IP},IP:{API_SERVICE_IP},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
         f"DNS:kubernetes.default,DNS:{svc},DNS:{svc}.{CLUSTER_DOMAIN}")
    cert("admin", "/O=system:masters/CN=skiff-admin", "clientAuth")
    cert("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    cert("scheduler", "/CN=system:kube-scheduler", "clientAuth")
    cert("kube-proxy", "/CN=system:kube-proxy", "clientAuth")
    cert("kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth")
    cert("kubelet-serving", f"/CN={NODE_NAME}", "serverAuth", f"IP:{NODE_IP},DNS:{NODE_NAME}")
    cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
         "clientAuth")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for f in os.listdir(pki):
        if f.endswith(".key"):
            os.chmod(os.path.join(pki, f), 0o600)


def kubeconfig(path, pki, user):
    def b64(name):
        with open(os.path.join(pki, name), "rb") as f:
            return base64.b64encode(f.read()).decode()

    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "skiff-local", "cluster": {
            "server": f"https://{NODE_IP}:{APISERVER_PORT}",
            "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"{user}.crt"),
            "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": "skiff-local", "context": {"cluster": "skiff-local", "user": user}}],
        "current-context": "skiff-local",
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    os.chmod(path, 0o600)


def write_configs(d, cgroup):
    """containerd, CNI, kubelet and kube-proxy configuration files."""
    for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "logs", "etcd"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    os.chmod(os.path.join(d, "etcd"), 0o700)
    ctrd = os.path.join(d, "containerd")
    # restrict_oom_score_adj: this machine grants no CAP_SYS_RESOURCE, so containerd must
    # not ask runc for negative OOM scores (the kubelet's for its sandboxes), which fails.
    with open(os.path.join(ctrd, "config.toml"), "w") as f:
        f.write(f"""version = 2
root = "{ctrd}/root"
state = "{ctrd}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{ctrd}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{ctrd}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/skiff-pause:latest"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
""")
    # ptp: one veth per pod, routed by the node (no bridge), no masquerading; the pods'
    # only route is the cluster's range via the node, so there is no default route.
    cni = {
        "cniVersion": "1.0.0", "name": "skiff",
        "plugins": [{
            "type": "ptp", "ipMasq": False, "mtu": 1500,
            "ipam": {"type": "host-local", "dataDir": f"{d}/cni/ipam",
                     "ranges": [[{"subnet": POD_SUBNET}]],
                     "routes": [{"dst": CLUSTER_CIDR}]},
        }],
    }
    with open(os.path.join(d, "cni/net.d/10-skiff.conflist"), "w") as f:
        json.dump(cni, f, indent=1)
    pki = os.path.join(d, "pki")
    with open(os.path.join(d, "kubelet", "resolv.conf"), "w") as f:
        f.write("# pods with dnsPolicy Default: the node has no DNS of its own\n")
    with open(os.path.join(d, "kubelet", "config.yaml"), "w") as f:
        json.dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{cgroup}",
            "failCgroupV1": False,  # this machine has cgroup v1 (hybrid)
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{ctrd}/containerd.sock",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": f"{pki}/ca.crt"}},
            "authorization": {"mode": "AlwaysAllow"},  # x509 clients of this CA only
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "tlsCertFile": f"{pki}/kubelet-serving.crt",
            "tlsPrivateKeyFile": f"{pki}/kubelet-serving.key",
            "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [DNS_SERVICE_IP],
            "resolvConf": f"{d}/kubelet/resolv.conf",
            "podLogsDir": f"{d}/logs/pods",
            "kubeAPIQPS": 50, "kubeAPIBurst": 100,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,  # never garbage-collect the loaded images
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
        }, f, indent=1)
    with open(os.path.join(d, "kube-proxy.yaml"), "w") as f:
        json.dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": f"{d}/kubeconfig.kube-proxy"},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "clusterCIDR": POD_SUBNET,
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            # Leave the kernel's conntrack table settings alone (they are the machine's).
            "conntrack": {"maxPerCore": 0, "min": 0},
            "iptables": {"minSyncPeriod": "0s", "syncPeriod": "30s"},
        }, f, indent=1)


# --------------------------------------------------------------------------------------
# The node supervisor: runs inside the node's network namespace, its private mount
# namespace and its cgroup, and starts every component.


class Supervisor:
    def __init__(self, d):
        self.d = d
        with open(os.path.join(d, "cluster.json")) as f:
            self.state = json.load(f)
        self.bins = self.state["bin_dir"]
        self.procs = {}  # name -> Popen
        self.stopping = False

    def status(self, phase, error=None):
        st = {"phase": phase, "pid": os.getpid(),
              "procs": {n: p.pid for n, p in self.procs.items()}}
        if error:
            st["error"] = error
        tmp = os.path.join(self.d, "supervisor.json.tmp")
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, os.path.join(self.d, "supervisor.json"))

    def start(self, name, argv):
        logf = open(os.path.join(self.d, "logs", f"{name}.log"), "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=logf,
                             stderr=subprocess.STDOUT)
        logf.close()
        self.procs[name] = p
        self.status("starting")
        return p

    def alive(self, name):
        p = self.procs[name]
        if p.poll() is not None:
            tail = ""
            try:
                with open(os.path.join(self.d, "logs", f"{name}.log"), errors="replace") as f:
                    tail = "".join(f.readlines()[-15:])
            except OSError:
                pass
            raise Fatal(f"{name} exited with {p.returncode}:\n{tail}")
        return True

    def private_mounts(self):
        """tmpfs over the fixed paths containerd's shims and libcni write to, so that they
        are this node's alone and go away with it."""
        run("mount", "--make-rprivate", "/")
        for path in ("/run/containerd", "/var/lib/cni"):
            os.makedirs(path, exist_ok=True)
            run("mount", "-t", "tmpfs", "-o", "mode=0711,size=64m", "skiff-node", path)

    def network(self):
        run("ip", "link", "set", "lo", "up")
        # The node's address, on a veth whose peer stays down: a link that goes nowhere
        # (this kernel has no dummy interfaces).
        run("ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0-peer")
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", "node0")
        run("ip", "link", "set", "node0", "up")
        # Locally sent packets to a ClusterIP need a route before kube-proxy's DNAT
        # (OUTPUT) rewrites them; one that no rule rewrites ends at node0, and is dropped.
        run("ip", "route", "add", SERVICE_CIDR, "dev", "node0")
        for key in ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet"):
            with open(f"/proc/sys/{key}", "w") as f:
                f.write("1")

    def run_all(self):
        d, b, pki = self.d, self.bins, os.path.join(self.d, "pki")
        self.private_mounts()
        self.network()
        self.start("etcd", [
            f"{b}/etcd", "--name", "skiff-node", "--data-dir", f"{d}/etcd",
            "--listen-client-urls", "http://127.0.0.1:2379",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "skiff-node=http://127.0.0.1:2380",
            "--listen-metrics-urls", "", "--unsafe-no-fsync", "--log-level", "warn"])
        self.start("kube-apiserver", [
            f"{b}/kube-apiserver", "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", "0.0.0.0", "--secure-port", APISERVER_PORT,
            "--advertise-address", NODE_IP, "--cert-dir", pki,
            "--tls-cert-file", f"{pki}/apiserver.crt",
            "--tls-private-key-file", f"{pki}/apiserver.key",
            "--client-ca-file", f"{pki}/ca.crt",
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--service-account-issuer", f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "--service-account-key-file", f"{pki}/sa.pub",
            "--service-account-signing-key-file", f"{pki}/sa.key",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--kubelet-client-certificate", f"{pki}/apiserver-kubelet-client.crt",
            "--kubelet-client-key", f"{pki}/apiserver-kubelet-client.key",
            "--kubelet-certificate-authority", f"{pki}/ca.crt",
            "--kubelet-preferred-address-types", "InternalIP",
            "--allow-privileged=true", "--profiling=false", "--v=1"])
        admin = f"{d}/kubeconfig"
        wait_for("the API server's /readyz", lambda: self.alive("etcd") and self.alive(
            "kube-apiserver") and run("kubectl", "--kubeconfig", admin, "--request-timeout=3s",
                                      "get", "--raw", "/readyz", check=False).stdout == "ok",
                 timeout=120, interval=0.25)
        self.status("apiserver")
        kcm = f"{d}/kubeconfig.controller-manager"
        self.start("kube-controller-manager", [
            f"{b}/kube-controller-manager", "--kubeconfig", kcm,
            "--authentication-kubeconfig", kcm, "--authorization-kubeconfig", kcm,
            "--bind-address", "127.0.0.1", "--secure-port", "10257",
            "--service-account-private-key-file", f"{pki}/sa.key",
            "--root-ca-file", f"{pki}/ca.crt",
            "--cluster-signing-cert-file", f"{pki}/ca.crt",
            "--cluster-signing-key-file", f"{pki}/ca.key",
            "--use-service-account-credentials=true", "--leader-elect=false", "--v=1"])
        sch = f"{d}/kubeconfig.scheduler"
        self.start("kube-scheduler", [
            f"{b}/kube-scheduler", "--kubeconfig", sch,
            "--authentication-kubeconfig", sch, "--authorization-kubeconfig", sch,
            "--bind-address", "127.0.0.1", "--secure-port", "10259",
            "--leader-elect=false", "--v=1"])
        ctrd = f"{d}/containerd"
        self.start("containerd", ["containerd", "--config", f"{ctrd}/config.toml"])
        ctr = ["ctr", "--address", f"{ctrd}/containerd.sock", "--namespace", "k8s.io"]
        wait_for("containerd", lambda: self.alive("containerd") and run(
            *ctr, "version", check=False).returncode == 0, timeout=60)
        t0 = time.monotonic()
        run(*ctr, "images", "import", "--no-unpack=false", self.state["images"], timeout=600)
        log(f"images imported into containerd in {time.monotonic() - t0:.0f} s")
        self.status("images")
        self.start("kubelet", [
            f"{b}/kubelet", "--config", f"{d}/kubelet/config.yaml",
            "--kubeconfig", f"{d}/kubeconfig.kubelet", "--root-dir", f"{d}/kubelet/root",
            "--cert-dir", f"{d}/kubelet/pki", "--hostname-override", NODE_NAME,
            "--node-ip", NODE_IP, "--v=1"])
        self.start("kube-proxy", [f"{b}/kube-proxy", "--config", f"{d}/kube-proxy.yaml", "--v=1"])
        self.status("running")

    def reap_orphans(self):
        """Waits for the orphans this subreaper adopted (containerd's shims), never for the
        components, whose exit Popen reports."""
        mine = {p.pid for p in self.procs.values()}
        me = str(os.getpid())
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in mine:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] == "Z":
                try:
                    os.waitpid(int(entry), os.WNOHANG)
                except ChildProcessError:
                    pass

    def stop_all(self):
        # Reverse order; each gets TERM, then KILL after its grace.
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=15)
        # Then the pods' containers and their shims, which outlive containerd by design.
        # Not frozen first: this supervisor is in the cgroup too (`down`, from outside it,
        # freezes whatever is left).
        cg = self.state["cgroup"]
        for _ in range(50):
            pids = cgroup_pids(cg) - {os.getpid()}
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
            self.reap_orphans()
        self.reap_orphans()
        self.status("stopped")

    def main(self):
        def on_term(_sig, _frm):
            self.stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        # Orphans (containerd's shims daemonize) become this process's children, not
        # init's, and are reaped here.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        try:
            self.run_all()
            reported = set()
            while not self.stopping:
                for name, p in self.procs.items():
                    if p.poll() is not None and name not in reported and not self.stopping:
                        reported.add(name)
                        log(f"{name} exited with {p.returncode}")
                        self.status("degraded", f"{name} exited with {p.returncode}")
                self.reap_orphans()
                time.sleep(0.5)
        except Exception as e:  # noqa: BLE001 - reported to `up` through supervisor.json
            log(f"node failed: {e}")
            self.status("failed", str(e))
            # Wait to be stopped by `down`: keeps the logs and pids for it.
            while not self.stopping:
                time.sleep(0.5)
        finally:
            self.stop_all()


# --------------------------------------------------------------------------------------
# The commands


class Cluster:
    def __init__(self, d):
        self.d = os.path.abspath(d)
        self.state_file = os.path.join(self.d, "cluster.json")
        self.state = None
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                self.state = json.load(f)

    @property
    def netns(self):
        return self.state["netns"]

    @property
    def netns_path(self):
        return f"/run/netns/{self.netns}"

    @property
    def kubeconfig(self):
        return os.path.join(self.d, "kubeconfig")

    def exec_argv(self, *argv):
        return ["nsenter", f"--net={self.netns_path}", "--", "env",
                f"KUBECONFIG={self.kubeconfig}"] + [str(a) for a in argv]

    def kubectl(self, *args, check=True, timeout=120, input=None):
        return run(*self.exec_argv("kubectl", *args), check=check, timeout=timeout, input=input)

    def supervisor(self):
        try:
            with open(os.path.join(self.d, "supervisor.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    # -- up
    def up(self, images, timeout):
        if self.state and os.path.exists(f"/run/netns/{self.state['netns']}"):
            raise Error(f"a cluster already runs in {self.d} (localcluster.py down {self.d})")
        if not os.path.isfile(images):
            raise Error(f"no image archive {images} (tests/cluster/images.sh build {images})")
        os.makedirs(self.d, exist_ok=True)
        os.chmod(self.d, 0o755)
        cid = secrets.token_hex(3)
        self.state = {"id": cid, "netns": f"skiff-{cid}", "cgroup": f"skiff-{cid}",
                      "bin_dir": bin_dir(), "images": os.path.abspath(images),
                      "made_dirs": []}
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                  "kubelet", "kube-proxy"):
            if not os.access(os.path.join(self.state["bin_dir"], b), os.X_OK):
                raise Error(f"no {b} in {self.state['bin_dir']} (tests/cluster/env.sh build)")
        # Fixed host paths the node's private mounts cover: create them if missing and
        # remember it, so that `down` removes them again.
        for path in ("/run/containerd", "/var/lib/cni"):
            if not os.path.isdir(path):
                os.makedirs(path)
                self.state["made_dirs"].append(path)
        self.save()
        t0 = time.monotonic()
        try:
            make_pki(os.path.join(self.d, "pki"))
            pki = os.path.join(self.d, "pki")
            kubeconfig(self.kubeconfig, pki, "admin")
            for user in ("controller-manager", "scheduler", "kube-proxy"):
                kubeconfig(os.path.join(self.d, f"kubeconfig.{user}"), pki, user)
            kubeconfig(os.path.join(self.d, "kubeconfig.kubelet"), pki, "kubelet-client")
            write_configs(self.d, self.state["cgroup"])
            run("ip", "netns", "add", self.netns)
            self.state["netns_made"] = True
            self.save()
            make_cgroup(os.path.join(self.state["cgroup"], "node"))
            self.start_supervisor()
            wait_for("the node's components", self.node_started, timeout=timeout, interval=0.5)
            wait_for(f"node {NODE_NAME} Ready", self.node_ready, timeout=timeout, interval=0.5)
            self.check_isolation()
            self.kubectl("apply", "-f", os.path.join(HERE, "addons", "coredns.yaml"))
            self.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns",
                         f"--timeout={int(timeout)}s", timeout=timeout + 30)
            wait_for("the default ServiceAccount", lambda: self.kubectl(
                "-n", "default", "get", "serviceaccount", "default", check=False).returncode == 0,
                timeout=60)
        except BaseException:
            log(f"up failed; logs in {self.d}/logs")
            self.dump_logs()
            self.down()
            raise
        log(f"cluster up in {time.monotonic() - t0:.0f} s: node {NODE_NAME} ({NODE_IP}) in "
            f"network namespace {self.netns}; KUBECONFIG={self.kubeconfig} (reachable inside "
            f"it: localcluster.py exec {self.d} -- kubectl get pods -A)")

    def save(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.state_file)

    def start_supervisor(self):
        cg = self.state["cgroup"]
        hierarchies = cgroup_hierarchies()

        def join_cgroup():
            os.setsid()
            for h in hierarchies:
                with open(os.path.join(h, cg, "node", "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        logf = open(os.path.join(self.d, "logs", "supervisor.log"), "ab")
        p = subprocess.Popen(
            ["nsenter", f"--net={self.netns_path}", "--", "unshare", "--mount",
             "--propagation", "private", "--", sys.executable, os.path.abspath(__file__),
             "supervise", self.d],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            preexec_fn=join_cgroup)
        logf.close()
        self.state["supervisor_pid"] = p.pid
        self.save()

    def node_started(self):
        st = self.supervisor()
        if st.get("phase") == "failed":
            raise Fatal(f"the node failed: {st.get('error')}")
        pid = self.state.get("supervisor_pid")
        if pid and not pid_alive(pid):
            raise Fatal("the node supervisor exited (logs/supervisor.log)")
        return st.get("phase") == "running"

    def node_ready(self):
        self.node_started()
        out = self.kubectl("get", "node", NODE_NAME, "-o",
                           "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                           check=False).stdout
        return out.strip() == "True"

    def check_isolation(self):
        """The node's namespace has no route out of the machine: only loopback, the node's
        own link (node0, whose peer is down) and the pods' veths, and no default route."""
        links = run(*self.exec_argv("ip", "-o", "link", "show")).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name not in ("lo", "node0", "node0-peer") and not name.startswith("veth"):
                raise Error(f"unexpected interface {name} in {self.netns}")
        routes = run(*self.exec_argv("ip", "route", "show", "table", "all")).stdout
        if any(r.startswith("default") for r in routes.splitlines()):
            raise Error(f"{self.netns} has a default route:\n{routes}")
        probe = run(*self.exec_argv("ip", "route", "get", "192.0.2.1"), check=False)
        if probe.returncode == 0:
            raise Error(f"{self.netns} routes 192.0.2.1: {probe.stdout}")

    def dump_logs(self, lines=25):
        logs = os.path.join(self.d, "logs")
        if not os.path.isdir(logs):
            return
        for name in sorted(os.listdir(logs)):
            path = os.path.join(logs, name)
            if os.path.isfile(path):
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-lines:]
                print(f"---- {name} (last {len(tail)} lines)", file=sys.stderr)
                sys.stderr.write("".join(tail))

    # -- down
    def down(self):
        if not self.state:
            log(f"no cluster in {self.d}")
            return []
        cg = self.state["cgroup"]
        pid = self.state.get("supervisor_pid")
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        # Whatever is left (containers, shims, a stuck component): frozen, so that nothing
        # forks while it is killed, then killed by pid.
        for _ in range(50):
            pids = cgroup_pids(cg)
            if not pids:
                break
            freeze(cg, "FROZEN")
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            freeze(cg, "THAWED")
            time.sleep(0.1)
        problems = []
        left = cgroup_pids(cg)
        if left:
            problems.append(f"processes left in cgroup {cg}: {sorted(left)}")
        wait_for("the supervisor to exit", lambda: not pid or not pid_alive(pid), timeout=10)
        if self.state.get("netns_made") and os.path.exists(self.netns_path):
            r = run("ip", "netns", "del", self.netns, check=False)
            if r.returncode != 0:
                problems.append(f"ip netns del {self.netns}: {r.stderr.strip()}")
        problems += [f"cgroup left: {p}" for p in remove_cgroup(cg)]
        for path in self.state.get("made_dirs", []):
            try:
                os.rmdir(path)
            except OSError:
                pass
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if self.d in line]
        if mounts:
            problems.append(f"mounts left under {self.d}: {mounts}")
        self.state["down"] = True
        self.save()
        if problems:
            log("down: " + "; ".join(problems))
        else:
            log(f"down: no process, mount, namespace, interface or cgroup of {self.netns} left")
        return problems

    def status(self):
        if not self.state:
            return f"no cluster in {self.d}"
        st = self.supervisor()
        up = os.path.exists(self.netns_path) and not self.state.get("down")
        return (f"{self.d}: {'up' if up else 'down'}, network namespace {self.netns}, "
                f"node phase {st.get('phase', '-')}"
                + (f" ({st['error']})" if st.get("error") else ""))


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up")
    p.add_argument("dir")
    p.add_argument("--images", required=True)
    p.add_argument("--timeout", type=float, default=300)
    for name in ("down", "status", "supervise"):
        sub.add_parser(name).add_argument("dir")
    p = sub.add_parser("exec")
    p.add_argument("dir")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    try:
        if a.cmd == "supervise":
            Supervisor(a.dir).main()
        elif a.cmd == "up":
            Cluster(a.dir).up(a.images, a.timeout)
        elif a.cmd == "down":
            return 1 if Cluster(a.dir).down() else 0
        elif a.cmd == "status":
            print(Cluster(a.dir).status())
        elif a.cmd == "exec":
            c = Cluster(a.dir)
            if not c.state:
                raise Error(f"no cluster in {a.dir}")
            argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
            os.execvp("nsenter", c.exec_argv(*argv))
    except Error as e:
        log(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

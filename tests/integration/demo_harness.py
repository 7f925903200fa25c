"""Runs ./scripts/demo.sh as a user would, for the tests: on free ports of 127.0.0.1 (each
port variable the demo reads), in a directory of its own, with the binaries of the build
under test (--no-build). Reads the demo's terminal output as it comes; stops it with SIGTERM
(its trap stops what it started) and, if that does not finish it, kills its process group,
which only the demo and its children are in (it is started in a new session)."""
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PORT_VARS = ["GATEWAY_PORT", "HTTPS_GATEWAY_PORT", "APIGATEWAY_PORT", "CATALOG_V1_PORT", "CATALOG_V2_PORT",
             "STOCK_PORT",
             "SIDECAR_PORT", "XDS_PORT", "METRICS_PORT", "ADMIN_PORT", "STATS_PORT", "READY_PORT",
             "SIDECAR_ADMIN_PORT", "SIDECAR_STATS_PORT", "SIDECAR_READY_PORT", "PROMETHEUS_PORT",
             "ZIPKIN_PORT"]

SERVICE = "apigateway.coolstore.svc.cluster.local"


def free_ports(n):
    """n distinct free ports on 127.0.0.1, below the kernel's ephemeral range: the demo binds
    them seconds later, and an outgoing connection must not take one meanwhile."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(max(20000, low - 12000), low))
    random.shuffle(candidates)
    socks = []
    try:
        for port in candidates:
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise RuntimeError(f"fewer than {n} free ports below {low}")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http(url, timeout=10, data=None, method=None):
    """(status, body bytes); status 0 when nothing answers."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


class Demo:
    def __init__(self, bin_dir, *flags):
        self.dir = tempfile.mkdtemp(prefix="skiff-demo-test-")
        self.ports = dict(zip(PORT_VARS, free_ports(len(PORT_VARS))))
        env = dict(os.environ, SKIFF_DEMO_DIR=self.dir, SKIFF_BIN_DIR=os.path.abspath(bin_dir),
                   **{k: str(v) for k, v in self.ports.items()})
        self.config = os.path.join(self.dir, "config")
        self.logs = os.path.join(self.dir, "logs")
        self.lines = []
        self.lock = threading.Condition()
        self.proc = subprocess.Popen([os.path.join(ROOT, "scripts", "demo.sh"), "--no-build", *flags],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.on_line = None  # called with each line as it is read (from the reader thread)

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if self.on_line is not None:
                self.on_line(line)
            with self.lock:
                self.lines.append(line)
                self.lock.notify_all()
        with self.lock:
            self.lines.append(None)  # end of output
            self.lock.notify_all()

    def output(self):
        with self.lock:
            return "\n".join(ln for ln in self.lines if ln is not None)

    def wait_line(self, pred, timeout):
        """The first line (from the start) for which pred(line) holds, or None at the deadline
        or when the demo's output ended."""
        deadline = time.time() + timeout
        seen = 0
        with self.lock:
            while True:
                while seen < len(self.lines):
                    ln = self.lines[seen]
                    seen += 1
                    if ln is None:
                        return None
                    if pred(ln):
                        return ln
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.lock.wait(left)

    def url(self, var, path=""):
        return f"http://127.0.0.1:{self.ports[var]}{path}"

    def pids(self):
        """The demo and every process under it (from /proc), while they run."""
        children = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def listening(self):
        """{(address, port): pid} of the TCP sockets the demo's processes listen on."""
        inodes = {}
        for pid in self.pids():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    if target.startswith("socket:["):
                        inodes[target[8:-1]] = pid
            except OSError:
                continue
        out = {}
        for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
            try:
                rows = open(table).read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                cols = row.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                    continue
                addr, port = cols[1].split(":")
                out[(decode_address(addr, v6), int(port, 16))] = inodes[cols[9]]
        return out

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of its group
        except OSError:
            pass
        self.proc.wait()
        self.reader.join(timeout=5)

    def log(self, name, tail=3000):
        try:
            with open(os.path.join(self.logs, name)) as f:
                return f.read()[-tail:]
        except OSError:
            return f"(no {name})"


def decode_address(hexaddr, v6):
    """/proc/net/tcp's hex address as text: 127.0.0.1, 0.0.0.0, ::, ::ffff:127.0.0.1."""
    raw = bytes.fromhex(hexaddr)
    # Each 32-bit word is in host (little-endian) order.
    words = [raw[i:i + 4][::-1] for i in range(0, len(raw), 4)]
    data = b"".join(words)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, data)
    return socket.inet_ntop(socket.AF_INET6, data)
